"""What a simulation plays: the customer's profile and the events file, read and checked.

The events file is one JSON object a line (`track` or `identify`, at a time since the
trigger); a mistake is a `SimulationError` naming the file, the line and what is wrong.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from journeyman.dsl.durations import parse_duration
from journeyman.insight.timeline import format_span

_ZERO = re.compile(r"^\s*(0+(\.0*)?\s*[smhdw]?|PT0+S|P0+D)\s*$", re.IGNORECASE)


class SimulationError(Exception):
    """Bad input to a simulation (profile, events, binaries); the message says where."""


@dataclass(frozen=True)
class ScriptedEvent:
    """One line of the events file: a `track` event or an `identify` at a virtual time."""

    at: timedelta
    type: Literal["track", "identify"]
    name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    message_id: str = ""
    line: int = 0


def parse_offset(text: object, *, past: bool = False) -> timedelta:
    """A duration since the trigger: what `parse_duration` reads, zero (`0s`, `0`), and
    the format the timeline prints (`3d 5h`, `+1d 02h`, `+15m 00s`). With `past`, also a
    duration before it (`-120d`, `-5h`): history the customer already has."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text == 0:
        return timedelta(0)
    if isinstance(text, str) and _ZERO.match(text):
        return timedelta(0)
    if past and isinstance(text, str) and text.strip().startswith("-"):
        return -_parse_compound(text.strip()[1:])
    if isinstance(text, str) and text.strip().startswith("+"):
        return _parse_compound(text.strip()[1:])
    return _parse_compound(text)


_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)


def _parse_compound(text: object) -> timedelta:
    """`3d 5h` (parts separated by spaces, as the timeline prints offsets), else one
    duration as `parse_duration` reads it."""
    if isinstance(text, str) and len(text.split()) > 1:
        parts = text.split()
        matches = [_PART.fullmatch(part) for part in parts]
        if all(matches):
            total = timedelta(0)
            for match in matches:
                assert match is not None
                if float(match[1]):  # `00s` in `+15m 00s` adds nothing
                    total += parse_duration(f"{match[1]}{match[2].lower()}")
            return total
        raise ValueError(
            f"{text!r} is not a duration: use 30s, 15m, 1h, 2d, 1w, ISO 8601 such as PT1H, "
            "or parts such as 3d 5h"
        )
    return parse_duration(text)


def parse_start(text: str) -> tuple[int, int]:
    """`HH:MM`, a time of day on the customer's clock."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise SimulationError(f'start "{text}" is not a time of day like "10:00"')
    return int(match[1]), int(match[2])


def load_profile(path: Path) -> dict[str, Any]:
    """A customer as one flat JSON object with at least an `id`."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise SimulationError(f'{path}: a profile is one JSON object, like {{"id": "c1"}}')
    customer_id = data.get("id")
    if not isinstance(customer_id, str | int) or isinstance(customer_id, bool) or customer_id == "":
        raise SimulationError(f'{path}: the profile needs an "id" (the customer id)')
    tokens = data.get("push_tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise SimulationError(f'{path}: "push_tokens" must be a list of strings')
    return {**data, "id": str(customer_id)}


def load_events(path: Path, *, segment: bool = False) -> list[ScriptedEvent]:
    """The events file: one JSON object a line; blank lines are skipped.

    For a journey entered on an event, the first line is the trigger, at `0s`. For a
    segment journey (`segment`), the segment is checked at `0s`: lines before it
    (`"at": "-120d"`) are the customer's history, lines after it happen during the run,
    and the file may be empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SimulationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    events: list[ScriptedEvent] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SimulationError(f"{where}:{exc.colno}: not JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise SimulationError(f"{where}: each line is one JSON object")
        events.append(_scripted(data, where, number, first=not events, segment=segment))
    if segment:
        _check_order(path, events)
        return events
    # Lines before the trigger with a negative `at` are the customer's history.
    during = [e for e in events if e.at >= timedelta(0)]
    if not during:
        raise SimulationError(f"{path}: no events; the first line is the trigger")
    trigger = during[0]
    if trigger.type not in ("track", "identify"):
        raise SimulationError(
            f"{path}:{trigger.line}: the first event is the trigger: a track, or an "
            "identify whose trait_changed events enter the journey"
        )
    if trigger.at != timedelta(0):
        raise SimulationError(
            f'{path}:{trigger.line}: the first event is the trigger and happens at "0s" '
            '(history before it has a negative "at", like "-5h")'
        )
    _check_order(path, events)
    return events


def _check_order(path: Path, events: list[ScriptedEvent]) -> None:
    for before, after in itertools.pairwise(events):
        if after.at < before.at:
            raise SimulationError(
                f"{path}:{after.line}: events must be in time order "
                f"({format_span(after.at)} comes after {format_span(before.at)})"
            )


def _scripted(
    data: dict[str, Any], where: str, number: int, first: bool, segment: bool = False
) -> ScriptedEvent:
    kind = data.get("type", "track")
    if kind not in ("track", "identify"):
        raise SimulationError(f"{where}: type {kind!r} is not simulated: use track or identify")
    if "at" not in data and (segment or not first):
        since = "the segment check" if segment else "the trigger"
        raise SimulationError(f'{where}: missing "at" (a duration since {since}, like "2h")')
    try:
        at = parse_offset(data.get("at", "0s"), past=True)
    except ValueError as exc:
        raise SimulationError(f"{where}: at: {exc}") from None
    message_id = str(data.get("messageId") or f"simulated-{number}")
    if kind == "identify":
        traits = data.get("traits")
        if not isinstance(traits, dict):
            raise SimulationError(f'{where}: an identify needs "traits" (an object)')
        return ScriptedEvent(at, "identify", traits=traits, message_id=message_id, line=number)
    name = data.get("event")
    if not isinstance(name, str) or not name:
        raise SimulationError(f'{where}: a track needs "event" (the event name)')
    properties = data.get("properties", {})
    if not isinstance(properties, dict):
        raise SimulationError(f'{where}: "properties" must be an object')
    return ScriptedEvent(at, "track", name, properties, message_id=message_id, line=number)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SimulationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise SimulationError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
