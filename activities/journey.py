"""Activities of the journey workflow: every side effect a journey step has.

Contract:
- `send` delivers one message for one step visit at most once: the delivery ledger row,
  unique on the workflow's idempotency key, is checked before anything is rendered and
  written in the same transaction as the outbox message; a retried activity returns the
  recorded outcome. The channel is the first in the step's list the customer can be
  reached on (see `activities.channels`).
- `evaluate`, `update_profile` and `call_webhook` read the customer's profile and history
  themselves, so the workflow passes only ids and event data.
- `next_local_time` turns a clock time into the next UTC instant in the customer's zone.
- Permanent failures raise non-retryable `ApplicationError`s; transient ones raise and
  are retried by Temporal with backoff.

Activities are synchronous (SQLAlchemy and the provider SDKs block) and run in the
worker's thread pool.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.channels import Candidate, Channels, Decision
from activities.providers import OutgoingMessage, PermanentFailure, TransientFailure
from journeyman.clock import next_local_time, zone
from journeyman.dsl.durations import parse_clock
from journeyman.dsl.evaluate import ExpressionError, evaluate
from journeyman.profiles import expression_names, find_customer
from journeyman.rendering import Renderer, RenderError
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery, JourneyRun, JourneyVersion
from journeyman.types import (
    EvaluateInput,
    EvaluateResult,
    FinishRunInput,
    LocalTimeInput,
    SendInput,
    SendOutcome,
    StepOutcome,
    UpdateProfileInput,
    WebhookInput,
)

log = logging.getLogger(__name__)

FINAL_STATUSES = ("sent", "skipped", "failed")
PROFILE_COLUMNS = ("email", "phone", "timezone", "locale")


class JourneyActivities:
    def __init__(
        self,
        db: Database,
        channels: Channels,
        http: httpx.Client | None = None,
        default_timezone: str = "UTC",
    ) -> None:
        self.db = db
        self.channels = channels
        self.http = http or httpx.Client(timeout=10.0)
        self.default_timezone = default_timezone
        self._renderers: dict[tuple[str, str], Renderer] = {}

    # -- reading --------------------------------------------------------------------

    @activity.defn(name="journey.evaluate")
    def evaluate(self, inp: EvaluateInput) -> EvaluateResult:
        with self.db.session() as session:
            names = expression_names(session, inp.customer_id, inp.context)
            values: list[Any] = []
            errors: list[str | None] = []
            for tree in inp.trees:
                try:
                    values.append(evaluate(tree, names))
                    errors.append(None)
                except ExpressionError as exc:
                    values.append(None)
                    errors.append(str(exc))
            return EvaluateResult(values=[_plain(v) for v in values], errors=errors)

    @activity.defn(name="journey.next_local_time")
    def next_local_time(self, inp: LocalTimeInput) -> datetime:
        with self.db.session() as session:
            customer = find_customer(session, inp.customer_id)
            tz_name = customer.timezone if customer else None
        hour, minute = parse_clock(inp.clock)
        return next_local_time(inp.now, zone(tz_name, self.default_timezone), hour, minute)

    # -- writing --------------------------------------------------------------------

    @activity.defn(name="journey.finish_run")
    def finish_run(self, inp: FinishRunInput) -> None:
        with self.db.session() as session:
            run = session.get(JourneyRun, inp.run_id)
            if run is None:
                log.warning("finish_run: no run %s (%s)", inp.run_id, inp.workflow_id)
                return
            run.status = "completed"
            run.outcome = inp.outcome
            run.ended_at = inp.ended_at
            run.current_step = None

    @activity.defn(name="journey.update_profile")
    def update_profile(self, inp: UpdateProfileInput) -> StepOutcome:
        with self.db.session() as session:
            names = expression_names(session, inp.customer_id, inp.context)
            values = {}
            for trait, tree in inp.values.items():
                try:
                    values[trait] = _plain(evaluate(tree, names))
                except ExpressionError as exc:
                    raise ApplicationError(
                        f"update_profile {trait}: {exc}", type="ExpressionError", non_retryable=True
                    ) from None
            customer = find_customer(session, inp.customer_id)
            if customer is None:
                customer = Customer(id=inp.customer_id, traits={}, push_tokens=[])
                session.add(customer)
            traits = dict(customer.traits or {})
            for trait, value in values.items():
                if trait in PROFILE_COLUMNS:
                    setattr(customer, trait, value)
                else:
                    traits[trait] = value
            customer.traits = traits
            return StepOutcome(ok=True, detail=", ".join(values))

    @activity.defn(name="journey.call_webhook")
    def call_webhook(self, inp: WebhookInput) -> StepOutcome:
        with self.db.session() as session:
            names = expression_names(session, inp.customer_id, inp.context)
        try:
            url = str(evaluate(inp.url, names))
            headers = {k: str(evaluate(v, names)) for k, v in inp.headers.items()}
            body = evaluate(inp.body, names) if inp.body is not None else None
        except ExpressionError as exc:
            raise ApplicationError(
                f"webhook: {exc}", type="ExpressionError", non_retryable=True
            ) from None
        headers.setdefault("Idempotency-Key", inp.idempotency_key)
        try:
            response = self.http.request(
                inp.method, url, headers=headers, json=_plain(body) if body is not None else None
            )
        except httpx.HTTPError as exc:
            raise ApplicationError(f"webhook {url}: {exc}", type="WebhookUnavailable") from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise ApplicationError(
                f"webhook {url} answered {response.status_code}",
                type="WebhookUnavailable",
                next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
            )
        if response.status_code >= 400:
            raise ApplicationError(
                f"webhook {url} answered {response.status_code}: {response.text[:200]}",
                type="WebhookRejected",
                non_retryable=True,
            )
        return StepOutcome(ok=True, detail=f"{inp.method} {url} -> {response.status_code}")

    @activity.defn(name="journey.send")
    def send(self, inp: SendInput) -> SendOutcome:
        with self.db.session() as session:
            done = _recorded(session, inp.idempotency_key)
            if done is not None:
                return done
        with self.db.session() as session:
            customer = find_customer(session, inp.customer_id)
            # The workflow's clock, not this machine's: decisions (quiet hours, caps) must
            # agree with the durable timers the workflow sets, also in simulations.
            now = inp.context.now
            if customer is None:
                return self._record(session, inp, status="skipped", reason="unknown customer")
            decision = self.channels.choose(session, customer, inp, now)
            if decision.defer_until is not None:
                return SendOutcome(
                    status="deferred", reason=decision.reason, until=decision.defer_until
                )
            if not decision.candidates:
                return self._record(session, inp, status="skipped", reason=decision.reason)
            names = expression_names(session, inp.customer_id, inp.context)
            names["profile"] = customer.as_profile()
        return self._deliver(inp, decision, names, customer.locale)

    def _deliver(
        self, inp: SendInput, decision: Decision, names: dict[str, Any], locale: str | None
    ) -> SendOutcome:
        """Try the suitable channels in order; a permanent rejection moves to the next."""
        renderer = self._renderer(inp.journey_id, inp.version)
        tried: list[dict[str, Any]] = []
        for candidate in decision.candidates:
            extra = self.channels.template_names(candidate, inp)
            try:
                message = renderer.render(
                    inp.template, candidate.channel, {**names, **extra}, locale
                )
            except RenderError as exc:
                tried.append({"channel": candidate.channel, "error": str(exc)})
                continue
            try:
                outcome = self._deliver_one(inp, candidate, message, extra, tried)
            except PermanentFailure as exc:
                tried.append({"channel": candidate.channel, "error": str(exc)})
                self.channels.on_permanent_failure(candidate, str(exc))
                continue
            except TransientFailure as exc:
                raise ApplicationError(
                    f"{candidate.channel}: {exc}",
                    type="ProviderUnavailable",
                    next_retry_delay=timedelta(seconds=exc.retry_after)
                    if exc.retry_after
                    else None,
                ) from None
            return outcome
        reason = "; ".join(f"{t['channel']}: {t['error']}" for t in tried) or decision.reason
        with self.db.session() as session:
            return self._record(session, inp, status="failed", reason=reason, tried=tried)

    def _deliver_one(
        self,
        inp: SendInput,
        candidate: Candidate,
        message: Any,
        extra: dict[str, Any],
        tried: list[dict[str, Any]],
    ) -> SendOutcome:
        """Claim the ledger row, hand the message to the provider, record the outcome,
        all in one transaction: a provider failure leaves no row behind."""
        with self.db.session() as session:
            if (done := _recorded(session, inp.idempotency_key)) is not None:
                return done
            delivery = _claim(session, inp, candidate.channel, tried)
            if delivery is None:  # a concurrent attempt recorded it first
                recorded = _recorded(session, inp.idempotency_key)
                assert recorded is not None
                return recorded
            provider = self.channels.provider(candidate.channel)
            outgoing = OutgoingMessage(
                delivery_id=delivery.id,
                idempotency_key=inp.idempotency_key,
                customer_id=inp.customer_id,
                journey_id=inp.journey_id,
                channel=candidate.channel,
                to=candidate.address,
                subject=getattr(message, "subject", None) or getattr(message, "title", None),
                body=_body(message),
                html=getattr(message, "html", None),
                preheader=getattr(message, "preheader", None),
                data=dict(getattr(message, "data", None) or {}),
                headers=extra.get("headers", {}),
            )
            provider_id = provider.send(outgoing, session)
            delivery.status = "sent"
            delivery.provider = provider.name
            delivery.provider_message_id = provider_id
            delivery.sent_at = datetime.now(UTC)
            delivery.attempts = [*tried, {"channel": candidate.channel, "sent": provider_id}]
            return SendOutcome(status="sent", channel=candidate.channel, delivery_id=delivery.id)

    def _record(
        self,
        session: Session,
        inp: SendInput,
        status: str,
        reason: str | None,
        tried: list[dict[str, Any]] | None = None,
    ) -> SendOutcome:
        """Record a send that did not go out, once; return what was recorded."""
        delivery = _claim(session, inp, None, tried or [])
        if delivery is None:
            recorded = _recorded(session, inp.idempotency_key)
            assert recorded is not None
            return recorded
        delivery.status = status
        delivery.reason = reason
        return SendOutcome(status=status, reason=reason, delivery_id=delivery.id)

    def _renderer(self, journey_id: str, version: str) -> Renderer:
        key = (journey_id, version)
        if key not in self._renderers:
            with self.db.session() as session:
                row = session.get(JourneyVersion, {"journey_id": journey_id, "version": version})
            if row is None:
                raise ApplicationError(
                    f"journey {journey_id} version {version} is not registered",
                    type="UnknownVersion",
                )
            self._renderers[key] = Renderer(row.templates)
        return self._renderers[key]


def _recorded(session: Session, key: str) -> SendOutcome | None:
    delivery = session.scalar(select(Delivery).where(Delivery.idempotency_key == key))
    if delivery is None or delivery.status not in FINAL_STATUSES:
        return None
    return SendOutcome(
        status=delivery.status,
        channel=delivery.channel,
        reason=delivery.reason,
        delivery_id=delivery.id,
    )


def _claim(
    session: Session, inp: SendInput, channel: str | None, tried: list[dict[str, Any]]
) -> Delivery | None:
    """Insert the ledger row for this step visit; None when one exists already."""
    delivery = Delivery(
        idempotency_key=inp.idempotency_key,
        workflow_id=inp.workflow_id,
        journey_id=inp.journey_id,
        version=inp.version,
        step_id=inp.step_id,
        customer_id=inp.customer_id,
        template=inp.template,
        channel=channel,
        status="sending",
        attempts=tried,
    )
    try:
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        return None
    return delivery


def _body(message: Any) -> str:
    for attribute in ("text", "body"):
        value = getattr(message, attribute, None)
        if value:
            return str(value)
    return ""


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """A JSON-safe copy: datetimes as ISO text, timedeltas as seconds."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
