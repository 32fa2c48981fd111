"""Request and response bodies.

Event intake follows the Segment HTTP Tracking API (camelCase names on the wire, as
Segment's and RudderStack's libraries send them); fields the product does not use are
accepted and ignored, as Segment does. Responses are ours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from journeyman.insight.stats import JourneyStats

ID_MAX = 200


def _segment_id(value: Any) -> Any:
    """Segment ids are strings, or numbers sent as such; blank means absent."""
    if isinstance(value, bool):
        raise ValueError("must be a string")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name: Europe/Paris)") from None
    return value


SegmentId = Annotated[Annotated[str, Field(max_length=ID_MAX)] | None, BeforeValidator(_segment_id)]
RequiredId = Annotated[str, BeforeValidator(_segment_id), Field(min_length=1, max_length=ID_MAX)]
Timestamp = Annotated[datetime | None, AfterValidator(_utc)]
TimeZone = Annotated[str | None, AfterValidator(_zone)]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Traits(BaseModel):
    """Identify traits: the contact fields are checked, anything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=40)
    timezone: TimeZone = None
    locale: str | None = Field(None, max_length=35)
    push_tokens: list[Annotated[str, Field(max_length=4096)]] | None = None
    push_token: str | None = Field(None, max_length=4096)

    def given(self) -> dict[str, Any]:
        """The traits the message set, null included (null clears a trait)."""
        return self.model_dump(exclude_unset=True)


class _Message(_Wire):
    user_id: SegmentId = None
    anonymous_id: SegmentId = None
    message_id: SegmentId = None
    timestamp: Timestamp = None
    original_timestamp: Timestamp = None
    # When the client sent it, by the client's clock: corrects that clock (`event_time`).
    sent_at: Timestamp = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _identified(self) -> _Message:
        if not self.user_id and not self.anonymous_id:
            raise PydanticCustomError("missing_identity", "userId or anonymousId is required")
        return self


class TrackMessage(_Message):
    """`track`: the customer did something. Journeys enter and react on these."""

    type: Literal["track"] = "track"
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class IdentifyMessage(_Message):
    """`identify`: who the customer is. Traits are upserted into the profile.

    RudderStack's SDKs send the traits in `context.traits` only: they are read from
    there when `traits` is absent or empty."""

    type: Literal["identify"] = "identify"
    traits: Traits = Field(default_factory=Traits)

    @model_validator(mode="before")
    @classmethod
    def _context_traits(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("traits"):
            return data
        context = data.get("context")
        if isinstance(context, dict) and isinstance(context.get("traits"), dict):
            return {**data, "traits": context["traits"]}
        return data


class AliasMessage(_Message):
    """`alias`: `previousId` (an anonymous id) is the same person as `userId`."""

    type: Literal["alias"] = "alias"
    previous_id: RequiredId
    user_id: RequiredId


class PageMessage(_Message):
    """`page` (and `screen`): stored as the event `page_viewed` (`screen_viewed`), with
    `name` and `category` in its properties; journeys can enter and wait on them."""

    type: Literal["page"] = "page"
    name: str | None = Field(None, max_length=200)
    category: str | None = Field(None, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class ScreenMessage(PageMessage):
    type: Literal["screen"] = "screen"  # type: ignore[assignment]


class GroupMessage(_Message):
    """`group`: stored in the customer's history, not routed."""

    type: Literal["group"] = "group"
    group_id: RequiredId
    traits: dict[str, Any] = Field(default_factory=dict)


AnyMessage = Annotated[
    TrackMessage | IdentifyMessage | AliasMessage | PageMessage | ScreenMessage | GroupMessage,
    Field(discriminator="type"),
]


class BatchRequest(_Wire):
    """`batch`: what Segment's and RudderStack's libraries send. Applied all or nothing."""

    batch: list[AnyMessage]
    context: dict[str, Any] = Field(default_factory=dict)  # shared by every message
    integrations: dict[str, Any] = Field(default_factory=dict)
    sent_at: Timestamp = None
    write_key: str | None = None


class Ack(BaseModel):
    """What Segment answers, so that SDKs are satisfied."""

    success: bool = True


# -- reading -------------------------------------------------------------------------


class RunView(BaseModel):
    workflow_id: str
    run_id: str
    journey_id: str
    version: str
    customer_id: str
    entry_key: str
    status: str
    outcome: str | None
    started_at: datetime
    ended_at: datetime | None


class MessageView(BaseModel):
    """A send: the delivery ledger row, with the rendered message where it was held."""

    delivery_id: int
    journey_id: str
    step_id: str
    template: str
    channel: str | None
    status: str
    reason: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None = None
    opened_at: datetime | None = None
    clicked_at: datetime | None = None
    failed_at: datetime | None = None
    complained_at: datetime | None = None
    failure: str | None = Field(None, description="the provider's reason, after a bounce")
    to: str | None = None
    subject: str | None = None


class EventView(BaseModel):
    message_id: str
    type: str
    name: str | None
    properties: dict[str, Any]
    timestamp: datetime
    received_at: datetime
    dispatched_at: datetime | None
    attempts: int
    last_error: str | None
    parked_at: datetime | None = Field(
        None, description="set after 10 failed hand-overs: `journeyman events retry`"
    )
    source: str | None = Field(None, description="the key class it came with: client, server")


ConsentName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]


class ConsentChoice(BaseModel):
    subscribed: bool
    source: str
    updated_at: datetime


class ConsentsView(BaseModel):
    """Explicit choices only: a channel or topic not listed is subscribed (the default)."""

    channels: dict[str, ConsentChoice] = Field(default_factory=dict)
    topics: dict[str, ConsentChoice] = Field(default_factory=dict)


class ConsentsUpdate(BaseModel):
    """Set channel and topic subscriptions; what is not named stays as it is."""

    model_config = ConfigDict(extra="forbid")

    channels: dict[Literal["email", "sms", "push", "whatsapp", "inbox"], bool] = Field(
        default_factory=dict, examples=[{"email": True, "sms": False}]
    )
    topics: dict[ConsentName, bool] = Field(
        default_factory=dict, examples=[{"cart_reminders": False}]
    )
    source: str = Field(
        "api",
        max_length=100,
        description="where the choice was made, kept in the audit trail "
        '(e.g. "preference_center", "support:agent_12")',
    )
    detail: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _something(self) -> ConsentsUpdate:
        if not self.channels and not self.topics:
            raise ValueError("name at least one channel or topic")
        return self


class ConsentChangeView(BaseModel):
    scope: str
    name: str
    subscribed: bool
    source: str
    detail: str | None
    at: datetime


class ConsentHistoryView(BaseModel):
    consents: ConsentsView
    history: list[ConsentChangeView]


class ErasureView(BaseModel):
    customer_id: str
    pseudonym: str = Field(description="what the kept statistics now carry instead of the id")
    identities: list[str] = Field(description="the customer and merged anonymous ids erased")
    runs_terminated: list[str]
    executions_deleted: int
    histories_note: str | None
    storage_note: str | None = Field(
        None, description="why erased rows may still be on disk for a while (null: they are not)"
    )
    rows_deleted: dict[str, int]
    rows_pseudonymized: dict[str, int]


class CustomerView(BaseModel):
    id: str
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    push_tokens: list[str]
    traits: dict[str, Any]
    aliases: list[str] = Field(description="anonymous ids merged into this customer")
    created_at: datetime
    updated_at: datetime
    consents: ConsentsView
    active_journeys: list[RunView]
    recent_messages: list[MessageView]
    recent_events: list[EventView]


class VersionView(BaseModel):
    version: str
    created_at: datetime
    current: bool
    running: int


class JourneySummary(BaseModel):
    id: str
    name: str | None
    description: str | None
    current_version: str | None = Field(description="None when the file is gone")
    entry_event: str | None
    running: int
    entered: int


class AudienceCheckView(BaseModel):
    """One check of a segment: a schedule tick or a broadcast."""

    tick_id: str = Field(description="the workflow id of the check's run in Temporal")
    kind: str = Field(description="schedule | broadcast")
    at: datetime = Field(description="the time the segment was checked as of")
    status: str = Field(description="running | done | paused")
    evaluated: int
    matched: int
    entered: int
    errors: int
    skipped: dict[str, int] = Field(description="matching customers not entered, by reason")
    error_samples: list[str]


class AudienceView(BaseModel):
    """How a segment journey is entered, and its latest checks (newest first)."""

    segment: str
    every: str | None
    once_at: datetime | None
    schedule_id: str = Field(description="the Temporal Schedule that runs the checks")
    checks: list[AudienceCheckView]


class JourneyView(JourneySummary):
    definition: dict[str, Any] = Field(description="the journey as compiled (current version)")
    versions: list[VersionView]
    outcomes: dict[str, int] = Field(description="finished runs by outcome")
    stats: JourneyStats | None = Field(
        description="analytics, as `journeyman stats` prints them; None: nothing recorded yet"
    )
    audience: AudienceView | None = Field(
        None, description="a segment journey's schedule and latest checks; None for events"
    )


class OutboxView(BaseModel):
    id: int
    delivery_id: int
    customer_id: str
    journey_id: str
    channel: str
    to: str
    subject: str | None
    body: str
    html: str | None
    data: dict[str, Any]
    created_at: datetime


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


# -- operator controls ----------------------------------------------------------------


class OperatorBody(BaseModel):
    """Who acts and why (both recorded with the action); `to`: the step, for `move`."""

    who: str = Field(min_length=1, max_length=ID_MAX, description="the operator's name")
    why: str = Field(min_length=1, description="the reason, kept in the run's path and audit")
    to: str | None = Field(None, description="move: the id of the step to go to")


class PathEntryView(BaseModel):
    at: datetime
    step: str
    action: str
    detail: str
    channel: str | None
    template: str | None


class RunStateView(BaseModel):
    """A run's state and path, as the workflow's `state` query answers them."""

    workflow_id: str
    status: str = Field(description="Temporal's: running, completed, terminated, ...")
    journey_id: str
    version: str
    customer_id: str
    current_step: str | None
    waiting_for: str | None = Field(description="the event a wait_for step waits for")
    holdout: bool
    path: list[PathEntryView]


class RunControlView(BaseModel):
    workflow_id: str
    action: str
    detail: str = Field(description="what the run's path records")


class PauseView(BaseModel):
    journey_id: str
    paused: bool
    paused_by: str | None
    reason: str | None
    at: datetime


class ResumeView(BaseModel):
    journey_id: str
    entered: list[str] = Field(description="workflow ids of the held entries entered")
    skipped: list[str] = Field(description="held entries that no longer apply, and why")
    woken: list[str] = Field(description="running runs signalled to try held sends now")
