"""Tables. Personal data lives in `customers` only; other tables refer to customer ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The shared column types, also taken from here with the tables (`utcnow` above all).
from journeyman.storage.columns import (
    ConfirmedBy,
    ConsentScope,
    ContactChannel,
    OperatorActionKind,
    RunStatus,
    Serial,
    Stamped,
    SuppressionReason,
    TickKind,
    UTCDateTime,
    utcnow,
)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Customer(Base):
    __tablename__ = "customers"
    # The customers of their own, in id order: what a segment tick walks and counts.
    __table_args__ = (
        Index(
            "ix_customers_known",
            "id",
            postgresql_where=text("merged_into IS NULL"),
            sqlite_where=text("merged_into IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    timezone: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(35))
    push_tokens: Mapped[list[Any]] = mapped_column(default=list)
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set when an anonymous id was merged into a known customer: events for it go there.
    merged_into: Mapped[str | None] = mapped_column(String(200), index=True)
    # When a message first named this customer as its `userId` (not only as an
    # anonymous id): a customer once identified is never merged into another by a
    # client key.
    identified_at: Mapped[datetime | None]
    created_at: Mapped[Stamped]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def as_profile(self) -> dict[str, Any]:
        """The `profile` that expressions and templates see."""
        return profile_of(
            self.id,
            self.email,
            self.phone,
            self.timezone,
            self.locale,
            self.push_tokens,
            self.traits,
        )


# The columns `profile_of` takes, for reading many profiles without loading ORM objects.
CUSTOMER_PROFILE_COLUMNS = (
    Customer.id,
    Customer.email,
    Customer.phone,
    Customer.timezone,
    Customer.locale,
    Customer.push_tokens,
    Customer.traits,
)


def profile_of(
    customer_id: str,
    email: str | None,
    phone: str | None,
    timezone: str | None,
    locale: str | None,
    push_tokens: list[Any] | None,
    traits: dict[str, Any] | None,
) -> dict[str, Any]:
    """The `profile` that expressions and templates see, from a customer's columns."""
    return {
        **(traits or {}),
        "id": customer_id,
        "email": email,
        "phone": phone,
        "timezone": timezone,
        "locale": locale,
        "push_tokens": list(push_tokens or []),
    }


class Event(Base):
    """Every accepted event, stored before it is handed to Temporal."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_customer_name_time", "customer_id", "name", "timestamp"),
        # What the dispatcher reads, in id order and by customer: the events still to
        # hand over (journeyman/events/dispatcher.py, claims.py).
        *(
            Index(
                name,
                *columns,
                postgresql_where=text("dispatched_at IS NULL AND parked_at IS NULL"),
                sqlite_where=text("dispatched_at IS NULL AND parked_at IS NULL"),
            )
            for name, columns in (
                ("ix_events_pending", ("id",)),
                ("ix_events_pending_customer", ("customer_id", "id")),
            )
        ),
        Index(
            "ix_events_parked",
            "parked_at",
            postgresql_where=text("parked_at IS NOT NULL"),
            sqlite_where=text("parked_at IS NOT NULL"),
        ),
    )

    id: Mapped[Serial]
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    customer_id: Mapped[str] = mapped_column(String(200))
    anonymous_id: Mapped[str | None] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timestamp: Mapped[datetime]
    received_at: Mapped[Stamped]
    dispatched_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # After a failed hand-off, when the dispatcher tries this event again.
    next_attempt_at: Mapped[datetime | None]
    # Set after MAX_ATTEMPTS failed hand-offs: kept, no longer tried, and no longer
    # holding back the customer's later events (`journeyman events failed|retry`).
    parked_at: Mapped[datetime | None]
    # The class of key it came with: client (a write key), server, webhook, provider;
    # None for events stored before sources were recorded (treated as server-sent).
    source: Mapped[str | None] = mapped_column(String(10))


class JourneyVersion(Base):
    """Each compiled version of a journey with the template sources it renders."""

    __tablename__ = "journey_versions"

    journey_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[str] = mapped_column(String(40), primary_key=True)
    plan: Mapped[dict[str, Any]]
    templates: Mapped[dict[str, Any]]
    created_at: Mapped[Stamped]


class JourneyRun(Base):
    """One customer's entry into a journey: the entry ledger and the routing index."""

    __tablename__ = "journey_runs"
    __table_args__ = (
        Index("ix_runs_customer_status", "customer_id", "status"),
        Index("ix_runs_journey_customer_key", "journey_id", "customer_id", "entry_key"),
    )

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # first run of the chain
    workflow_id: Mapped[str] = mapped_column(String(400), index=True)
    journey_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(200))
    entry_key: Mapped[str] = mapped_column(String(200), default="")
    # The event that started the run: routing that event again never enters again.
    trigger_message_id: Mapped[str | None] = mapped_column(String(200), index=True)
    holdout: Mapped[bool] = mapped_column(default=False)
    status: Mapped[RunStatus] = mapped_column(String(20), default="running")
    outcome: Mapped[str | None] = mapped_column(String(40))  # converted|exited|ended|...
    current_step: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[Stamped]
    ended_at: Mapped[datetime | None]
    # `goal.within`: a goal event within the window after entry that came once the run
    # had ended (without converting) converts it after all: when, and the event's id.
    attributed_at: Mapped[datetime | None]
    attributed_event: Mapped[str | None] = mapped_column(String(200))


class Delivery(Base):
    """The delivery ledger: one row per send step visit, claimed before any provider call."""

    __tablename__ = "deliveries"

    id: Mapped[Serial]
    idempotency_key: Mapped[str] = mapped_column(String(500), unique=True)
    workflow_id: Mapped[str] = mapped_column(String(400))
    journey_id: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[str] = mapped_column(String(40))
    step_id: Mapped[str] = mapped_column(String(100))
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    template: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(10))
    # pending: claimed, holds a frequency-cap slot, no provider call in flight;
    # sending: a provider call is in flight (found so by a retry: the outcome is unknown);
    # sent | skipped | failed | unknown: final.
    status: Mapped[str] = mapped_column(String(20))
    # The workflow's clock when the send was decided: frequency caps count on it.
    decided_at: Mapped[datetime | None] = mapped_column(index=True)
    # Which activity attempt holds the in-flight provider call.
    attempt_token: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(20))
    provider_message_id: Mapped[str | None] = mapped_column(String(200), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[list[Any]] = mapped_column(default=list)  # channel tries and outcomes
    created_at: Mapped[Stamped]
    sent_at: Mapped[datetime | None]
    # What the provider reported afterwards (delivery webhooks); the first time of each.
    delivered_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    clicked_at: Mapped[datetime | None]
    complained_at: Mapped[datetime | None]  # spam report
    failed_at: Mapped[datetime | None]  # bounced, dropped, undelivered
    failure: Mapped[str | None] = mapped_column(Text)  # the provider's reason
    # The provider's pace (rate limit): the slot reserved for this send while it waits.
    rate_slot_at: Mapped[datetime | None]


class OutboxMessage(Base):
    """A rendered message for a channel with no provider configured."""

    __tablename__ = "outbox"

    id: Mapped[Serial]
    delivery_id: Mapped[int] = mapped_column(Integer, unique=True)
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    journey_id: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(10))
    to: Mapped[str] = mapped_column(String(400))
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[Stamped]


class StepLog(Base):
    """Step transitions, recorded idempotently: a retried or replayed step counts once."""

    __tablename__ = "step_log"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_step_log_run_seq"),)

    id: Mapped[Serial]
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int]
    journey_id: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(200))
    step_id: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(30))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime]


class SendLock(Base):
    """One row per customer, updated first in every send decision: with it, the
    frequency-cap check and the claim of a slot are one atomic step on every backend
    (a row lock on PostgreSQL, the write lock on SQLite)."""

    __tablename__ = "send_locks"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    seq: Mapped[int] = mapped_column(default=0)


class CapWait(Base):
    """A send waiting for room under the frequency cap; a higher priority goes first."""

    __tablename__ = "cap_waits"

    idempotency_key: Mapped[str] = mapped_column(String(500), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    priority: Mapped[int] = mapped_column(default=0)
    since: Mapped[datetime]  # the send's first attempt
    due_at: Mapped[datetime]  # when it will look for room again


class Consent(Base):
    """A customer's current choice for a channel (`email`, `sms`, `push`) or a topic.

    No row means subscribed: customers get messages until they opt out, as with
    Braze and Customer.io defaults; the journey's topic and channel are both checked.
    """

    __tablename__ = "consents"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    scope: Mapped[ConsentScope] = mapped_column(String(10), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    subscribed: Mapped[bool]
    source: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[Stamped]


class ContactConfirmation(Base):
    """A contact point (email address, phone number) a client key set on a customer:
    with JOURNEYMAN_CLIENT_CONTACTS=confirm it gets marketing messages only once the
    customer confirms it (double opt-in) or a server key sets the same value
    (journeyman/privacy/contacts.py)."""

    __tablename__ = "contact_confirmations"
    __table_args__ = (
        UniqueConstraint("customer_id", "channel", "address", name="uq_contact_confirmation"),
    )

    id: Mapped[Serial]
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[ContactChannel] = mapped_column(String(10))
    address: Mapped[str] = mapped_column(String(320))
    requested_at: Mapped[Stamped]
    confirmed_at: Mapped[datetime | None]
    confirmed_by: Mapped[ConfirmedBy | None] = mapped_column(String(20))
    # The confirmation message's delivery (the ledger row), once one was sent.
    delivery_id: Mapped[int | None]


class DispatchLease(Base):
    """A dispatcher's claim on one customer's events (journeyman/events/claims.py): while it
    holds it, no other dispatcher (another API replica) hands that customer's events
    over, so they reach their runs in order. It lapses at `until` (a crashed holder)."""

    __tablename__ = "dispatch_leases"

    customer_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime]


class EntryClaim(Base):
    """An entry tied to the event that triggers it, recorded before the run is started:
    one event starts at most one run of a journey, even under `reentry: always` and a
    crash between the start and its record (journeyman/events/claims.py)."""

    __tablename__ = "entry_claims"

    journey_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    claimed_at: Mapped[Stamped]


class ConsentChange(Base):
    """The audit trail of every consent change: what, to what, by whom, when."""

    __tablename__ = "consent_changes"

    id: Mapped[Serial]
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    scope: Mapped[ConsentScope] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(100))
    subscribed: Mapped[bool]
    source: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[Stamped]


class Suppression(Base):
    """An address no message may go to (hard bounce, spam report, invalid number).

    Keyed by the address, not the customer: a bounced address stays suppressed for
    whichever profile carries it, also after that customer's erasure. The address is
    kept only as a SHA-256 digest of its normalized form, so the list holds no
    personal data in the clear.
    """

    __tablename__ = "suppressions"

    channel: Mapped[str] = mapped_column(String(10), primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[SuppressionReason] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[Stamped]


class ProviderEvent(Base):
    """Provider webhook events already applied: a webhook delivered twice counts once."""

    __tablename__ = "provider_events"

    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[Stamped]


class Erasure(Base):
    """That a customer was erased: when, at whose request, by pseudonym only."""

    __tablename__ = "erasures"

    id: Mapped[Serial]
    pseudonym: Mapped[str] = mapped_column(String(40), index=True)
    requested_by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    identities: Mapped[int]
    runs_terminated: Mapped[int]
    executions_deleted: Mapped[int]


class ErasureTombstone(Base):
    """An erased identity, by a keyed digest (journeyman/privacy/pseudonyms.py): checked before
    a customer id is written, so work under way during an erasure writes nothing back."""

    __tablename__ = "erasure_tombstones"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime]


class JourneyControl(Base):
    """A journey paused by an operator: no new entries (they are held), sends deferred."""

    __tablename__ = "journey_controls"

    journey_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    paused: Mapped[bool] = mapped_column(default=False)
    paused_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[Stamped]


class HeldEntry(Base):
    """An entry that a paused journey held back: entered (if it still applies) on resume.
    The event itself is in `events`, by message id."""

    __tablename__ = "held_entries"
    __table_args__ = (UniqueConstraint("journey_id", "message_id", name="uq_held_journey_message"),)

    id: Mapped[Serial]
    journey_id: Mapped[str] = mapped_column(String(100), index=True)
    message_id: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[Stamped]


class EntryError(Base):
    """An event that would have entered a journey but whose entry condition or key could
    not be evaluated (a property missing, a date that is not one): no run records it, so
    it is recorded here, once per journey and event, for `journeyman stats` and the API."""

    __tablename__ = "entry_errors"
    __table_args__ = (
        UniqueConstraint("journey_id", "message_id", name="uq_entry_error_journey_message"),
    )

    id: Mapped[Serial]
    journey_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[str] = mapped_column(String(200), index=True)
    error: Mapped[str] = mapped_column(Text)
    at: Mapped[Stamped]


class OperatorAction(Base):
    """The audit trail of operator controls: on one run, or pausing a whole journey."""

    __tablename__ = "operator_actions"

    id: Mapped[Serial]
    journey_id: Mapped[str] = mapped_column(String(100), index=True)
    workflow_id: Mapped[str | None] = mapped_column(String(400), index=True)
    action: Mapped[OperatorActionKind] = mapped_column(String(20))
    who: Mapped[str] = mapped_column(String(200))
    why: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[Stamped]


class RateLimit(Base):
    """A provider's send pace, shared by every worker: the next free slot of the
    provider's rate limit (a virtual schedule: each send takes the next slot)."""

    __tablename__ = "rate_limits"

    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    next_slot_at: Mapped[datetime]


class AudienceTick(Base):
    """One evaluation of a journey's segment (a schedule tick, a broadcast): its progress,
    kept so that a retried tick resumes where it stopped, and its counts, for operators."""

    __tablename__ = "audience_ticks"

    tick_id: Mapped[str] = mapped_column(String(400), primary_key=True)
    journey_id: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[str] = mapped_column(String(40))
    kind: Mapped[TickKind] = mapped_column(String(20))
    at: Mapped[datetime]  # the tick's clock: `now` in the segment
    status: Mapped[str] = mapped_column(String(20))  # running | done | paused
    cursor: Mapped[str | None] = mapped_column(String(200))  # the last customer evaluated
    evaluated: Mapped[int] = mapped_column(default=0)
    matched: Mapped[int] = mapped_column(default=0)
    entered: Mapped[int] = mapped_column(default=0)
    errors: Mapped[int] = mapped_column(default=0)
    # Why matching customers were not entered, and the first expression errors.
    skipped: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_samples: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[Stamped]
    finished_at: Mapped[datetime | None]


class Release(Base):
    """The publish log: each row makes `version` of a journey live (or switches the
    journey off, `enabled` false) from `at` on. A journey's live release is its row with
    the highest id; rows are never updated or deleted (journeyman/operations/releases.py)."""

    __tablename__ = "releases"
    __table_args__ = (Index("ix_releases_journey_id", "journey_id", "id"),)

    id: Mapped[Serial]
    journey_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(40))
    enabled: Mapped[bool] = mapped_column(default=True)
    at: Mapped[Stamped]
    by: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")


class EntryOff(Base):
    """An entry a switched-off journey passed by (`enabled: false`, or its file deleted):
    the customer would have entered. Counted in stats as "journey off"; once per
    journey and event. No customer id: only the count is ever shown."""

    __tablename__ = "entries_off"
    __table_args__ = (
        UniqueConstraint("journey_id", "message_id", name="uq_entry_off_journey_message"),
    )

    id: Mapped[Serial]
    journey_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[Stamped]


class InboxMessage(Base):
    """A message of the `inbox` channel, kept for the customer's app or site to show
    (`GET /v1/inbox/{userId}`). Holds rendered text: erasure deletes it, export lists it."""

    __tablename__ = "inbox_messages"
    __table_args__ = (Index("ix_inbox_customer_created", "customer_id", "created_at"),)

    id: Mapped[Serial]
    delivery_id: Mapped[int] = mapped_column(Integer, unique=True)
    customer_id: Mapped[str] = mapped_column(String(200))
    journey_id: Mapped[str] = mapped_column(String(100))
    step_id: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[Stamped]
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    read_at: Mapped[datetime | None] = mapped_column(default=None)


class WhatsAppWindow(Base):
    """When a number last wrote to us on WhatsApp: the 24-hour customer-service window
    in which free-form messages may be sent to it. Keyed by the number's digest, as
    suppressions are."""

    __tablename__ = "whatsapp_windows"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_inbound_at: Mapped[datetime]


class CatalogItem(Base):
    """One item of a catalog (products, stores...): `data` is the item as upserted, its
    `id` included. Read at send time by `catalog(name, id)` (journeyman/messaging/catalogs.py)."""

    __tablename__ = "catalog_items"

    catalog: Mapped[str] = mapped_column(String(100), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[Stamped]


class SplitStop(Base):
    """A case of an optimized split an operator stopped: it takes no new customers
    (`journeyman split stop`); read by the counting activity at every choice."""

    __tablename__ = "split_stops"

    journey_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    goto: Mapped[str] = mapped_column(String(100), primary_key=True)
    stopped_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[Stamped]
