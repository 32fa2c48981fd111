"""The problems of one journey file, each where it is, said as a marketer can act on it.

`Problems` collects what the checks find (journeyman/dsl/checks.py, template_checks.py),
placing each message at the 1-based line and column of the value, or of the key, it is
about, and keeps one message per place. `report_invalid` turns pydantic's validation
errors into such messages: `unknown field 'wiat'; did you mean 'wait'?` rather than
`Extra inputs are not permitted`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from journeyman.dsl import model
from journeyman.dsl.errors import JourneyError, Problem, Severity
from journeyman.dsl.loader import Positions, key_position, position_of
from journeyman.dsl.model import ACTIONS, STEP_FIELDS

# Where a value is in the journey's data: keys and list indexes from the top.
Loc = tuple[Any, ...]


class At(Protocol):
    """Reports a problem at a place in the data: its value, or its key when `key`."""

    def __call__(
        self, loc: Loc, message: str, severity: Severity = "error", key: bool = False
    ) -> None: ...


class Problems:
    """The problems found in one journey file, in the order they were found."""

    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.positions = positions
        self.found: list[Problem] = []

    def at(self, loc: Loc, message: str, severity: Severity = "error", key: bool = False) -> None:
        line, column = (key_position if key else position_of)(self.positions, loc)
        self.found.append(Problem(self.file, line, column, message, severity))

    def one_per_place(self) -> list[Problem]:
        """Keep the first message at each position: a value that fits no alternative of a
        union (`wait: 1hour` is neither a duration nor `{until: ...}`) fails once per
        alternative, and one message is what the marketer needs."""
        seen: set[tuple[int, int]] = set()
        kept = []
        for problem in self.found:
            if (problem.line, problem.column) not in seen:
                seen.add((problem.line, problem.column))
                kept.append(problem)
        return kept


def read_journey(path: Path) -> str:
    """The journey file's text; JourneyError when it is missing or not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JourneyError([Problem(str(path), 1, 1, "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise JourneyError([Problem(str(path), 1, 1, f"not UTF-8 text: {exc.reason}")]) from None


def report_invalid(exc: ValidationError, at: At) -> None:
    """Each of the model's validation errors, as one message at its place."""
    for error in _without_misspelt_missing(_union_members(exc.errors())):
        loc, message, on_key = _explain(error)
        at(loc, message, key=on_key)


# -- validation messages --------------------------------------------------------------


_TYPE_NAMES = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "text",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping of fields",
    "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields",
    "datetime_type": "a date and time",
    "datetime_parsing": "a date and time",
    "datetime_from_date_parsing": "a date and time",
}


def _explain(error: Any) -> tuple[Loc, str, bool]:
    """A pydantic error as (location in the data, message a marketer can act on, whether
    to point at the field's name rather than its value)."""
    loc = _data_loc(tuple(error["loc"]))
    kind = error["type"]
    given = error.get("input")
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "extra_forbidden":
        field_name = str(loc[-1])
        return loc, _unknown_field(field_name, _known_fields(loc)), True
    if kind == "missing":
        return loc, f"missing field {loc[-1]!r}", False
    if kind == "step_action":
        return _explain_step_action(loc, given)
    if kind in _TYPE_NAMES:
        return loc, f"expected {_TYPE_NAMES[kind]}, got {_show(given)}", False
    if kind == "string_pattern_mismatch":
        message = f"{given!r} is not a valid id: use lowercase letters, digits and _"
    elif kind == "string_too_long":
        limit = error.get("ctx", {}).get("max_length")
        message = f"too long: {len(str(given))} characters where at most {limit} are allowed"
    elif kind == "literal_error":
        message = f"{given!r} is not allowed: {message.removeprefix('Input should be ')}"
        allowed = [str(v).strip("'") for v in re.findall(r"'[^']*'", error["msg"])]
        hint = difflib.get_close_matches(str(given), allowed, n=1)
        if hint and hint[0] != given:
            message += f"; did you mean {hint[0]!r}?"
    elif kind == "too_short":
        message = "must not be empty"
    elif kind in ("greater_than", "greater_than_equal"):
        message = f"must be {message.removeprefix('Input should be ')}, got {_show(given)}"
    return loc, message, False


# Union members as pydantic names them in an error's location (`wait_for.event` is a
# name or a list of names, `on_event` a step id or a map of event name to step id).
_UNION_TAGS = {"constrained-str": str, "str": str}
_UNION_PREFIXES = {"list[": list, "dict[": dict}


def _union_member(part: Any) -> type | None:
    if not isinstance(part, str):
        return None
    if part in _UNION_TAGS:
        return _UNION_TAGS[part]
    return next((kind for p, kind in _UNION_PREFIXES.items() if part.startswith(p)), None)


def _union_members(errors: list[Any]) -> list[Any]:
    """For a name-or-list (or id-or-mapping) field, keep the errors of the member that
    fits what was written: a container's errors are about its items when the value is
    that container, so they replace the "expected text" of the other member. The
    member's name is dropped from the location, which then points into the value."""
    tagged: dict[Loc, list[tuple[int, Any]]] = {}
    kept = []
    for error in errors:
        loc = error["loc"]
        at = next(
            (i for i, p in enumerate(loc) if i >= 3 and loc[0] == "steps" and _union_member(p)),
            None,
        )
        if at is None:
            kept.append(error)
        else:
            tagged.setdefault(tuple(loc[:at]), []).append((at, error))
    for group in tagged.values():
        inside = [(at, e) for at, e in group if len(e["loc"]) > at + 1]
        chosen = inside or [
            min(group, key=lambda pair: _union_member(pair[1]["loc"][pair[0]]) is not str)
        ]
        for at, error in chosen:
            loc = error["loc"]
            kept.append({**error, "loc": (*loc[:at], *loc[at + 1 :])})
    return kept


def _without_misspelt_missing(errors: list[Any]) -> list[Any]:
    """Drop "missing field 'name'" when the same mapping has a field `nmae`: the unknown
    field's did-you-mean says it all."""
    suggested = set()
    for error in errors:
        if error["type"] == "extra_forbidden":
            loc = _data_loc(tuple(error["loc"]))
            for hint in difflib.get_close_matches(str(loc[-1]), _known_fields(loc), n=1):
                suggested.add((*loc[:-1], hint))
    return [
        error
        for error in errors
        if not (error["type"] == "missing" and _data_loc(tuple(error["loc"])) in suggested)
    ]


def _data_loc(loc: Loc) -> Loc:
    """The error's location without the tags pydantic adds for tagged unions: the step's
    action (`("steps", 0, "wait", "id")` is the step's `id`) and the kind of `wait`."""
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "steps" and isinstance(parts[1], int) and parts[2] in ACTIONS:
        del parts[2]
        if len(parts) > 3 and parts[2] == "wait" and parts[3] in ("duration", "until", "at"):
            del parts[3]
    return tuple(parts)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


def _unknown_field(name: str, known: list[str]) -> str:
    if name == "on_error" and name in known:
        return (
            "on_error does not go here: it goes on the step, beside its action "
            "(on_error: <step id>), or inside wait_for"
        )
    if name in known:
        return f"field {name!r} does not belong here"
    hint = difflib.get_close_matches(name, known, n=1)
    return f"unknown field {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")


def _explain_step_action(loc: Loc, step: Any) -> tuple[Loc, str, bool]:
    if not isinstance(step, dict):
        return (
            loc,
            f"expected a step (a mapping with an id and an action), got {_show(step)}",
            False,
        )
    actions = [k for k in step if k in ACTIONS]
    if len(actions) > 1:
        return (
            loc,
            f"a step has exactly one action, this one has {len(actions)}: " + ", ".join(actions),
            False,
        )
    # `wiat: 1h` is most likely a misspelt action: say so where it is written.
    for key in step:
        if key not in STEP_FIELDS and difflib.get_close_matches(str(key), ACTIONS, n=1):
            return (*loc, key), _unknown_field(str(key), list(ACTIONS)), True
    return loc, "a step needs one action: " + ", ".join(ACTIONS), False


def _known_fields(loc: Loc) -> list[str]:
    parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
    candidates: dict[Loc, type[BaseModel]] = {
        (): model.Journey,
        ("entry",): model.Entry,
        ("goal",): model.Goal,
        ("exit",): model.EventRule,
        ("settings",): model.JourneySettings,
    }
    if parent[:1] == ("steps",):
        names = [*STEP_FIELDS, *ACTIONS]
        for sub in (
            model.WaitFor,
            model.Send,
            model.Webhook,
            model.UpdateProfile,
            model.Case,
            model.SplitCase,
            model.WaitUntil,
            model.WaitAt,
        ):
            names.extend(sub.model_fields)
        return names
    cls = candidates.get(parent)
    return list(cls.model_fields) if cls else []
