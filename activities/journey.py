"""Activities of the journey workflow: every side effect a journey step has.

Contract:
- `send` delivers one message for one step visit at most once: the delivery ledger row,
  unique on the workflow's idempotency key, is checked before anything is rendered and
  written in the same transaction as the outbox message; a retried activity returns the
  recorded outcome. The channel is the first in the step's list the customer can be
  reached on (see `journeyman.messaging.channels`); the decision's rules (pause, channel,
  caps, quiet hours, pace) are journeyman/messaging/decision.py, the ledger's
  journeyman/messaging/ledger.py.
- `evaluate`, `update_profile` and `call_webhook` read the customer's profile and history
  themselves, so the workflow passes only ids and event data.
- `next_local_time` turns a clock time into the next UTC instant in the customer's zone.
- `record_steps` (a local activity) writes path entries to the step log, insert or
  ignore on (run id, seq): a retried or repeated call records each entry once. Details
  name steps, channels, templates and reasons; erasure clears them (journeyman/privacy/erasure.py).
  A run's last record carries its outcome and closes its `journey_runs` row in the same
  transaction (`finish_run` does only that, for runs from before): a row is closed once,
  so a retried close changes nothing. Since patch `perf-fold-steps`, `send` writes the
  run's unlogged entries with its own (`_with_steps`), the same way, in the transaction
  that decides the message (or, after an external provider's call, settles it), under a
  savepoint, with that transaction's one erasure check.
- While an operator has paused the journey, `send` defers (for `decision.PAUSE_RECHECK`)
  instead of sending: the workflow waits on a durable timer and asks again; nothing is lost.
- A provider with a rate limit takes sends at its pace (`journeyman.messaging.ratelimit`): a send
  whose slot is ahead defers to it (`paced`), and the workflow comes back on time.
- Permanent failures raise non-retryable `ApplicationError`s; transient ones raise and
  are retried by Temporal with backoff.

Activities are synchronous (SQLAlchemy and the provider SDKs block) and run in the
worker's thread pool.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import httpx
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import step_log
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
from journeyman.messaging import decision, ledger
from journeyman.messaging.channels import Candidate, Channels
from journeyman.messaging.guards import check_only_if
from journeyman.messaging.inbox import inbox_message
from journeyman.messaging.journey_secrets import SecretError, SecretReader, mask, read_secret
from journeyman.messaging.providers import (
    OutgoingMessage,
    PermanentFailure,
    Provider,
    TransientFailure,
    UncertainDelivery,
    retry_after_seconds,
)
from journeyman.messaging.reasons import ERASED, Held, NotSent
from journeyman.messaging.rendering import Renderer, RenderError
from journeyman.optimization.holdout import GlobalHoldout
from journeyman.platform import metrics
from journeyman.privacy import links
from journeyman.privacy.pseudonyms import erased, installation_key
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery, JourneyRun, JourneyVersion, utcnow

log = logging.getLogger(__name__)

PROFILE_COLUMNS = ("email", "phone", "timezone", "locale")
# What the send decision gives `_send`: the outcome; the message for an external
# provider's call; or None, a channel failed and is recorded: decide again.
Decided = SendOutcome | tuple[Candidate, OutgoingMessage, Provider] | None


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
        rows = step_log.rows(inp)
        if not rows and inp.outcome is None:
            return 0
        with self.db.session() as session:
            if erased(session, self.erasure_key, inp.customer_id):
                return 0  # the run was ended by the erasure; its steps go with it
            return self._write_steps(session, inp, rows)

    def _write_steps(self, session: Session, inp: RecordStepsInput, rows: list[Any]) -> int:
        """`record_steps` once the customer is known not erased: how many rows were new."""
        added = step_log.insert_or_ignore(session, rows) if rows else 0
        if inp.outcome is not None:
            ended_at = inp.ended_at or datetime.now(UTC)
            if (
                not self._close_run(session, inp.run_id, inp.workflow_id, inp.outcome, ended_at)
                and session.get(JourneyRun, inp.run_id) is None
            ):
                step_log.closed_before_recorded(session, inp, ended_at)
        return added

    def _with_steps(
        self, session: Session, inp: SendInput, outcome: SendOutcome, gone: bool | None
    ) -> SendOutcome:
        """Patch `perf-fold-steps`: the run's unlogged entries and this send's own, written
        (closing the run if it is the last step) without a `record_steps` after it, in
        the transaction that decided `outcome` (ledger row, outbox), under a savepoint:
        a log failure never fails the message, it leaves the rows to the run. `gone`:
        whether this transaction found the customer erased (None: not checked yet, then
        checked here); erased, nothing is written, as `record_steps` would write nothing.
        A retry answers the time its rows have."""
        record = inp.step_log
        if record is None or outcome.status == "deferred":
            return outcome
        if gone is None:
            gone = erased(session, self.erasure_key, inp.customer_id)
        at = _attempt_started(inp)
        if gone:
            return replace(outcome, logged_at=at)
        whole = step_log.with_entry(record, outcome.entry(at, inp.step_id, inp.template))
        seq = record.first_seq + len(record.entries)
        # The message's own writes, outside the savepoint: their failure is the send's.
        session.flush()
        try:
            with session.begin_nested():
                rows = step_log.rows(whole)
                if self._write_steps(session, whole, rows) < len(rows):
                    at = step_log.logged_at(session, record.run_id, seq) or at
        except Exception as exc:  # the message is decided: a log failure never fails it
            log.warning("send %s: step log not written, left to the run: %s", inp.step_id, exc)
            return outcome
        return replace(outcome, logged_at=at)

    def _close_run(
        self, session: Session, run_id: str, workflow_id: str, outcome: str, ended_at: datetime
    ) -> bool:
        """`step_log.close_run`: True when this call closed the run's row."""
        return step_log.close_run(session, run_id, outcome, ended_at)

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
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
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

    def _decide(self, inp: SendInput, token: str) -> Decided:
        """Everything up to the provider call, in one transaction: the recorded outcome,
        a deferral, a skip, an outbox delivery, or the message for an external provider
        (the row then `sending`). None: a channel failed and is recorded; decide again.
        The decision's rules are journeyman/messaging/decision.py."""
        # Before the transaction: loading a renderer reads in a session of its own.
        renderer = self._renderer(inp.journey_id, inp.version)
        with self.db.session() as session:
            delivery = ledger.row_locked(session, inp.idempotency_key)
            # Once per transaction, for the message and the step log rows alike.
            gone = erased(session, self.erasure_key, inp.customer_id)
            decided = self._decided(session, inp, token, renderer, delivery, gone)
            if isinstance(decided, SendOutcome):
                return self._with_steps(session, inp, decided, gone)
            return decided

    def _decided(
        self,
        session: Session,
        inp: SendInput,
        token: str,
        renderer: Renderer,
        delivery: Delivery | None,
        gone: bool,
    ) -> Decided:
        """`_decide`'s decision, in its transaction; `gone`: the customer is erased."""
        settled = self._settled(session, inp, delivery, gone)
        if settled is not None:
            return settled
        chosen = decision.choose(session, self.channels, self.global_holdout, inp, delivery)
        if isinstance(chosen, NotSent):
            return ledger.record_unsent(session, inp, delivery, chosen)
        customer, candidate = chosen
        admitted = self._admit(session, inp, delivery, customer, candidate)
        if not isinstance(admitted, Delivery):
            return admitted
        return self._compose(session, inp, token, renderer, admitted, customer, candidate)

    def _settled(
        self, session: Session, inp: SendInput, delivery: Delivery | None, gone: bool
    ) -> SendOutcome | None:
        """What a send already decided, or the pause that holds it; None: decide it."""
        if gone:
            # Erased while the run was under way: nothing is sent, nothing written.
            return SendOutcome(status="skipped", reason=ERASED)
        if delivery is not None and delivery.status in ledger.FINAL_STATUSES:
            return ledger.outcome(delivery)
        if delivery is not None and delivery.status == "sending":
            return ledger.in_flight(delivery)
        held = decision.paused(session, inp.journey_id, inp.context.now)
        return _deferred(held) if held is not None else None

    def _admit(
        self,
        session: Session,
        inp: SendInput,
        delivery: Delivery | None,
        customer: Customer,
        candidate: Candidate,
    ) -> Delivery | SendOutcome | None:
        """The caps (for a send not claimed yet), quiet hours and the provider's pace;
        the claimed ledger row when the send may go now. None: another attempt claimed
        the row meanwhile; decide again, from its state."""
        now = inp.context.now
        if delivery is None:
            verdict = decision.check_caps(session, self.channels, inp, customer.id, now)
            if isinstance(verdict, NotSent):
                return ledger.record_unsent(session, inp, None, verdict)
            if verdict is not None:
                return _deferred(verdict)
        quiet = self.channels.quiet_until(customer, candidate.channel, inp)
        if quiet is not None:
            if delivery is None and decision.capped(self.channels, inp):
                # Keep the slot the cap just granted: the message is due, only later.
                ledger.claim(session, inp, customer.id, now)
            return _deferred(quiet)
        if delivery is None:
            delivery = ledger.claim(session, inp, customer.id, now)
            if delivery is None:  # a concurrent attempt claimed it: read its row
                return None
        provider = self.channels.provider(candidate.channel)
        paced = decision.pace(session, self.channels, delivery, provider, _attempt_started(inp))
        return delivery if paced is None else _deferred(paced)

    def _compose(
        self,
        session: Session,
        inp: SendInput,
        token: str,
        renderer: Renderer,
        delivery: Delivery,
        customer: Customer,
        candidate: Candidate,
    ) -> Decided:
        """The message, checked (WhatsApp's window, `only_if`, links) and rendered: sent
        through the outbox here, or handed to the external provider's call."""
        key = self.channels.address_key
        window = self.channels.whatsapp_window(session, candidate, renderer, inp, customer.locale)
        if window is not None:
            ledger.add_failed_try(delivery, candidate, window, "passed_over", key=key)
            return None
        names = expression_names(session, inp.customer_id, inp.context, self.default_timezone)
        names["profile"] = customer.as_profile()
        if inp.only_if is not None and inp.only_if_tree is not None:
            guard = check_only_if(inp.only_if, inp.only_if_tree, names)
            if guard is not None:
                unsent = NotSent(guard.status, "only_if", guard.reason)
                return ledger.record_unsent(session, inp, delivery, unsent)
        extra = self.channels.template_names(customer.id, candidate, inp)
        try:
            message = renderer.render(
                inp.template, candidate.channel, {**names, **extra}, customer.locale
            )
        except RenderError as exc:
            ledger.add_failed_try(delivery, candidate, str(exc), key=key)
            return None
        texts = links.message_texts(message)
        strings = links.client_strings(session, inp.context)
        foreign = links.foreign_link(texts, strings, self.link_domains)
        if foreign is not None:
            unsent = NotSent("skipped", "foreign link", links.skip_reason(foreign))
            return ledger.record_unsent(session, inp, delivery, unsent)
        headers = self.channels.headers(candidate.channel, extra)
        outgoing = decision.outgoing(inp, delivery, candidate, message, headers)
        return self._hand_over(session, inp, token, delivery, candidate, outgoing)

    def _hand_over(
        self,
        session: Session,
        inp: SendInput,
        token: str,
        delivery: Delivery,
        candidate: Candidate,
        outgoing: OutgoingMessage,
    ) -> Decided:
        """The outbox and the inbox deliver in the ledger's transaction, here; an external
        provider gets the message after it, the row held `sending` for this attempt."""
        now = inp.context.now
        if candidate.channel == "inbox":
            outgoing = inbox_message(session, outgoing, inp.version, now)
        elif candidate.channel == "whatsapp":
            outgoing = self.channels.whatsapp_outgoing(session, outgoing, now)
        delivery.channel = candidate.channel
        provider = self.channels.provider(candidate.channel)
        if provider.transactional:
            try:
                provider_id = provider.send(outgoing, session)
            except PermanentFailure as exc:
                key = self.channels.address_key
                ledger.add_failed_try(delivery, candidate, str(exc), key=key)
                return None
            return ledger.mark_sent(delivery, candidate, provider.name, provider_id)
        if not ledger.claim_for_provider(session, delivery, token, provider.name):
            return None  # another attempt holds it now: decide again, from its state
        return candidate, outgoing, provider

    def _rejected(
        self, inp: SendInput, token: str, candidate: Candidate, exc: PermanentFailure
    ) -> None:
        with self.db.session() as session:
            delivery = ledger.mine(session, inp.idempotency_key, token)
            if delivery is None:
                return
            ledger.release(delivery)
            key = self.channels.address_key
            ledger.add_failed_try(delivery, candidate, str(exc), exc.kind, key=key)
            self.channels.on_permanent_failure(
                session, delivery.customer_id, candidate, exc.kind, str(exc), inp.context.now
            )

    def _release(self, inp: SendInput, token: str) -> None:
        """Nothing went out: back to pending, for the retry (`ledger.release`)."""
        with self.db.session() as session:
            delivery = ledger.mine(session, inp.idempotency_key, token)
            if delivery is not None:
                ledger.release(delivery)

    def _settle(
        self,
        inp: SendInput,
        token: str,
        status: Literal["sent", "unknown"],
        reason: str | None,
        provider_name: str | None = None,
        provider_id: str | None = None,
    ) -> SendOutcome:
        with self.db.session() as session:
            outcome = self._settled_call(
                session, inp, token, status, reason, provider_name, provider_id
            )
            # The step log rows in this transaction too; the customer may have been
            # erased during the provider call, so the check is this transaction's own.
            return self._with_steps(session, inp, outcome, None)

    def _settled_call(
        self,
        session: Session,
        inp: SendInput,
        token: str,
        status: Literal["sent", "unknown"],
        reason: str | None,
        provider_name: str | None,
        provider_id: str | None,
    ) -> SendOutcome:
        """`_settle`'s ledger update, in its transaction: the provider call's outcome."""
        delivery = ledger.row(session, inp.idempotency_key)
        if delivery is None:
            # The customer was erased during the provider call: the row now carries a
            # pseudonym, and nothing of the customer is written back.
            return SendOutcome(status=status, reason=ERASED)
        # `unknown` set meanwhile by a retry that found us in flight: we know now.
        if delivery.attempt_token == token and delivery.status in ("sending", "unknown"):
            if status == "sent":
                assert provider_name is not None and provider_id is not None
                candidate = Candidate(delivery.channel or "", "")
                return ledger.mark_sent(delivery, candidate, provider_name, provider_id)
            delivery.status = status
            delivery.reason = reason
        return ledger.outcome(delivery)

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


def _deferred(held: Held) -> SendOutcome:
    return SendOutcome(
        status="deferred", reason=held.reason, until=held.until, paced=held.kind == "pace"
    )


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
