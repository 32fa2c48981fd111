"""The journey file format as frozen pydantic models (../shared/product/journey-dsl.md).

Values that marketers write as short strings (`1h`, `after 7d`, `3 per 1d`, `10%`,
expressions) are parsed on validation into structured values (journeyman/dsl/fields.py),
so a bad one is a validation error with a location, and the compiled model passed to the
workflow holds nothing left to parse. Validation accepts both the YAML spelling and the
model's own JSON, so a plan round-trips through Temporal's payload converter.
"""

from __future__ import annotations

import difflib
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Pure modules, imported here rather than in the validators: the workflow sandbox
# validates every plan it receives and must find them loaded already.
from journeyman.dsl.evaluate import names_used
from journeyman.dsl.fields import (
    Clock,
    Duration,
    EventName,
    EveryField,
    FrequencyCapField,
    FrozenModel,
    Id,
    JourneyCapField,
    OnceAt,
    Percent,
    Reentry,
    ReentryField,
    StepId,
    Text,
    Window,
)

Channel = Literal["email", "sms", "push", "whatsapp", "inbox"]
# What a step does: each step has exactly one of these fields.
Action = Literal["wait", "wait_for", "send", "branch", "split", "update_profile", "webhook", "end"]
ACTIONS: tuple[Action, ...] = get_args(Action)


# -- expressions ----------------------------------------------------------------------


class Expr(FrozenModel):
    """A compiled expression: the text as written and the tree `evaluate` runs."""

    text: str
    tree: list[Any]
    # Reads `profile` or history: evaluated by an activity, not inside the workflow.
    needs_activity: bool


def _expr(value: Any) -> Any:
    if isinstance(value, Expr) or (
        isinstance(value, dict) and set(value) == {"text", "tree", "needs_activity"}
    ):
        return value  # already compiled: a plan coming back from a workflow payload
    # Imported here so that the workflow sandbox, which only ever re-validates compiled
    # plans, never loads Jinja2.
    from journeyman.dsl.expressions import (
        ExpressionSyntaxError,
        compile_expression,
        needs_activity,
    )

    if isinstance(value, bool | int | float):
        value = str(value).lower() if isinstance(value, bool) else str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected an expression as text, got {value!r}")
    try:
        tree = compile_expression(value)
    except ExpressionSyntaxError as exc:
        raise ValueError(str(exc)) from None
    _check_names(tree)
    return {"text": value, "tree": tree, "needs_activity": needs_activity(tree)}


def _check_names(tree: list[Any]) -> None:
    from journeyman.dsl.expressions import unknown_names

    unknown = unknown_names(tree)
    if unknown:
        from journeyman.dsl.expressions import KNOWN_NAMES

        hint = difflib.get_close_matches(unknown[0], sorted(KNOWN_NAMES), n=1)
        raise ValueError(
            f"unknown name {unknown[0]!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + " (expressions can use event, trigger, profile, steps, journey, now, today, "
            "last(), count(), recent(), days(), hours(), minutes(), date(), local(), "
            "anniversary())"
        )


ExprField = Annotated[
    Expr,
    Text(
        _expr,
        "a Jinja2 expression over event, trigger, profile, journey, now, "
        "today, last(), count(), recent(), days(), hours(), minutes(), date(), local(), "
        "anniversary()",
        ("event.properties.cart_total >= 20",),
    ),
]


class Value(FrozenModel):
    """A value that may embed `{{ expressions }}`: the raw value and its compiled tree."""

    raw: Any
    tree: list[Any]
    needs_activity: bool


def _value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"raw", "tree", "needs_activity"}:
        return value
    if isinstance(value, Value):
        return value
    from journeyman.dsl.expressions import ExpressionSyntaxError, compile_value, needs_activity

    try:
        tree = compile_value(value)
    except ExpressionSyntaxError as exc:
        raise ValueError(str(exc)) from None
    _check_names(tree)
    return {"raw": value, "tree": tree, "needs_activity": needs_activity(tree)}


ValueField = Annotated[
    Value,
    BeforeValidator(_value),
    WithJsonSchema({"description": "a value; text may embed {{ expressions }}"}),
]

TextValueField = Annotated[Value, Text(_value, "text that may embed {{ expressions }}")]


# -- entry, goal, exit, settings ------------------------------------------------------


# An entry without an event has no event to read: a segment is checked per customer.
_NO_EVENT_NAMES = ("event", "trigger")


class Entry(FrozenModel):
    """How customers enter the journey: on an event, or as members of a segment."""

    event: EventName | None = Field(
        None, description="the track event that enters a customer, e.g. cart_abandoned"
    )
    segment: ExprField | None = Field(
        None,
        description="instead of an event: enter every customer for whom this is true, "
        "checked on the schedule `every` or once at `once_at`; reads profile, last(), "
        "count(), now, today",
    )
    every: EveryField | None = Field(None, description="with segment: how often it is checked")
    once_at: OnceAt | None = Field(None, description="with segment: a one-off broadcast")
    when: ExprField | None = Field(
        None, description="enter only when this is true of the event (event is the trigger)"
    )
    key: ExprField | None = Field(
        None, description="one run per customer and key; default: one run per customer"
    )
    reentry: ReentryField = Field(Reentry(mode="never"), json_schema_extra={"default": "never"})
    holdout: Percent = Field(
        0.0,
        json_schema_extra={"default": "0%"},
        description="control group: this share of entrants walks the journey and is sent "
        "nothing, so that conversions can be compared",
    )

    @field_validator("segment")
    @classmethod
    def _segment_reads_no_event(cls, value: Expr | None) -> Expr | None:
        if value is None:  # a compiled plan spells out every field
            return value
        used = names_used(value.tree)
        for name in _NO_EVENT_NAMES:
            if name in used:
                raise ValueError(
                    f"a segment has no {name}: it is checked for each customer on a schedule; "
                    "use profile, last(), count(), now and today"
                )
        return value

    @field_validator("every", "once_at")
    @classmethod
    def _with_segment(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:  # a compiled plan spells out every field
            return value
        if info.data.get("event") is not None and info.data.get("segment") is None:
            raise ValueError(f"{info.field_name} goes with segment, not with event")
        if info.field_name == "once_at" and info.data.get("every") is not None:
            raise ValueError("a segment is checked either every ... or once_at, not both")
        return value

    @field_validator("when", "key")
    @classmethod
    def _with_event(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("segment") is not None:
            if info.field_name == "when":
                raise ValueError("when goes with event; with a segment, put it all in segment")
            raise ValueError("key goes with event; a segment enters a customer once at a time")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Entry:
        if self.event is None and self.segment is None:
            raise ValueError("entry needs an event, or a segment with every or once_at")
        if self.event is not None and self.segment is not None:
            raise ValueError("entry takes either an event or a segment, not both")
        if self.segment is not None and self.every is None and self.once_at is None:
            raise ValueError(
                "a segment needs every (how often it is checked: 1d, or a cron line) "
                "or once_at (a broadcast, e.g. 2026-12-01T09:00:00Z)"
            )
        return self

    @property
    def kind(self) -> Literal["event", "schedule", "broadcast"]:
        if self.event is not None:
            return "event"
        return "broadcast" if self.once_at is not None else "schedule"


class EventRule(FrozenModel):
    """An event that ends the journey (the goal, or an exit)."""

    event: EventName = Field(description="the track event name")
    when: ExprField | None = Field(
        None, description="only when this is true; trigger is the event that started the run"
    )


class Goal(EventRule):
    """The conversion: the goal event ends the run as converted."""

    within: Duration | None = Field(
        None,
        description="attribution window: a goal event within this time after entry counts "
        "as the journey's conversion even when the run has already ended; default: only "
        "while the run is alive",
    )


class JourneySettings(FrozenModel):
    """Overrides of the service-wide defaults."""

    quiet_hours: Window | None = Field(
        None, description="sms and push are held until the window ends, customer's time zone"
    )
    frequency_cap: FrequencyCapField | None = None
    priority: int = Field(0, description="when caps collide, the higher priority goes first")
    journey_cap: JourneyCapField | None = None


# -- steps ----------------------------------------------------------------------------


class _Step(FrozenModel):
    """One step: an id, exactly one action, and optionally where to go next."""

    id: StepId
    name: str | None = Field(None, description="a label for diagrams and the Temporal UI")
    goto: StepId | None = Field(
        None, description="the step to go to after this one, instead of the next"
    )
    on_error: StepId | None = Field(
        None,
        description="where to go when a condition of this step (a branch case, a wait_for "
        "when, or a goal or exit when checked while the run is here) fails to evaluate; "
        "default: the run ends with outcome error",
    )


# The fields every step has, beside its action.
STEP_FIELDS = tuple(_Step.model_fields)


class WaitUntil(FrozenModel):
    """Wait until the next such time of day in the customer's time zone."""

    until: Clock


class WaitAt(FrozenModel):
    """Wait until the instant an expression gives (DSL v2); one in the past: no wait."""

    at: ExprField = Field(
        description="an expression giving a date and time: "
        "trigger.properties.delivered_at + days(3)"
    )


def _wait_kind(value: Any) -> Literal["duration", "until", "at"]:
    if isinstance(value, WaitAt) or (isinstance(value, dict) and "at" in value):
        return "at"
    return "until" if isinstance(value, dict | WaitUntil) else "duration"


WaitValue = Annotated[
    Annotated[Duration, Tag("duration")]
    | Annotated[WaitUntil, Tag("until")]
    | Annotated[WaitAt, Tag("at")],
    Discriminator(_wait_kind),
]


class WaitStep(_Step):
    """Pause the customer for a while (durable: survives restarts)."""

    wait: WaitValue = Field(
        description='how long to wait (1h, 2d), {until: "09:00"} in the customer\'s time '
        'zone, or {at: "<expression>"}: until the date and time it gives'
    )


class WaitFor(FrozenModel):
    """Wait for the customer's next matching event, at most `timeout`."""

    event: EventName | list[EventName] = Field(
        description="the track event to wait for, or a list of them (any one will do)"
    )
    when: ExprField | None = Field(None, description="only an event for which this is true")
    timeout: Duration = Field(description="how long to wait at most")
    since: Literal["step", "entry"] = Field(
        "step",
        description="step: events from the moment the step starts; entry: an event the run "
        "received since it entered (while it waited or sent) matches at once, the latest "
        "such event being `event`",
    )
    on_event: StepId | dict[EventName, StepId] | None = Field(
        None,
        description="where to go when the event comes (a step id, or a map of event name "
        "to step id); default: the next step",
    )
    on_timeout: StepId | None = Field(
        None, description="where to go when it does not; default: the next step"
    )
    on_error: StepId | None = Field(
        None,
        description="where to go when `when` fails to evaluate (as the step's on_error); "
        "default: the run ends with outcome error",
    )

    @field_validator("event")
    @classmethod
    def _events_not_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("event needs at least one event name")
        return value

    @property
    def events(self) -> list[str]:
        """The event names waited for, a single name as a list of one."""
        return [self.event] if isinstance(self.event, str) else list(self.event)

    def step_for(self, event_name: str) -> str | None:
        """Where an event of this name leads: its `on_event` (map entry), or None for
        the next step."""
        if isinstance(self.on_event, dict):
            return self.on_event.get(event_name)
        return self.on_event


class WaitForStep(_Step):
    """Wait for an event, going one way if it comes and another if it does not."""

    wait_for: WaitFor = Field(description="wait for the customer's next matching event")


class Send(FrozenModel):
    """A message from `templates/<template>/` on the first suitable channel."""

    template: Id = Field(description="a folder of templates/")
    channels: list[Channel] = Field(
        min_length=1,
        description="in order of preference; the first the customer is reachable on and "
        "consents to is used",
    )
    only_if: ExprField | None = Field(
        None,
        description="checked again right before the message goes out (after waits, quiet "
        "hours, caps and pacing): false skips the send with the reason `only_if false`, "
        "e.g. \"catalog('products', trigger.properties.product_id).stock > 0\"",
    )

    expires_after: Duration | None = Field(
        None,
        description="inbox only: how long the message stays in the customer's inbox "
        "(e.g. 30d); without it the message stays until the customer is erased",
    )

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[str]) -> list[str]:
        if len(set(channels)) != len(channels):
            raise ValueError("a channel is listed twice")
        return channels

    timing: Literal["now", "best"] = Field(
        "now",
        description="now: when the step is reached; best: at the customer's best hour "
        "within `within`, learned from their opens and clicks (the audience's best hour "
        "with too little history)",
    )
    within: Duration | None = Field(
        None,
        description="with timing: best, how long the send may wait for the best hour "
        "(default 24h, at most 7d)",
    )

    @model_validator(mode="after")
    def _timing(self) -> Send:
        if self.within is not None:
            if self.timing != "best":
                raise ValueError("within applies only with timing: best")
            if not timedelta(hours=1) <= self.within <= timedelta(days=7):
                raise ValueError("within must be between 1h and 7d")
        return self


class SendStep(_Step):
    """Send one message."""

    send: Send = Field(description="send one message on the first suitable channel")


class Case(FrozenModel):
    """One way out of a branch."""

    when: ExprField | None = Field(
        None, description="a condition; a case without it is the default"
    )
    goto: StepId


class BranchStep(_Step):
    """Go one way or another depending on conditions."""

    branch: list[Case] = Field(
        min_length=1, description="the first case whose condition is true decides"
    )


class SplitCase(FrozenModel):
    """One arm of a split, with its share of customers."""

    weight: float = Field(gt=0, description="relative weight; 50 and 50 are half and half")
    goto: StepId


class SplitOptimize(FrozenModel):
    """Learn while the test runs: the weights become a prior, and each customer's case
    is chosen by Thompson sampling on how many who took each case did `event` within
    `within` of taking it."""

    event: str = Field(min_length=1, description="the conversion event of the test")
    within: Duration = Field(description="how long after the split a conversion counts")

    @field_validator("within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("within must be positive")
        return value


class SplitStep(_Step):
    """Divide customers at random (an A/B test), always the same way for a customer."""

    split: list[SplitCase] = Field(
        min_length=1, description="weighted random choice, the same every time for a customer"
    )
    optimize: SplitOptimize | None = Field(
        None,
        description="move traffic to the case that converts best while the test runs "
        "(Thompson sampling; the weights are the prior)",
    )


class UpdateProfile(FrozenModel):
    """Traits to write onto the customer's profile."""

    set: dict[str, ValueField] = Field(
        min_length=1, description="traits to write: a value, or text with {{ expressions }}"
    )


class UpdateProfileStep(_Step):
    """Write traits onto the customer's profile."""

    update_profile: UpdateProfile = Field(description="write traits onto the customer's profile")


class Webhook(FrozenModel):
    """An HTTP call to an outside system."""

    url: TextValueField = Field(examples=["https://crm.example.com/contacts/{{ profile.id }}"])
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "POST", description="the HTTP method"
    )
    headers: dict[str, TextValueField] = Field(
        default_factory=dict, description="HTTP headers; values may embed {{ expressions }}"
    )
    body: ValueField | None = Field(
        None, description="sent as JSON; text values may embed {{ expressions }}"
    )


class WebhookStep(_Step):
    """Call an outside system."""

    webhook: Webhook = Field(description="call an outside system (CRM, loyalty)")


class EndStep(_Step):
    """Finish the journey."""

    end: Literal[True] = Field(description="finish the journey here")


def step_action(value: Any) -> Action | None:
    """The action a step declares; None when it has none or several (an error)."""
    keys = type(value).model_fields if isinstance(value, BaseModel) else value
    if not isinstance(keys, dict):
        return None
    found = [a for a in ACTIONS if a in keys]
    return found[0] if len(found) == 1 else None


Step = Annotated[
    Annotated[WaitStep, Tag("wait")]
    | Annotated[WaitForStep, Tag("wait_for")]
    | Annotated[SendStep, Tag("send")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[SplitStep, Tag("split")]
    | Annotated[UpdateProfileStep, Tag("update_profile")]
    | Annotated[WebhookStep, Tag("webhook")]
    | Annotated[EndStep, Tag("end")],
    Discriminator(
        step_action,
        custom_error_type="step_action",
        custom_error_message="a step needs exactly one action: " + ", ".join(ACTIONS),
    ),
]


class Journey(FrozenModel):
    """One journey file: who enters, what happens to them, and when it ends."""

    id: Id = Field(description="[a-z0-9_]+, unique; equals the file name without .yaml")
    name: str = Field(description="a human name for the journey")
    description: str | None = Field(None, description="what the journey is for, for people")
    enabled: bool = Field(
        True,
        description="false: the journey takes no new entries once deployed; runs under way "
        "finish their version",
    )
    topic: Id | None = Field(
        None, description="subscription topic: an unsubscribed customer gets nothing from it"
    )
    entry: Entry = Field(description="how customers enter: an event, and who among them")
    goal: Goal | None = Field(None, description="the conversion; when it happens the journey ends")
    exit: list[EventRule] = Field(
        default_factory=list, description="other events that end the journey at once"
    )
    settings: JourneySettings = Field(
        JourneySettings(),
        json_schema_extra={"default": {}},
        description="overrides of the service-wide defaults",
    )
    steps: list[Step] = Field(min_length=1, description="run top to bottom; each needs an id")
