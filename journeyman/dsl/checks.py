"""What a journey means, checked beyond its shape: the step graph, events, secrets.

The model (journeyman/dsl/model.py) checks each field; these checks read the journey's
data as written, so that they run, and report, even where a field elsewhere is invalid:
step ids are unique and every jump names one; every step can be reached; no loop runs
without a wait; a default branch case comes last; `on_event` names awaited events;
`secret()` appears only in webhooks; `steps.<id>` reads a send step that can have run.
Each reports through `at` (journeyman/dsl/problems.py), at the place it is about.
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Any

from journeyman.dsl.expressions import (
    SEND_RESULT_FIELDS,
    ExpressionSyntaxError,
    compile_expression,
    compile_value,
    secrets_used,
    step_references,
)
from journeyman.dsl.model import Journey
from journeyman.dsl.problems import At, Loc

WAIT_ACTIONS = ("wait", "wait_for")

# -- the step graph -------------------------------------------------------------------


def _ref(value: Any) -> Any:
    """A step id or a jump target as written, or None for a list or a mapping: those are
    reported as the wrong type, and cannot be looked up among the ids."""
    return None if isinstance(value, list | dict) else value


def _targets(step: dict[str, Any], index: int) -> list[tuple[Loc, Any]]:
    """Every (location, step id) a step can jump to explicitly."""
    found: list[tuple[Loc, Any]] = []
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


def _error_targets(step: dict[str, Any], index: int) -> list[tuple[Loc, Any]]:
    """Where a step goes when one of its conditions fails (`on_error`, DSL v2)."""
    found: list[tuple[Loc, Any]] = []
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


def check_swallowed_entries(journey: Journey, at: At) -> None:
    """Warn where an `exit` or the `goal` is the entry event of a keyed journey: a new
    entry event for the same key is routed while the customer is still in the journey,
    so it is refused as an entry, then ends the running run: that cycle is lost."""
    entry = journey.entry
    if entry.event is None or entry.key is None:
        return
    rules: list[tuple[Loc, str, str]] = []
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


def check_wait_for(steps: list[Any], at: At) -> None:
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


def check_graph(steps: list[Any], at: At) -> None:
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


def _check_default_cases(steps: list[Any], at: At) -> None:
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


def _expressions_in(value: Any, loc: Loc, needle: str = "steps") -> list[tuple[Loc, Any]]:
    """(location, compiled tree) of every expression and templated value under `loc`;
    what does not compile is reported by the model's validation."""
    found: list[tuple[Loc, Any]] = []
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


def check_secrets(data: dict[str, Any], at: At) -> list[tuple[str, Loc]]:
    """The secrets the journey's webhooks read, in order; `secret()` anywhere else is
    an error (its value would end up in a condition's log, a profile or a message)."""
    names: list[tuple[str, Loc]] = []
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
    steps: list[dict[str, Any]], graph: dict[int, list[int]], at: At
) -> None:
    """`steps.<id>` names a send step that can have run before the step reading it, and
    one of the fields a send leaves (channel, outcome, reason)."""
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


def _check_waitless_loops(steps: list[dict[str, Any]], graph: dict[int, list[int]], at: At) -> None:
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
