"""Activities of the journey workflow: every side effect a journey step has.

Contract:
- `send` delivers one message for one step visit at most once: the delivery ledger row,
  unique on the workflow's idempotency key, is checked before anything is rendered and
  written in the same transaction as the outbox message; a retried activity returns the
  recorded outcome. The channel is the first in the step's list the customer can be
  reached on (see `journeyman.messaging.channels`).
- `evaluate`, `update_profile` and `call_webhook` read the customer's profile and history
  themselves, so the workflow passes only ids and event data.
- `next_local_time` turns a clock time into the next UTC instant in the customer's zone.
- `record_steps` (a local activity) writes path entries to the step log, insert or
  ignore on (run id, seq): a retried or repeated call records each entry once. Details
  name steps, channels, templates and reasons; erasure clears them (journeyman/privacy/erasure.py).
  A run's last record carries its outcome and closes its `journey_runs` row in the same
  transaction (`finish_run` does only that, for runs from before): a row is closed once,
  so a retried close changes nothing.
- While an operator has paused the journey, `send` defers (for `PAUSE_RECHECK`) instead
  of sending: the workflow waits on a durable timer and asks again; nothing is lost.
- A provider with a rate limit takes sends at its pace (`journeyman.messaging.ratelimit`): a send
  whose slot is ahead defers to it (`paced`), and the workflow comes back on time.
- Permanent failures raise non-retryable `ApplicationError`s; transient ones raise and
  are retried by Temporal with backoff.

Activities are synchronous (SQLAlchemy and the provider SDKs block) and run in the
worker's thread pool.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import CursorResult, Table, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from temporalio import activity
from temporalio.exceptions import ApplicationError

from journeyman import names
from journeyman.contracts import (
    EvaluateInput,
    EvaluateResult,
    FinishRunInput,
    LocalTimeInput,
    RecordStepsInput,
    SendInput,
    SendOutcome,
    StepOutcome,
    UpdateProfileInput,
    WebhookInput,
)
from journeyman.customers import traits
from journeyman.customers.clock import next_local_time, zone
from journeyman.customers.profiles import expression_names, find_customer
from journeyman.dsl.durations import parse_clock
from journeyman.dsl.evaluate import ExpressionError, evaluate
from journeyman.dsl.urls import evaluate_url
from journeyman.messaging import caps, ratelimit
from journeyman.messaging.channels import Candidate, Channels, address_digest
from journeyman.messaging.guards import check_only_if
from journeyman.messaging.inbox import inbox_message
from journeyman.messaging.journey_secrets import SecretError, SecretReader, mask, read_secret
from journeyman.messaging.providers import (
    OutgoingMessage,
    PermanentFailure,
    Provider,
    TransientFailure,
    UncertainDelivery,
)
from journeyman.messaging.rendering import Renderer, RenderError
from journeyman.optimization.holdout import GlobalHoldout
from journeyman.platform import metrics
from journeyman.privacy import links
from journeyman.privacy.pseudonyms import erased, installation_key
from journeyman.storage.db import Database
from journeyman.storage.models import (
    Customer,
    Delivery,
    JourneyControl,
    JourneyRun,
    JourneyVersion,
    StepLog,
    utcnow,
)

log = logging.getLogger(__name__)

FINAL_STATUSES = ("sent", "skipped", "failed", "unknown")
# How long a send held by a paused journey waits before asking again (resuming wakes
# the runs sooner, see journeyman/operations/controls.py).
PAUSE_RECHECK = timedelta(minutes=5)
PROFILE_COLUMNS = ("email", "phone", "timezone", "locale")
ERASED = "customer erased"


class JourneyActivities:
    def __init__(
        self,
        db: Database,
        channels: Channels,
        http: httpx.Client | None = None,
        default_timezone: str = "UTC",
        secrets: SecretReader = read_secret,
        link_domains: frozenset[str] = frozenset({"localhost"}),
    ) -> None:
        self.db = db
        # Reads a webhook's secret by name: the environment, or a placeholder (simulate).
        self.secrets = secrets
        self.channels = channels
        self.http = http or httpx.Client(timeout=10.0)
        self.default_timezone = default_timezone
        # Hosts a link built from a client-sent event property may point at (links.py).
        self.link_domains = link_domains
        self._renderers: dict[tuple[str, str], Renderer] = {}
        # Called with the customer id once an update_profile step stored trait_changed
        # events (committed). The service leaves them to its dispatcher; a simulation
        # routes them here, before the run goes on.
        self.on_trait_changes: Callable[[str], None] | None = None
        # Checks erasure tombstones before a customer id is written (pseudonyms.py).
        self.erasure_key = (
            installation_key(channels.signing_key) if channels.signing_key is not None else None
        )
        # The global control group (journeyman/optimization/holdout.py); set from the settings by
        # `journeyman.wiring.journey_activities`. Off by default.
        self.global_holdout = GlobalHoldout()

    def close(self) -> None:
        """Release the providers' and the webhook client's connections."""
        for provider in {id(p): p for p in self.channels.providers.values()}.values():
            provider.close()
        self.http.close()

    # -- reading --------------------------------------------------------------------

    @activity.defn(name=names.EVALUATE_ACTIVITY)
    def evaluate(self, inp: EvaluateInput) -> EvaluateResult:
        with self.db.session() as session:
            names = expression_names(session, inp.customer_id, inp.context, self.default_timezone)
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

    @activity.defn(name=names.NEXT_LOCAL_TIME_ACTIVITY)
    def next_local_time(self, inp: LocalTimeInput) -> datetime:
        with self.db.session() as session:
            customer = find_customer(session, inp.customer_id)
            tz_name = customer.timezone if customer else None
        hour, minute = parse_clock(inp.clock)
        return next_local_time(inp.now, zone(tz_name, self.default_timezone), hour, minute)

    # -- writing --------------------------------------------------------------------

    @activity.defn(name=names.FINISH_RUN_ACTIVITY)
    def finish_run(self, inp: FinishRunInput) -> None:
        """Close the run's row (runs from before patch `lean-steps`; since, the last
        `record_steps` does it)."""
        with self.db.session() as session:
            closed = self._close_run(
                session, inp.run_id, inp.workflow_id, inp.outcome, inp.ended_at
            )
            if not closed and session.get(JourneyRun, inp.run_id) is None:
                log.warning("closing run %s (%s): no such run", inp.run_id, inp.workflow_id)

    @activity.defn(name=names.RECORD_STEPS_ACTIVITY)
    def record_steps(self, inp: RecordStepsInput) -> int:
        """Add the entries to the step log; those recorded already are left as they are.
        With an `outcome`, close the run's row in the same transaction (`_close_run`).
        Returns how many rows were new."""
        rows = [
            {
                "run_id": inp.run_id,
                "seq": inp.first_seq + index,
                "journey_id": inp.journey_id,
                "version": inp.version,
                "customer_id": inp.customer_id,
                "step_id": entry.step,
                "action": entry.action,
                "detail": {
                    "detail": entry.detail,
                    "channel": entry.channel,
                    "template": entry.template,
                },
                "at": entry.at,
            }
            for index, entry in enumerate(inp.entries)
        ]
        if not rows and inp.outcome is None:
            return 0
        with self.db.session() as session:
            if erased(session, self.erasure_key, inp.customer_id):
                return 0  # the run was ended by the erasure; its steps go with it
            added = _insert_or_ignore(session, rows) if rows else 0
            if inp.outcome is not None:
                ended_at = inp.ended_at or datetime.now(UTC)
                if (
                    not self._close_run(session, inp.run_id, inp.workflow_id, inp.outcome, ended_at)
                    and session.get(JourneyRun, inp.run_id) is None
                ):
                    _closed_before_recorded(session, inp, ended_at)
            return added

    def _close_run(
        self, session: Session, run_id: str, workflow_id: str, outcome: str, ended_at: datetime
    ) -> bool:
        """Mark the run completed with its outcome, if it is still running; True when
        this call closed it. A retry after a commit whose answer was lost finds it
        closed and changes nothing."""
        closed = session.execute(
            update(JourneyRun)
            .where(JourneyRun.run_id == run_id, JourneyRun.status == "running")
            .values(status="completed", outcome=outcome, ended_at=ended_at, current_step=None),
            execution_options={"synchronize_session": False},
        )
        assert isinstance(closed, CursorResult)
        return bool(closed.rowcount)

    @activity.defn(name=names.UPDATE_PROFILE_ACTIVITY)
    def update_profile(self, inp: UpdateProfileInput) -> StepOutcome:
        with self.db.session() as session:
            if erased(session, self.erasure_key, inp.customer_id):
                return StepOutcome(ok=False, detail=ERASED)
            names = expression_names(session, inp.customer_id, inp.context, self.default_timezone)
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
            before = traits.snapshot(customer)
            kept = dict(customer.traits or {})
            for trait, value in values.items():
                if trait in PROFILE_COLUMNS:
                    setattr(customer, trait, value)
                else:
                    kept[trait] = value
            customer.traits = kept
            # trait_changed events, stored with the change (derived ids: a retry of the
            # step stores none again); the dispatcher routes them.
            session.flush()
            changed = traits.changes(before, traits.snapshot(customer))
            added = traits.store(
                session, customer.id, inp.idempotency_key, changed, inp.context.now, utcnow()
            )
            customer_id = customer.id
        if added and self.on_trait_changes is not None:
            self.on_trait_changes(customer_id)
        return StepOutcome(ok=True, detail=", ".join(values))

    @activity.defn(name=names.CALL_WEBHOOK_ACTIVITY)
    def call_webhook(self, inp: WebhookInput) -> StepOutcome:
        """Call the webhook. Secrets (`secret('CRM_TOKEN')`) are read here and only here;
        the detail and every error are masked (`[secret CRM_TOKEN]`), since both go to
        the workflow's history and the step log."""
        with self.db.session() as session:
            if erased(session, self.erasure_key, inp.customer_id):
                return StepOutcome(ok=False, detail=ERASED)
            names = expression_names(session, inp.customer_id, inp.context, self.default_timezone)
        read: dict[str, str] = {}  # value -> name, of the secrets this call read

        def secret(name: str) -> str:
            try:
                value = self.secrets(name)
            except SecretError as exc:
                raise ExpressionError(str(exc)) from None
            read[value] = name
            return value

        names["secret"] = secret
        try:
            url = evaluate_url(inp.url, names)
            headers = {k: str(evaluate(v, names)) for k, v in inp.headers.items()}
            body = evaluate(inp.body, names) if inp.body is not None else None
        except ExpressionError as exc:
            raise ApplicationError(
                mask(f"webhook: {exc}", read), type="ExpressionError", non_retryable=True
            ) from None
        headers.setdefault("Idempotency-Key", inp.idempotency_key)
        shown = mask(url, read)
        try:
            response = self.http.request(
                inp.method, url, headers=headers, json=_plain(body) if body is not None else None
            )
        except httpx.HTTPError as exc:
            raise ApplicationError(
                mask(f"webhook {shown}: {exc}", read), type="WebhookUnavailable"
            ) from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise ApplicationError(
                f"webhook {shown} answered {response.status_code}",
                type="WebhookUnavailable",
                next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
            )
        if response.status_code >= 400:
            raise ApplicationError(
                mask(
                    f"webhook {shown} answered {response.status_code}: {response.text[:200]}",
                    read,
                ),
                type="WebhookRejected",
                non_retryable=True,
            )
        return StepOutcome(ok=True, detail=f"{inp.method} {shown} -> {response.status_code}")

    @activity.defn(name=names.SEND_ACTIVITY)
    def send(self, inp: SendInput) -> SendOutcome:
        """Decide, render and deliver one step visit's message, at most once.

        The ledger row goes `pending` (claimed; holds a frequency-cap slot, and while the
        send waits for its provider's pace, its slot in it) -> `sending` (committed just
        before an external provider call) -> `sent`. A known failure puts it back to
        `pending`; a retry that finds it `sending` cannot know whether the provider got
        the message, so it records `unknown` rather than risk sending twice. The outbox
        writes in the ledger's transaction: no `sending` state at all.
        """
        outcome = self._send(inp)
        metrics.message(inp.journey_id, outcome.channel, outcome.status)
        return outcome

    def _send(self, inp: SendInput) -> SendOutcome:
        token = uuid.uuid4().hex
        while True:
            step = self._decide(inp, token)
            if step is None:
                continue  # a channel failed in the decision (its template, the outbox)
            if isinstance(step, SendOutcome):
                return step
            candidate, outgoing, provider = step
            _heartbeat(candidate.channel)
            try:
                with metrics.provider_call(provider.name):
                    provider_id = provider.send(outgoing, None)
            except PermanentFailure as exc:
                self._rejected(inp, token, candidate, exc)
                continue  # the next suitable channel, if any
            except UncertainDelivery as exc:
                return self._settle(inp, token, "unknown", f"{candidate.channel}: {exc}")
            except TransientFailure as exc:
                self._release(inp, token)
                raise ApplicationError(
                    f"{candidate.channel}: {exc}",
                    type="ProviderUnavailable",
                    next_retry_delay=timedelta(seconds=exc.retry_after)
                    if exc.retry_after
                    else None,
                ) from None
            except Exception:
                # Our own bug before or while building the request: nothing went out.
                self._release(inp, token)
                raise
            return self._settle(inp, token, "sent", None, provider.name, provider_id)

    def _decide(
        self, inp: SendInput, token: str
    ) -> SendOutcome | tuple[Candidate, OutgoingMessage, Provider] | None:
        """Everything up to the provider call, in one transaction: the recorded outcome,
        a deferral, a skip, an outbox delivery, or the message for an external provider
        (the row then `sending`). None: a channel failed and is recorded; decide again."""
        # Before the transaction: loading a renderer reads in a session of its own.
        renderer = self._renderer(inp.journey_id, inp.version)
        with self.db.session() as session:
            delivery = _ledger_row_locked(session, inp.idempotency_key)
            if erased(session, self.erasure_key, inp.customer_id):
                # Erased while the run was under way: nothing is sent, nothing written.
                return SendOutcome(status="skipped", reason=ERASED)
            if delivery is not None and delivery.status in FINAL_STATUSES:
                return _outcome(delivery)
            if delivery is not None and delivery.status == "sending":
                delivery.status = "unknown"
                delivery.reason = (
                    f"{delivery.channel}: the worker stopped during the provider call; "
                    "not sent again, to never send twice"
                )
                return _outcome(delivery)
            # The workflow's clock, not this machine's: decisions (quiet hours, caps) must
            # agree with the durable timers the workflow sets, also in simulations.
            now = inp.context.now
            control = session.get(JourneyControl, inp.journey_id)
            if control is not None and control.paused:
                return SendOutcome(
                    status="deferred",
                    reason=f"journey paused by {control.paused_by}: {control.reason}",
                    until=now + PAUSE_RECHECK,
                )
            customer = find_customer(session, inp.customer_id)
            if customer is None:
                return self._record(session, inp, delivery, "skipped", "unknown customer")
            held = self.global_holdout.reason(customer.id, inp.topic)
            if held is not None:
                return self._record(session, inp, delivery, "skipped", held)
            tried = list(delivery.attempts) if delivery is not None else []
            failed = {(t["channel"], t.get("address")) for t in tried if "error" in t}
            decision = self.channels.suitable(session, customer, inp, exclude=failed)
            candidates = decision.candidates
            if not candidates:
                reasons = [f"{t['channel']}: {t['error']}" for t in tried if "error" in t]
                if decision.reason:
                    reasons.append(decision.reason)
                # Passed over for a rule (WhatsApp's window), not refused: a skip.
                refused = [t for t in tried if "error" in t and t.get("kind") != "passed_over"]
                status = "failed" if refused else "skipped"
                return self._record(
                    session, inp, delivery, status, "; ".join(reasons) or "no channel"
                )
            candidate = candidates[0]
            if delivery is None:
                cap = self.channels.cap_for(inp)
                if cap is not None:
                    caps.lock_customer(session, customer.id)
                    verdict = caps.check(
                        session,
                        cap,
                        customer.id,
                        inp.idempotency_key,
                        inp.priority,
                        now,
                        inp.first_attempt_at,
                    )
                    if verdict.give_up:
                        return self._record(session, inp, None, "skipped", verdict.reason)
                    if not verdict.allowed:
                        return SendOutcome(
                            status="deferred", reason=verdict.reason, until=verdict.until
                        )
                journey_cap = caps.parse_cap(inp.journey_cap)
                if journey_cap is not None:
                    caps.lock_customer(session, customer.id)
                    verdict = caps.check_journey(
                        session, journey_cap, customer.id, inp.journey_id, now, inp.first_attempt_at
                    )
                    if verdict.give_up:
                        caps.release(session, inp.idempotency_key)
                        return self._record(session, inp, None, "skipped", verdict.reason)
                    if not verdict.allowed:
                        return SendOutcome(
                            status="deferred", reason=verdict.reason, until=verdict.until
                        )
            quiet = self.channels.quiet_until(customer, candidate.channel, inp)
            if quiet is not None:
                capped = self.channels.cap_for(inp) is not None or inp.journey_cap is not None
                if delivery is None and capped:
                    # Keep the slot the cap just granted: the message is due, only later.
                    delivery = self._claim(session, inp, customer.id, now)
                return SendOutcome(status="deferred", reason=quiet.reason, until=quiet.defer_until)
            if delivery is None:
                delivery = self._claim(session, inp, customer.id, now)
                if delivery is None:  # a concurrent attempt claimed it: read its row
                    return None
            provider = self.channels.provider(candidate.channel)
            paced = self._pace(session, inp, delivery, provider)
            if paced is not None:
                return paced
            window = self.channels.whatsapp_window(
                session, candidate, renderer, inp, customer.locale
            )
            if window is not None:
                delivery.attempts = [
                    *delivery.attempts,
                    _attempt(candidate, window, "passed_over", key=self.channels.address_key),
                ]
                return None
            names = expression_names(session, inp.customer_id, inp.context, self.default_timezone)
            names["profile"] = customer.as_profile()
            if inp.only_if is not None and inp.only_if_tree is not None:
                guard = check_only_if(inp.only_if, inp.only_if_tree, names)
                if guard is not None:
                    return self._record(session, inp, delivery, guard.status, guard.reason)
            extra = self.channels.template_names(customer.id, candidate, inp)
            try:
                message = renderer.render(
                    inp.template, candidate.channel, {**names, **extra}, customer.locale
                )
            except RenderError as exc:
                delivery.attempts = [
                    *delivery.attempts,
                    _attempt(candidate, str(exc), key=self.channels.address_key),
                ]
                return None
            foreign = links.foreign_link(
                links.message_texts(message),
                links.client_strings(session, inp.context),
                self.link_domains,
            )
            if foreign is not None:
                return self._record(session, inp, delivery, "skipped", links.skip_reason(foreign))
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
                data={k: str(v) for k, v in (getattr(message, "data", None) or {}).items()},
                headers=self.channels.headers(candidate.channel, extra),
                step_id=inp.step_id,
                template=inp.template,
            )
            if candidate.channel == "inbox":
                outgoing = inbox_message(session, outgoing, inp.version, now)
            elif candidate.channel == "whatsapp":
                outgoing = self.channels.whatsapp_outgoing(session, outgoing, now)
            delivery.channel = candidate.channel
            if provider.transactional:
                try:
                    provider_id = provider.send(outgoing, session)
                except PermanentFailure as exc:
                    delivery.attempts = [
                        *delivery.attempts,
                        _attempt(candidate, str(exc), key=self.channels.address_key),
                    ]
                    return None
                return _mark_sent(delivery, candidate, provider.name, provider_id)
            if not _claim_for_provider(session, delivery, token, provider.name):
                return None  # another attempt holds it now: decide again, from its state
        return candidate, outgoing, provider

    def _pace(
        self, session: Session, inp: SendInput, delivery: Delivery, provider: Provider
    ) -> SendOutcome | None:
        """Hold the send until its slot in the provider's pace; None: it may go now.
        Slots are judged by when this attempt started (`_attempt_started`).

        The row stays `pending` while it waits, keeping its frequency-cap slot, with the
        slot it reserved (`rate_slot_at`, for `provider`). Back at most `GRACE` after the
        slot, the send goes on it; back early (woken), it waits for it again; back later,
        or for another provider (the channel changed meanwhile), it reserves anew. Never
        a wait here: the row is not held `sending` across one, see `send`.
        """
        rate = self.channels.rate_limit(provider)
        if rate is None:
            return None
        now = _attempt_started(inp)
        slot = delivery.rate_slot_at
        if slot is None or delivery.provider != provider.name or slot < now - ratelimit.GRACE:
            slot = ratelimit.reserve(session, provider.name, rate.per_second, now)
            delivery.rate_slot_at = slot
            delivery.provider = provider.name
        if slot <= now:
            return None
        return SendOutcome(
            status="deferred", reason=f"{provider.name} pace {rate}", until=slot, paced=True
        )

    def _claim(
        self, session: Session, inp: SendInput, customer_id: str, now: datetime
    ) -> Delivery | None:
        delivery = _claim(session, inp, None, [], now, customer_id)
        caps.release(session, inp.idempotency_key)
        return delivery

    def _rejected(
        self, inp: SendInput, token: str, candidate: Candidate, exc: PermanentFailure
    ) -> None:
        with self.db.session() as session:
            delivery = _mine(session, inp, token)
            if delivery is None:
                return
            delivery.status = "pending"
            delivery.attempt_token = None
            delivery.rate_slot_at = None  # the call used it: the next one takes its own
            delivery.attempts = [
                *delivery.attempts,
                _attempt(candidate, str(exc), exc.kind, key=self.channels.address_key),
            ]
            self.channels.on_permanent_failure(
                session, delivery.customer_id, candidate, exc.kind, str(exc), inp.context.now
            )

    def _release(self, inp: SendInput, token: str) -> None:
        """Nothing went out: back to pending, for the retry. Its pace slot goes too (a 429
        counts at the provider as well): the retry takes a new one."""
        with self.db.session() as session:
            delivery = _mine(session, inp, token)
            if delivery is not None:
                delivery.status = "pending"
                delivery.attempt_token = None
                delivery.rate_slot_at = None

    def _settle(
        self,
        inp: SendInput,
        token: str,
        status: str,
        reason: str | None,
        provider_name: str | None = None,
        provider_id: str | None = None,
    ) -> SendOutcome:
        with self.db.session() as session:
            delivery = session.scalar(
                select(Delivery).where(Delivery.idempotency_key == inp.idempotency_key)
            )
            if delivery is None:
                # The customer was erased during the provider call: the row now carries a
                # pseudonym, and nothing of the customer is written back.
                return SendOutcome(status=status, reason=ERASED)
            # `unknown` set meanwhile by a retry that found us in flight: we know now.
            if delivery.attempt_token == token and delivery.status in ("sending", "unknown"):
                if status == "sent":
                    assert provider_name is not None and provider_id is not None
                    candidate = Candidate(delivery.channel or "", "")
                    return _mark_sent(delivery, candidate, provider_name, provider_id)
                delivery.status = status
                delivery.reason = reason
            return _outcome(delivery)

    def _record(
        self,
        session: Session,
        inp: SendInput,
        delivery: Delivery | None,
        status: str,
        reason: str | None,
    ) -> SendOutcome:
        """Record a send that did not go out, once; return what was recorded."""
        if delivery is None:
            delivery = _claim(session, inp, None, [], inp.context.now, inp.customer_id)
            caps.release(session, inp.idempotency_key)
            if delivery is None:
                recorded = _recorded(session, inp.idempotency_key)
                assert recorded is not None
                return recorded
        delivery.status = status
        delivery.reason = reason
        return _outcome(delivery)

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


def _ledger_row_locked(session: Session, key: str) -> Delivery | None:
    """The ledger row of a send, held for the rest of the transaction: two attempts of
    one send (a retry after a heartbeat timeout while the first still runs, on another
    worker) take turns, and the second sees what the first decided. PostgreSQL: a row
    lock (`FOR UPDATE`). SQLite: the database's write lock, taken before the read (its
    driver starts a transaction only at the first write, so a plain read could be stale
    by the time the row is updated)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE deliveries SET id = id WHERE 0"))
    return session.scalar(select(Delivery).where(Delivery.idempotency_key == key).with_for_update())


def _claim_for_provider(session: Session, delivery: Delivery, token: str, provider: str) -> bool:
    """`pending` -> `sending` for this attempt, as one conditional UPDATE: it changes the
    row only while it is still `pending`, so of two attempts at most one holds the
    provider call, whatever the isolation level. False: another attempt claimed it."""
    session.flush()
    claimed = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.status == "pending")
        .values(status="sending", attempt_token=token, provider=provider)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.expire(delivery)
        return False
    delivery.status, delivery.attempt_token, delivery.provider = "sending", token, provider
    return True


def _recorded(session: Session, key: str) -> SendOutcome | None:
    delivery = session.scalar(select(Delivery).where(Delivery.idempotency_key == key))
    if delivery is None or delivery.status not in FINAL_STATUSES:
        return None
    return _outcome(delivery)


def _outcome(delivery: Delivery) -> SendOutcome:
    return SendOutcome(
        status=delivery.status,
        channel=delivery.channel,
        reason=delivery.reason,
        delivery_id=delivery.id,
    )


def _mine(session: Session, inp: SendInput, token: str) -> Delivery | None:
    """The ledger row, if this attempt still holds its provider call."""
    delivery = session.scalar(
        select(Delivery).where(Delivery.idempotency_key == inp.idempotency_key)
    )
    if delivery is None or delivery.attempt_token != token:
        return None
    return delivery


def _mark_sent(
    delivery: Delivery, candidate: Candidate, provider: str, provider_id: str
) -> SendOutcome:
    delivery.status = "sent"
    delivery.reason = None
    delivery.provider = provider
    delivery.provider_message_id = provider_id
    delivery.sent_at = datetime.now(UTC)
    delivery.attempts = [*delivery.attempts, {"channel": candidate.channel, "sent": provider_id}]
    return _outcome(delivery)


def _attempt(
    candidate: Candidate, error: str, kind: str | None = None, *, key: bytes | None
) -> dict[str, Any]:
    """A failed try, naming the address only by its digest (the ledger keeps no personal
    data); the digest keeps the retry off the same address. `key` is required: the
    channel choice excludes tried addresses by their keyed digest (`Channels.suitable`),
    so a digest made without it would send the next try to the same channel forever."""
    return {
        "channel": candidate.channel,
        "address": address_digest(candidate.address, key),
        "error": error,
        **({"kind": kind} if kind else {}),
    }


def _claim(
    session: Session,
    inp: SendInput,
    channel: str | None,
    tried: list[dict[str, Any]],
    now: datetime,
    customer_id: str,
) -> Delivery | None:
    """Insert the ledger row for this step visit; None when one exists already."""
    delivery = Delivery(
        idempotency_key=inp.idempotency_key,
        workflow_id=inp.workflow_id,
        journey_id=inp.journey_id,
        version=inp.version,
        step_id=inp.step_id,
        customer_id=customer_id,
        template=inp.template,
        channel=channel,
        status="pending",
        decided_at=now,
        attempts=tried,
    )
    try:
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        return None
    return delivery


def _closed_before_recorded(session: Session, inp: RecordStepsInput, ended_at: datetime) -> None:
    """The run ended before the router recorded its entry (it does so just after the
    start returns, and a run with nothing to wait for can end first): write the row
    closed, and the router, finding it, fills in the entry's own fields. Either order
    gives one row, closed."""
    row = JourneyRun(
        run_id=inp.run_id,
        workflow_id=inp.workflow_id,
        journey_id=inp.journey_id,
        version=inp.version,
        customer_id=inp.customer_id,
        entry_key=inp.entry_key,
        status="completed",
        outcome=inp.outcome,
        started_at=ended_at,
        ended_at=ended_at,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # recorded meanwhile: close it as it stands
        session.execute(
            update(JourneyRun)
            .where(JourneyRun.run_id == inp.run_id, JourneyRun.status == "running")
            .values(status="completed", outcome=inp.outcome, ended_at=ended_at, current_step=None),
            execution_options={"synchronize_session": False},
        )


def _insert_or_ignore(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert step log rows, skipping those whose (run id, seq) is there already (`ON
    CONFLICT DO NOTHING`, the same on SQLite and PostgreSQL): no error, so no
    savepoint, and a concurrent retry waits for this one's commit."""
    dialect = session.get_bind().dialect.name
    # One statement for any number of rows (executemany), on the table rather than the
    # ORM entity: compiled once per process, where a multi-row VALUES through the ORM's
    # bulk insert was compiled again for every record.
    statement = _step_log_insert(dialect)
    # Without the option, psycopg reports -1 for an INSERT's row count.
    result = session.execute(statement, rows, execution_options={"preserve_rowcount": True})
    assert isinstance(result, CursorResult)
    return result.rowcount


@functools.cache
def _step_log_insert(dialect: str) -> Executable:
    table = StepLog.__table__
    assert isinstance(table, Table)
    key = ["run_id", "seq"]
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=key)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=key)
    raise ApplicationError(
        f"the step log needs SQLite or PostgreSQL, not {dialect}",
        type="UnsupportedDatabase",
        non_retryable=True,
    )


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
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _attempt_started(inp: SendInput) -> datetime:
    """When this attempt of the send activity started, on the Temporal server's clock: the
    workflow's, so it agrees with the durable timers, also on the time-skipping server.
    It is later than the workflow's `now` by the time the run's task and the activity
    waited in their queues, which the provider's pace must count: the call follows it
    within moments. Outside an activity (as in tests): the workflow's `now`."""
    if activity.in_activity():
        return max(inp.context.now, activity.info().started_time)
    return inp.context.now


def _heartbeat(detail: str) -> None:
    """Tell Temporal this send is alive (outside an activity, as in tests: nothing)."""
    if activity.in_activity():
        activity.heartbeat(detail)
