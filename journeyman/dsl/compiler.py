"""Journey files to plans: parse, validate everything, and report every problem at once.

`compile_file` reads one journey and the templates it names and returns a `Compiled`
(the frozen `Plan` the workflow runs, plus the template sources of that version) or
raises `JourneyError` listing each problem as `file:line:col: message`.

The plan's version is a content hash of the journey file and of every template file it
can render, so editing a template makes a new version just as editing the journey does.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, meta, nodes
from pydantic import BaseModel, ValidationError

from journeyman.dsl.errors import JourneyError, Problem
from journeyman.dsl.expressions import FUNCTIONS, KNOWN_NAMES
from journeyman.dsl.loader import (
    Positions,
    YamlSyntaxError,
    key_position,
    load_with_positions,
    position_of,
)
from journeyman.dsl.model import ACTIONS, ID_PATTERN, Journey, SendStep, step_action
from journeyman.dsl.plan import Plan

CHANNEL_FILES = {
    "email": "email.html",
    "sms": "sms.txt",
    "push": "push.txt",
    "whatsapp": "whatsapp.txt",
    "inbox": "inbox.txt",
}
# Blocks the renderer cannot do without (journeyman/messaging/rendering.py).
REQUIRED_BLOCKS = {"email": ("subject",), "push": ("title", "body"), "inbox": ("title", "body")}
LAYOUTS_DIR = "_layouts"
WAIT_ACTIONS = ("wait", "wait_for")


@dataclass(frozen=True)
class Compiled:
    plan: Plan
    path: Path
    templates: dict[str, str] = field(default_factory=dict)  # "name/email.html" -> source
    warnings: list[Problem] = field(default_factory=list)
    # The secrets its webhooks read (`secret('CRM_TOKEN')`, from the worker's environment),
    # each with the line and column of its first use.
    secrets: dict[str, tuple[int, int]] = field(default_factory=dict)


def compile_file(path: Path, templates_dir: Path) -> Compiled:
    """Compile one journey file; JourneyError names every problem found."""
    text = _read(path)
    problems: list[Problem] = []
    name = str(path)
    try:
        data, positions = load_with_positions(text)
    except YamlSyntaxError as exc:
        raise JourneyError([Problem(name, exc.line, exc.column, exc.message)]) from None
    if not isinstance(data, dict):
        raise JourneyError([Problem(name, 1, 1, "a journey file must be a mapping of fields")])

    def at(loc: tuple[Any, ...], message: str, severity: str = "error", key: bool = False) -> None:
        line, column = (key_position if key else position_of)(positions, loc)
        problems.append(Problem(name, line, column, message, severity))

    journey: Journey | None = None
    try:
        journey = Journey.model_validate(data)
    except ValidationError as exc:
        for error in _without_misspelt_missing(_union_members(exc.errors())):
            loc, message, on_key = _explain(error)
            at(loc, message, key=on_key)
    if data.get("id") is not None and data.get("id") != path.stem:
        at(("id",), f"id {data.get('id')!r} must equal the file name {path.stem!r}")
    steps = data.get("steps")
    if isinstance(steps, list):
        _check_graph(steps, at)
        _check_wait_for(steps, at)
        _check_templates(steps, templates_dir, at)
    if journey is not None:
        _check_swallowed_entries(journey, at)
    secrets = {secret: position_of(positions, loc) for secret, loc in _check_secrets(data, at)}
    problems = _one_per_place(problems)
    errors = [p for p in problems if p.severity == "error"]
    if errors or journey is None:
        raise JourneyError(problems or [Problem(name, 1, 1, "journey is not valid")])
    files = _template_files(journey, templates_dir)
    templates = {rel: content.decode() for rel, content in files.items() if _is_text(content)}
    plan = Plan(
        journey=journey,
        version=_version(text, files),
        next=_fall_through(journey),
        listens=_listens(journey),
    )
    return Compiled(plan=plan, path=path, templates=templates, warnings=problems, secrets=secrets)


def compile_dir(journeys_dir: Path, templates_dir: Path) -> list[Compiled]:
    """Every `*.yaml` / `*.yml` journey in a folder; JourneyError lists all files' problems."""
    compiled, problems = validate([journeys_dir], templates_dir)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise JourneyError(errors)
    return compiled


def journey_files(paths: list[Path]) -> list[Path]:
    """The journey files among `paths`: files as given, folders' `*.yaml` and `*.yml`."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            found.append(path)
    return found


def validate(paths: list[Path], templates_dir: Path) -> tuple[list[Compiled], list[Problem]]:
    """Compile what compiles; return the plans and every problem (errors and warnings).

    Two files with the same journey id (`a/x.yaml` and `b/x.yml`) are both reported and
    neither is returned: which one runs would otherwise depend on the order of paths.
    """
    compiled: list[Compiled] = []
    problems: list[Problem] = []
    for path in journey_files(paths):
        try:
            result = compile_file(path, templates_dir)
        except JourneyError as exc:
            problems.extend(exc.problems)
            continue
        compiled.append(result)
        problems.extend(result.warnings)
    by_id: dict[str, list[Compiled]] = {}
    for result in compiled:
        by_id.setdefault(result.plan.journey.id, []).append(result)
    for journey_id, same in by_id.items():
        if len(same) < 2:
            continue
        for result in same:
            others = ", ".join(str(o.path) for o in same if o is not result)
            line, column = position_of(positions_for(_read(result.path)), ("id",))
            problems.append(
                Problem(
                    str(result.path),
                    line,
                    column,
                    f"journey id {journey_id!r} is also used by {others}",
                )
            )
        compiled = [c for c in compiled if c.plan.journey.id != journey_id]
    return compiled, sorted(problems)


def _one_per_place(problems: list[Problem]) -> list[Problem]:
    """Keep the first message at each position: a value that fits no alternative of a
    union (`wait: 1hour` is neither a duration nor `{until: ...}`) fails once per
    alternative, and one message is what the marketer needs."""
    seen: set[tuple[int, int]] = set()
    kept = []
    for problem in problems:
        if (problem.line, problem.column) not in seen:
            seen.add((problem.line, problem.column))
            kept.append(problem)
    return kept


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JourneyError([Problem(str(path), 1, 1, "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise JourneyError([Problem(str(path), 1, 1, f"not UTF-8 text: {exc.reason}")]) from None


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


def _explain(error: Any) -> tuple[tuple[Any, ...], str, bool]:
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
    tagged: dict[tuple[Any, ...], list[tuple[int, Any]]] = {}
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


def _data_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
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


def _explain_step_action(loc: tuple[Any, ...], step: Any) -> tuple[tuple[Any, ...], str, bool]:
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
    from journeyman.dsl.model import _Step

    # `wiat: 1h` is most likely a misspelt action: say so where it is written.
    for key in step:
        if key not in _Step.model_fields and difflib.get_close_matches(str(key), ACTIONS, n=1):
            return (*loc, key), _unknown_field(str(key), list(ACTIONS)), True
    return loc, "a step needs one action: " + ", ".join(ACTIONS), False


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    from journeyman.dsl import model

    parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
    candidates: dict[tuple[Any, ...], type[BaseModel]] = {
        (): model.Journey,
        ("entry",): model.Entry,
        ("goal",): model.Goal,
        ("exit",): model.EventRule,
        ("settings",): model.JourneySettings,
    }
    if parent[:1] == ("steps",):
        names = [*model._Step.model_fields, *ACTIONS]
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


# -- the step graph -------------------------------------------------------------------


def _ref(value: Any) -> Any:
    """A step id or a jump target as written, or None for a list or a mapping: those are
    reported as the wrong type, and cannot be looked up among the ids."""
    return None if isinstance(value, list | dict) else value


def _targets(step: dict[str, Any], index: int) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (location, step id) a step can jump to explicitly."""
    found: list[tuple[tuple[Any, ...], Any]] = []
    if "goto" in step:
        found.append((("steps", index, "goto"), _ref(step["goto"])))
    for kind in ("branch", "split"):
        cases = step.get(kind)
        if isinstance(cases, list):
            for n, case in enumerate(cases):
                if isinstance(case, dict) and "goto" in case:
                    found.append((("steps", index, kind, n, "goto"), _ref(case["goto"])))
    wait_for = step.get("wait_for")
    if isinstance(wait_for, dict):
        for key in ("on_event", "on_timeout"):
            if key not in wait_for:
                continue
            if key == "on_event" and isinstance(wait_for[key], dict):
                # A map of event name to step: each value is a target of its own.
                for name, target in wait_for[key].items():
                    found.append((("steps", index, "wait_for", key, name), _ref(target)))
                continue
            found.append((("steps", index, "wait_for", key), _ref(wait_for[key])))
    return found


def _error_targets(step: dict[str, Any], index: int) -> list[tuple[tuple[Any, ...], Any]]:
    """Where a step goes when one of its conditions fails (`on_error`, DSL v2)."""
    found: list[tuple[tuple[Any, ...], Any]] = []
    if "on_error" in step:
        found.append((("steps", index, "on_error"), _ref(step["on_error"])))
    wait_for = step.get("wait_for")
    if isinstance(wait_for, dict) and "on_error" in wait_for:
        found.append((("steps", index, "wait_for", "on_error"), _ref(wait_for["on_error"])))
    return found


def _successors(steps: list[dict[str, Any]], index: int) -> list[int]:
    """Indexes a step can lead to, given valid ids (unknown ones are reported elsewhere)."""
    ids = {_ref(s.get("id")): i for i, s in enumerate(steps) if isinstance(s, dict)}
    on_error = [ids[t] for _, t in _error_targets(steps[index], index) if t in ids]
    return [*_flow(steps, index, ids), *on_error]


def _flow(steps: list[dict[str, Any]], index: int, ids: dict[Any, int]) -> list[int]:
    """Where a step leads when its conditions evaluate."""
    step = steps[index]
    goto = _ref(step.get("goto"))
    after = [index + 1] if index + 1 < len(steps) else []
    if step.get("end") is True:
        return []
    explicit = [ids[t] for _, t in _targets(step, index) if t in ids]
    if isinstance(step.get("split"), list):
        return explicit
    branch = step.get("branch")
    if isinstance(branch, list):
        has_default = any(isinstance(c, dict) and "when" not in c for c in branch)
        fallback = [] if has_default else ([ids[goto]] if goto in ids else after)
        return [
            ids[t] for loc, t in _targets(step, index) if loc[2] == "branch" and t in ids
        ] + fallback
    if "goto" in step and goto in ids:
        return explicit
    wait_for = step.get("wait_for")
    if isinstance(wait_for, dict) and (
        not {"on_event", "on_timeout"} <= wait_for.keys() or _on_event_partial(wait_for)
    ):
        return explicit + after
    return explicit or after


def _on_event_partial(wait_for: dict[str, Any]) -> bool:
    """An `on_event` map that leaves some awaited event to fall through to the next step."""
    on_event = wait_for.get("on_event")
    if not isinstance(on_event, dict):
        return False
    events = wait_for.get("event")
    names = events if isinstance(events, list) else [events]
    return any(name not in on_event for name in names)


def _check_swallowed_entries(journey: Journey, at: Any) -> None:
    """Warn where an `exit` or the `goal` is the entry event of a keyed journey: a new
    entry event for the same key is routed while the customer is still in the journey,
    so it is refused as an entry, then ends the running run: that cycle is lost."""
    entry = journey.entry
    if entry.event is None or entry.key is None:
        return
    rules: list[tuple[tuple[Any, ...], str, str]] = []
    if journey.goal is not None and journey.goal.event == entry.event:
        rules.append((("goal", "event"), "goal", "converts"))
    for index, rule in enumerate(journey.exit):
        if rule.event == entry.event:
            rules.append((("exit", index, "event"), "exit", "exits"))
    for loc, kind, verb in rules:
        at(
            loc,
            f"{entry.event} both enters this journey (key {entry.key.text}) and is its "
            f"{kind}: a new {entry.event} for a key whose run is still going is refused as an "
            f"entry (the customer is in the journey), then {verb} that run, so no run follows "
            f"it and that cycle is swallowed. To start the next cycle, let the run go on "
            f"(a wait_for on {entry.event} that goes back to the first step), or key each "
            "cycle on its own (the order id)",
            "warning",
        )


def _check_wait_for(steps: list[Any], at: Any) -> None:
    """v2 `wait_for`: each key of an `on_event` map is one of the awaited events."""
    for index, step in enumerate(steps):
        wait_for = step.get("wait_for") if isinstance(step, dict) else None
        if not isinstance(wait_for, dict):
            continue
        on_event = wait_for.get("on_event")
        events = wait_for.get("event")
        names = [str(n) for n in (events if isinstance(events, list) else [events])]
        if not isinstance(on_event, dict):
            continue
        for key in on_event:
            if key in names:
                continue
            hint = difflib.get_close_matches(str(key), names, n=1)
            at(
                ("steps", index, "wait_for", "on_event", key),
                f"on_event names {key!r}, which this step does not wait for (it waits for "
                + ", ".join(names)
                + ")"
                + (f"; did you mean {hint[0]!r}?" if hint else ""),
                key=True,
            )


def _check_graph(steps: list[Any], at: Any) -> None:
    seen: dict[Any, int] = {}
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        step_id = _ref(step.get("id"))
        if step_id in seen:
            at(
                ("steps", index, "id"),
                f"duplicate step id {step_id!r} (first used by step {seen[step_id] + 1})",
            )
        elif step_id is not None:
            seen[step_id] = index
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        for loc, target in [*_targets(step, index), *_error_targets(step, index)]:
            if target not in seen:
                hint = difflib.get_close_matches(str(target), [str(s) for s in seen], n=1)
                at(
                    loc,
                    f"unknown step {target!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""),
                )
    _check_default_cases(steps, at)
    if not all(isinstance(s, dict) for s in steps) or not steps:
        return
    graph = {i: _successors(steps, i) for i in range(len(steps))}
    reached = _reach(graph, 0)
    # One message per unreachable part: the steps an unreachable step leads to are named
    # in its message rather than reported each on their own.
    covered: set[int] = set()
    for index in range(len(steps)):
        if index in reached or index in covered:
            continue
        behind = sorted(_reach(graph, index) - reached - covered - {index})
        covered |= {index, *behind}
        message = f"step {steps[index].get('id')!r} can never be reached"
        if behind:
            message += (
                " (and so neither can " + ", ".join(str(steps[i].get("id")) for i in behind) + ")"
            )
        at(("steps", index, "id"), message)
    _check_waitless_loops(steps, graph, at)
    _check_step_references(steps, graph, at)


def _check_default_cases(steps: list[Any], at: Any) -> None:
    """Warn about a default case (no `when`) that is not last: it is always taken, so
    the cases after it are dead."""
    for index, step in enumerate(steps):
        cases = step.get("branch") if isinstance(step, dict) else None
        if not isinstance(cases, list):
            continue
        for n, case in enumerate(cases[:-1]):
            if isinstance(case, dict) and "when" not in case:
                dead = len(cases) - n - 1
                at(
                    ("steps", index, "branch", n),
                    f"the default case (no when) is case {n + 1} of {len(cases)}: it is always "
                    f"taken, so the {dead} case{'s' if dead > 1 else ''} after it never "
                    "will be; put the default case last",
                    "warning",
                )
                break


# Fields whose text is an expression (the rest may embed `{{ ... }}`).
_EXPRESSION_KEYS = ("when", "at", "only_if", "segment", "key")


def _expressions_in(
    value: Any, loc: tuple[Any, ...], needle: str = "steps"
) -> list[tuple[tuple[Any, ...], Any]]:
    """(location, compiled tree) of every expression and templated value under `loc`;
    what does not compile is reported by the model's validation."""
    from journeyman.dsl.expressions import (
        ExpressionSyntaxError,
        compile_expression,
        compile_value,
    )

    found: list[tuple[tuple[Any, ...], Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _EXPRESSION_KEYS and isinstance(item, str):
                with contextlib.suppress(ExpressionSyntaxError):
                    found.append(((*loc, key), compile_expression(item)))
            else:
                found.extend(_expressions_in(item, (*loc, key), needle))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found.extend(_expressions_in(item, (*loc, n), needle))
    elif isinstance(value, str) and needle in value and "{{" in value:
        with contextlib.suppress(ExpressionSyntaxError):
            found.append((loc, compile_value(value)))
    return found


def _check_secrets(data: dict[str, Any], at: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """The secrets the journey's webhooks read, in order; `secret()` anywhere else is
    an error (its value would end up in a condition's log, a profile or a message)."""
    from journeyman.dsl.expressions import secrets_used

    names: list[tuple[str, tuple[Any, ...]]] = []
    for loc, tree in _expressions_in(data, (), "secret("):
        used = secrets_used(tree)
        if not used:
            continue
        in_webhook = (
            len(loc) > 3
            and loc[0] == "steps"
            and isinstance(data.get("steps"), list)
            and loc[2] == "webhook"
            and loc[3] in ("url", "headers", "body")
        )
        if not in_webhook:
            at(
                loc,
                f"secret({used[0]!r}) may only be used in a webhook's url, headers or body, "
                "where it goes to the system it is for and nowhere else",
            )
            continue
        names.extend((n, loc) for n in used if n not in [known for known, _ in names])
    return names


def _check_step_references(
    steps: list[dict[str, Any]], graph: dict[int, list[int]], at: Any
) -> None:
    """`steps.<id>` names a send step that can have run before the step reading it, and
    one of the fields a send leaves (channel, outcome, reason)."""
    from journeyman.dsl.expressions import SEND_RESULT_FIELDS, step_references

    sends = {
        step_id: i
        for i, s in enumerate(steps)
        if isinstance(s.get("send"), dict) and isinstance(step_id := s.get("id"), str)
    }
    ids = [str(s.get("id")) for s in steps]
    for index, step in enumerate(steps):
        for loc, tree in _expressions_in(step, ("steps", index)):
            for ref, read in step_references(tree):
                if ref not in sends:
                    hint = difflib.get_close_matches(ref, [str(s) for s in sends], n=1)
                    kind = "a send step" if ref in ids else "a step"
                    at(
                        loc,
                        f"steps.{ref}: {ref!r} is not {kind}"
                        + (f"; did you mean steps.{hint[0]}?" if hint else "")
                        + "; steps.<id> reads what a send step did",
                    )
                elif index not in _reach_after(graph, sends[ref]):
                    at(
                        loc,
                        f"steps.{ref}: step {ref!r} cannot have run before step "
                        f"{step.get('id')!r} (it comes later on every path)",
                    )
                elif read is not None and read not in SEND_RESULT_FIELDS:
                    hint = difflib.get_close_matches(read, SEND_RESULT_FIELDS, n=1)
                    at(
                        loc,
                        f"steps.{ref}.{read}: a send step leaves channel, outcome and reason"
                        + (f"; did you mean steps.{ref}.{hint[0]}?" if hint else ""),
                    )


def _reach_after(graph: dict[int, list[int]], start: int) -> set[int]:
    """The steps a run can come to after `start` (itself only through a loop)."""
    reached: set[int] = set()
    frontier = list(graph[start])
    while frontier:
        node = frontier.pop()
        if node not in reached:
            reached.add(node)
            frontier.extend(graph[node])
    return reached


def _reach(graph: dict[int, list[int]], start: int) -> set[int]:
    reached, frontier = {start}, [start]
    while frontier:
        for nxt in graph[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    return reached


def _check_waitless_loops(
    steps: list[dict[str, Any]], graph: dict[int, list[int]], at: Any
) -> None:
    """A cycle made only of steps that take no time would spin forever: reject it."""
    instant = {i for i, s in enumerate(steps) if not any(a in s for a in WAIT_ACTIONS)}
    state: dict[int, int] = {}  # 1 on the stack, 2 done
    reported: set[frozenset[int]] = set()

    def visit(node: int, stack: list[int]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in instant:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    names = " -> ".join(str(steps[i].get("id")) for i in [*cycle, nxt])
                    at(
                        ("steps", nxt, "id"),
                        f"loop with no wait in it ({names}): a customer would go round forever; "
                        "add a wait or wait_for step to the loop",
                    )
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for start in sorted(instant):
        if start not in state:
            visit(start, [])


def _fall_through(journey: Journey) -> dict[str, str | None]:
    steps = journey.steps
    result: dict[str, str | None] = {}
    for index, step in enumerate(steps):
        if step.goto is not None:
            result[step.id] = step.goto
        elif index + 1 < len(steps) and step_action(step) != "end":
            result[step.id] = steps[index + 1].id
        else:
            result[step.id] = None
    return result


def _listens(journey: Journey) -> list[str]:
    names = {rule.event for rule in journey.exit}
    if journey.goal:
        names.add(journey.goal.event)
    for step in journey.steps:
        wait_for = getattr(step, "wait_for", None)
        if wait_for is not None:
            names.update(wait_for.events)
    return sorted(names)


# -- templates ------------------------------------------------------------------------


def _check_templates(steps: list[Any], templates_dir: Path, at: Any) -> None:
    """Each channel of each send step has its template file; every file that step can
    render (locale variants, the plain-text email, layouts and macros it uses) exists
    and parses; an email has a subject, a push a title and a body."""
    checker = _TemplateChecker(templates_dir)
    for index, step in enumerate(steps):
        send = step.get("send") if isinstance(step, dict) else None
        if not isinstance(send, dict):
            continue
        template = send.get("template")
        # A name that is not an id is reported as such; looking it up could leave the
        # templates folder (`../x`).
        if not isinstance(template, str) or not re.fullmatch(ID_PATTERN, template):
            continue
        folder = templates_dir / template
        where = ("steps", index, "send", "template")
        if not _is_dir(folder):
            at(where, f"no template {template!r} (expected folder {folder})")
            continue
        listed = send.get("channels")
        channels = listed if isinstance(listed, list) else []
        for n, channel in enumerate(channels):
            filename = CHANNEL_FILES.get(channel) if isinstance(channel, str) else None
            if filename is None:
                continue
            path = folder / filename
            if not path.is_file():
                at(
                    ("steps", index, "send", "channels", n),
                    f"template {template!r} has no {filename} for channel {channel} ({path})",
                )
                continue
            for variant in _variants(path):
                for message in checker.problems(variant):
                    at(where, message)
            if channel == "email":
                for plain in _variants(folder / "email.txt"):
                    for message in checker.problems(plain):
                        at(where, message)
            for variant in _variants(path):
                for block in REQUIRED_BLOCKS.get(channel, ()):
                    if not checker.has_block(variant, block):
                        at(where, f"{variant} has no {{% block {block} %}}: {channel} needs one")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # such as a name longer than the file system allows
        return False


def _variants(path: Path) -> list[Path]:
    """`email.html` and its locale variants such as `email.fr.html`, those that exist."""
    found = sorted(path.parent.glob(f"{path.stem}.*{path.suffix}"))
    return [path, *found] if path.is_file() else found


_USES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
# What a template may read besides what it sets itself: the names of expressions, the
# link the channel adds, and what Jinja gives every template.
TEMPLATE_NAMES = frozenset(
    {
        *KNOWN_NAMES,
        *FUNCTIONS,
        "unsubscribe_url",
        *Environment().globals,
        *("loop", "self", "super", "caller", "varargs", "kwargs"),
    }
)


def _set_names(tree: nodes.Template) -> set[str]:
    """Every name the template sets: `{% set %}`, `{% for %}` targets, macros, imports."""
    names: set[str] = set()
    for node in tree.find_all((nodes.Assign, nodes.AssignBlock, nodes.For)):
        assert isinstance(node, (nodes.Assign, nodes.AssignBlock, nodes.For))
        names.update(n.name for n in node.target.find_all(nodes.Name))
        if isinstance(node.target, nodes.Name):
            names.add(node.target.name)
    names.update(macro.name for macro in tree.find_all(nodes.Macro))
    names.update(imported.target for imported in tree.find_all(nodes.Import))
    for from_import in tree.find_all(nodes.FromImport):
        names.update(n if isinstance(n, str) else n[1] for n in from_import.names)
    return names


def _template_name(node: nodes.Node) -> str | None:
    """The file a `{% extends %}`, `{% include %}` or `{% import %}` names, when it is
    written as a plain string (a name computed at render time cannot be checked)."""
    template = getattr(node, "template", None)
    if isinstance(template, nodes.Const) and isinstance(template.value, str):
        return template.value
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


# Template analyses shared by every compile of this process, keyed by the template's
# text (a `dev` that recompiles on every save, a deploy of many journeys sharing layouts):
# parsing, compiling and walking a template cost far more than reading it.
_ANALYSES = 512
_CHECK_ENV = Environment()


@functools.lru_cache(maxsize=_ANALYSES)
def _checked_tree(text: str) -> nodes.Template | tuple[int | None, str]:
    """The parsed tree of a template's text, compiled once to find what parsing lets
    through (a filter or test Jinja does not have); (line, message) when it fails. The
    tree is shared: nothing here changes it."""
    try:
        tree = _CHECK_ENV.parse(text)
        _CHECK_ENV.compile(tree)
    except TemplateSyntaxError as exc:  # TemplateAssertionError included
        return exc.lineno, exc.message or ""
    return tree


@functools.lru_cache(maxsize=_ANALYSES)
def _used_names(text: str) -> tuple[str, ...] | None:
    """The template files a template's text extends, includes or imports by a plain
    name; None when it does not parse."""
    try:
        tree = _CHECK_ENV.parse(text)
    except TemplateSyntaxError:
        return None
    return tuple(n for n in map(_template_name, tree.find_all(_USES)) if n is not None)


_Analysis = tuple[frozenset[str], frozenset[str], tuple[tuple[str, str], ...]]
_TREE_ANALYSES: dict[int, tuple[nodes.Template, _Analysis]] = {}


def _analysis(tree: nodes.Template) -> _Analysis:
    """(the names the tree reads undeclared, the names it sets, (how, name) of each
    template it extends or uses by a plain name), once per shared tree."""
    cached = _TREE_ANALYSES.get(id(tree))
    if cached is None or cached[0] is not tree:
        if len(_TREE_ANALYSES) >= 4 * _ANALYSES:
            _TREE_ANALYSES.clear()
        used = []
        for node in tree.find_all(_USES):
            name = _template_name(node)
            if name is not None:
                used.append(("extends" if isinstance(node, nodes.Extends) else "uses", name))
        analysis = (
            frozenset(meta.find_undeclared_variables(tree)),
            frozenset(_set_names(tree)),
            tuple(used),
        )
        cached = _TREE_ANALYSES[id(tree)] = (tree, analysis)
    return cached[1]


class _TemplateChecker:
    """Parses each template file once and follows `{% extends %}`, `{% include %}` and
    `{% import %}` within the templates folder, so that a broken or missing layout is
    reported by every send step that uses it."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.parsed: dict[Path, nodes.Template | str] = {}

    def _parse(self, path: Path) -> nodes.Template | str:
        """The template's tree, or why it has none. Compiling it too finds what parsing
        lets through: a filter or test Jinja does not have (`| titel`)."""
        if path not in self.parsed:
            try:
                tree = _checked_tree(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                self.parsed[path] = f"{path}: cannot read the template: {exc}"
            else:
                if isinstance(tree, tuple):
                    lineno, message = tree
                    self.parsed[path] = f"{path}:{lineno}: template does not parse: {message}"
                else:
                    self.parsed[path] = tree
        return self.parsed[path]

    def _used(self, path: Path, tree: nodes.Template) -> list[tuple[str, Path]]:
        """(how, file) for each template this one extends, includes or imports by name."""
        return [(how, self.templates_dir / name) for how, name in _analysis(tree)[2]]

    def problems(self, path: Path) -> list[str]:
        """Why this template, or one it uses, cannot be rendered; empty when it can."""
        found: list[str] = []
        seen: set[Path] = set()
        trees: dict[Path, nodes.Template] = {}
        pending = [path]
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.add(current)
            tree = self._parse(current)
            if isinstance(tree, str):
                found.append(tree)
                continue
            trees[current] = tree
            for how, used in self._used(current, tree):
                if not _inside(used, self.templates_dir):
                    found.append(f"{current}: {how} {used}, outside the templates folder")
                elif used.is_file():
                    pending.append(used)
                else:
                    found.append(f"{current}: {how} {used}, which does not exist")
        # A name set anywhere in the chain (a layout's `{% set %}`, an imported macro)
        # counts as known in all of it: lenient across files, exact about misspellings.
        known = TEMPLATE_NAMES.union(*(_analysis(tree)[1] for tree in trees.values()))
        for current, tree in trees.items():
            unknown = []
            for name in _analysis(tree)[0] - known:
                line = min(
                    (n.lineno for n in tree.find_all(nodes.Name) if n.name == name),
                    default=1,
                )
                hint = difflib.get_close_matches(name, sorted(TEMPLATE_NAMES), n=1)
                also = f"; did you mean {hint[0]!r}?" if hint else ""
                unknown.append((line, f"{name!r} (line {line}{also})"))
            if unknown:
                unknown.sort()
                found.append(
                    f"{current}:{unknown[0][0]}: unknown"
                    f" {'name' if len(unknown) == 1 else 'names'}"
                    f" {', '.join(text for _, text in unknown)}: templates read profile, event,"
                    " trigger, journey, now, today, unsubscribe_url and the expression functions"
                )
        return found

    def has_block(self, path: Path, name: str) -> bool:
        """Whether the template or a layout it extends defines the block."""
        seen: set[Path] = set()
        current: Path | None = path
        while current is not None and current not in seen:
            seen.add(current)
            tree = self._parse(current)
            if isinstance(tree, str):
                return True  # reported as not parsing
            if any(block.name == name for block in tree.find_all(nodes.Block)):
                return True
            current = next((p for how, p in self._used(current, tree) if how == "extends"), None)
            if current is not None and not (
                current.is_file() and _inside(current, self.templates_dir)
            ):
                return True  # reported as missing
        return False


def _template_files(journey: Journey, templates_dir: Path) -> dict[str, bytes]:
    """Every file this journey's messages can use: its templates' folders (images
    included), the shared layouts, and any other template they extend, include or import."""
    names = {step.send.template for step in journey.steps if isinstance(step, SendStep)}
    pending: list[Path] = []
    for folder_name in sorted(names | {LAYOUTS_DIR}):
        folder = templates_dir / folder_name
        if folder.is_dir():
            pending.extend(p for p in sorted(folder.rglob("*")) if p.is_file())
    files: dict[str, bytes] = {}
    while pending:
        path = pending.pop(0)
        relative = path.relative_to(templates_dir).as_posix()
        if path.name.startswith(".") or relative in files:
            continue
        files[relative] = path.read_bytes()
        if not _is_text(files[relative]):
            continue
        for name in _used_names(files[relative].decode()) or ():
            used = templates_dir / name
            if used.is_file() and _inside(used, templates_dir):
                pending.append(used)
    return dict(sorted(files.items()))


def _is_text(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _version(journey_text: str, files: dict[str, bytes]) -> str:
    digest = hashlib.sha256(journey_text.encode())
    for name, data in sorted(files.items()):
        digest.update(json.dumps([name, hashlib.sha256(data).hexdigest()]).encode())
    return digest.hexdigest()[:12]


def positions_for(text: str) -> Positions:
    """Positions of a journey text's nodes, for tools that annotate a file."""
    return load_with_positions(text)[1]
