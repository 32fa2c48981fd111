"""Values that marketers write as short strings, as pydantic field types.

`1h`, `10%`, `"09:00"`, `21:00-08:00`, `after 7d`, `0 9 * * *`, `3 per 1d`: each is
parsed on validation into a structured value (a bad one is a validation error at its
place), written back the same way when the plan is serialized where the structured
value has no JSON of its own, and described in the journey's JSON Schema as the string
it is written as. `Text` states those three once per type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from annotated_types import GroupedMetadata
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from journeyman.dsl.durations import (
    format_duration,
    format_percent,
    parse_clock,
    parse_duration,
    parse_percent,
    parse_window,
)
from journeyman.dsl.schedule import parse_every

ID_PATTERN = r"^[a-z0-9_]+$"
# Journey, step, template and topic ids are stored in columns of 100 characters.
ID_MAX_LENGTH = 100


class FrozenModel(BaseModel):
    """A part of a journey: no field it does not know, nothing changed once made."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Text(GroupedMetadata):
    """A value written as a string: `parse` reads what is written (and the value as
    validated before, when a plan comes back from a workflow payload), `show` writes it
    back when serialized (None: the value serializes as it is), and the JSON Schema
    describes the string."""

    parse: Callable[[Any], Any]
    description: str
    examples: tuple[str, ...] = ()
    pattern: str | None = None
    format: str | None = None
    show: Callable[[Any], str] | None = None

    def __iter__(self) -> Iterator[object]:
        yield BeforeValidator(self.parse)
        if self.show is not None:
            yield PlainSerializer(self.show, return_type=str)
        schema: dict[str, Any] = {"type": "string"}
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.format is not None:
            schema["format"] = self.format
        schema["description"] = self.description
        if self.examples:
            schema["examples"] = list(self.examples)
        yield WithJsonSchema(schema)


def _duration(value: Any) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)


Duration = Annotated[
    timedelta,
    Text(
        _duration,
        "30s, 15m, 1h, 2d, 1w, or ISO 8601 such as PT1H",
        ("1h", "2d", "PT30M"),
        pattern=r"^(\d+(\.\d+)?(s|m|h|d|w)|P.+)$",
        show=format_duration,
    ),
]

# Held as a fraction (10% is 0.1); written, and serialized, as "10%".
Percent = Annotated[
    float,
    Text(
        parse_percent,
        "a percentage such as 10%",
        ("10%",),
        pattern=r"^\d+(\.\d+)?%$",
        show=format_percent,
    ),
]


def _clock(value: Any) -> str:
    hour, minute = parse_clock(value)
    return f"{hour:02d}:{minute:02d}"


Clock = Annotated[
    str,
    Text(_clock, 'a time of day, in quotes: "09:00"', ("09:00",), pattern=r"^\d{1,2}:\d{2}$"),
]


def _window(value: Any) -> str:
    (h1, m1), (h2, m2) = parse_window(value)
    return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"


Window = Annotated[
    str,
    Text(
        _window,
        "a daily window of local time, which may wrap past midnight",
        ("21:00-08:00",),
        pattern=r"^\d{1,2}:\d{2}-\d{1,2}:\d{2}$",
    ),
]

Id = Annotated[str, Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]
StepId = Annotated[
    str,
    Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH, description="a step id: [a-z0-9_]+"),
]
EventName = Annotated[str, Field(min_length=1, max_length=200)]


class Reentry(FrozenModel):
    mode: Literal["never", "always", "after"]
    after: Duration | None = None


def _reentry(value: Any) -> Any:
    if isinstance(value, Reentry):
        return value
    if value in ("never", "always"):
        return Reentry(mode=value)
    if isinstance(value, str) and value.startswith("after "):
        return Reentry(mode="after", after=parse_duration(value.removeprefix("after ").strip()))
    raise ValueError(f'reentry must be never, always or "after <duration>", got {value!r}')


def _reentry_text(value: Reentry) -> str:
    if value.mode == "after" and value.after is not None:
        return f"after {format_duration(value.after)}"
    return value.mode


# Written, and serialized, as "never", "always" or "after 7d".
ReentryField = Annotated[
    Reentry,
    Text(
        _reentry,
        "whether a customer who already went through may enter again: "
        'never, always, or "after <duration>" since their last entry',
        ("never", "always", "after 7d"),
        pattern=r"^(never|always|after .+)$",
        show=_reentry_text,
    ),
]


def _every(value: Any) -> str:
    return str(parse_every(value))


# Written as a duration or a cron line; held normalized ("1d", "0 9 * * *").
EveryField = Annotated[
    str,
    Text(
        _every,
        "how often the segment is checked: a duration (1d, 6h) or a cron "
        'line in quotes ("0 9 * * *", minute hour day month weekday) in the service '
        "time zone",
        ("1d", "1h", "0 9 * * *", "0 10 * * mon"),
    ),
]


def _once_at(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date and time; write it as 2026-12-01T09:00:00Z "
                "(or with an offset, +01:00)"
            ) from None
    if not isinstance(value, datetime):
        raise ValueError(f"expected a date and time such as 2026-12-01T09:00:00Z, got {value!r}")
    if value.tzinfo is None:
        raise ValueError(
            f"once_at {value.isoformat()} needs a time zone: add Z (UTC) or an offset "
            "such as +01:00"
        )
    return value


OnceAt = Annotated[
    datetime,
    Text(
        _once_at,
        "a broadcast: the segment is checked once, at this moment; with "
        "its time zone (Z or an offset)",
        ("2026-12-01T09:00:00Z", "2026-12-01T09:00:00+01:00"),
        format="date-time",
    ),
]


class FrequencyCap(FrozenModel):
    count: int = Field(ge=1)
    per: Duration


_CAP = re.compile(r"^\s*(\d+)\s+per\s+(\S+)\s*$")


def _cap(value: Any) -> Any:
    if isinstance(value, FrequencyCap) or value == "none":
        return value
    match = _CAP.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'frequency_cap must look like "3 per 1d" (or be "none"), got {value!r}')
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"frequency_cap must allow at least 1 message, got {value!r}")
    return FrequencyCap(count=count, per=parse_duration(match.group(2)))


def _cap_text(cap: FrequencyCap) -> str:
    return f"{cap.count} per {format_duration(cap.per)}"


# Written, and serialized, as "3 per 1d"; "none" exempts a journey from every cap.
FrequencyCapField = Annotated[
    FrequencyCap | Literal["none"],
    Text(
        _cap,
        "at most this many messages per customer in this period, "
        'across all journeys; "none" for messages the customer asked for (order '
        "updates) that no cap may hold back",
        ("3 per 1d", "1 per 4h", "none"),
        pattern=r"^(\d+ per \S+|none)$",
        show=lambda cap: cap if cap == "none" else _cap_text(cap),
    ),
]


def _journey_cap(value: Any) -> Any:
    if isinstance(value, FrequencyCap):
        return value
    if value == "none":
        raise ValueError('journey_cap must look like "1 per 7d" ("none" is for frequency_cap)')
    try:
        return _cap(value)
    except ValueError:
        raise ValueError(f'journey_cap must look like "1 per 7d", got {value!r}') from None


# Messages from this journey per customer, on top of the service-wide frequency_cap.
JourneyCapField = Annotated[
    FrequencyCap,
    Text(
        _journey_cap,
        "at most this many messages from this journey per customer in "
        "this period, on top of the service-wide frequency_cap",
        ("1 per 7d", "2 per 1d"),
        pattern=r"^\d+ per \S+$",
        show=_cap_text,
    ),
]
