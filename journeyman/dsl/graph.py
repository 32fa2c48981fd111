"""A journey as a Mermaid flowchart, for people: `journeyman graph` and the journey page.

Each step is a node labelled with its id and what it does (`wait 1h`, `send
cart_reminder via push, email, sms`); edges show where a customer can go next, with
branch conditions, split shares and wait_for outcomes on them. The goal and exits,
which can end a run at any step, stand apart as notes.

Every piece of journey text goes into a quoted label with Mermaid's entity codes for
the characters that would end or confuse it, and node ids are derived from step ids
(`[a-z0-9_]+`) with a prefix, so that a step called `end` cannot clash with the keyword.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import urlsplit

from journeyman.dsl.durations import format_duration
from journeyman.dsl.model import (
    BranchStep,
    EndStep,
    Expr,
    SendStep,
    SplitStep,
    Step,
    UpdateProfileStep,
    WaitAt,
    WaitForStep,
    WaitStep,
    WaitUntil,
    WebhookStep,
)
from journeyman.dsl.plan import Plan

ENTRY = "entry"
FINISH = "finish"
GOAL = "goal"
MAX_CONDITION = 60

_ESCAPES = {
    "#": "#35;",  # first: the other escapes start with it
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "|": "#124;",
    "`": "#96;",
    "\n": " ",
}


def mermaid(plan: Plan, annotations: Mapping[str, str] | None = None) -> str:
    """The journey as `flowchart TD` source.

    `annotations` adds a last line to the label of each step it names (by step id): the
    journey page puts the live counts there.
    """
    journey = plan.journey
    annotations = annotations or {}
    lines = ["flowchart TD"]
    entry = journey.entry
    if entry.segment is not None:
        entry_label = [f"segment: {_condition(entry.segment)}"]
        if entry.once_at is not None:
            entry_label.append(f"once at {entry.once_at.isoformat()}")
        else:
            entry_label.append(f"every {entry.every}")
    else:
        entry_label = [f"entry: {entry.event}"]
    if entry.when is not None:
        entry_label.append(f"when {_condition(entry.when)}")
    if entry.holdout:
        entry_label.append(f"holdout {_share(entry.holdout)}")
    lines.append(f"    {ENTRY}([{_label(*entry_label)}])")

    finishes = False
    edges = [_edge(ENTRY, node_id(journey.steps[0].id))]
    for step in journey.steps:
        lines.append(f"    {node_id(step.id)}{_shape(step, annotations.get(step.id))}")
        for target, label in _exits(step, plan.next[step.id]):
            finishes = finishes or target is None
            edges.append(
                _edge(node_id(step.id), FINISH if target is None else node_id(target), label)
            )
    if finishes:
        lines.append(f"    {FINISH}(({_label('end of journey')}))")
    lines.extend(edges)

    notes = []
    if journey.goal is not None:
        goal = journey.goal
        said = [f"goal: {goal.event}", *([f"when {_condition(goal.when)}"] if goal.when else [])]
        if goal.within is not None:  # the attribution window
            said.append(f"counts within {format_duration(goal.within)} of entry, even after")
        notes.append((GOAL, _label(*said)))
    for index, rule in enumerate(journey.exit):
        notes.append((f"exit_{index}", _rule("exit", rule.event, rule.when)))
    if notes:
        lines.append(f"    subgraph anytime [{_label('ends the journey at any step')}]")
        lines.extend(f"        {note}>{label}]" for note, label in notes)
        lines.append("    end")
        lines.append(f"    class {','.join(note for note, _ in notes)} note")
        lines.append("    classDef note fill:#fff8c4,stroke:#c9a800,color:#333")
    return "\n".join(lines) + "\n"


def node_id(step_id: str) -> str:
    """The Mermaid node id of a step."""
    return f"step_{step_id}"


def escape(text: str) -> str:
    """Text made safe inside a quoted Mermaid label."""
    return "".join(_ESCAPES.get(char, char) for char in text)


def describe(step: Step) -> str:
    """What a step does, in a few words."""
    match step:
        case WaitStep(wait=WaitUntil(until=clock)):
            return f"wait until {clock}"
        case WaitStep(wait=timedelta() as delta):
            return f"wait {format_duration(delta)}"
        case WaitStep(wait=WaitAt(at=expr)):
            return f"wait until {expr.text}"
        case WaitForStep(wait_for=spec):
            since = " since entry" if spec.since == "entry" else ""
            return f"wait_for {' or '.join(spec.events)}{since} ≤{format_duration(spec.timeout)}"
        case SendStep(send=spec):
            best = " at the best hour" if spec.timing == "best" else ""
            return f"send {spec.template} via {', '.join(spec.channels)}{best}"
        case BranchStep():
            return "branch"
        case SplitStep(optimize=optimize) if optimize is not None:
            return f"split, learning from {optimize.event} ≤{format_duration(optimize.within)}"
        case SplitStep():
            return "split"
        case UpdateProfileStep(update_profile=spec):
            return f"update profile: {', '.join(spec.set)}"
        case WebhookStep(webhook=spec):
            return f"webhook {spec.method} {_host(spec.url.raw)}"
        case EndStep():
            return "end"
    raise TypeError(f"unknown step {step!r}")


def _exits(step: Step, fall_through: str | None) -> list[tuple[str | None, str | None]]:
    """(target step id or None for the end of the journey, edge label) of each way out;
    `on_error` (DSL v2) adds an edge labelled "error"."""
    on_error = step.on_error or (step.wait_for.on_error if isinstance(step, WaitForStep) else None)
    found = _flow_exits(step, fall_through)
    return [*found, (on_error, "error")] if on_error else found


def _flow_exits(step: Step, fall_through: str | None) -> list[tuple[str | None, str | None]]:
    match step:
        case EndStep():
            return []
        case WaitForStep(wait_for=spec):
            if isinstance(spec.on_event, dict):
                ways: list[tuple[str | None, str | None]] = [
                    (spec.on_event.get(name) or fall_through, name) for name in spec.events
                ]
                return [*ways, (spec.on_timeout or fall_through, "timeout")]
            return [
                (spec.on_event or fall_through, "event"),
                (spec.on_timeout or fall_through, "timeout"),
            ]
        case BranchStep(branch=cases):
            found: list[tuple[str | None, str | None]] = [
                (case.goto, _condition(case.when) if case.when else "otherwise") for case in cases
            ]
            if all(case.when is not None for case in cases):
                found.append((fall_through, "otherwise"))
            return found
        case SplitStep(split=cases):
            total = sum(case.weight for case in cases)
            return [(case.goto, _share(case.weight / total)) for case in cases]
    return [(fall_through, None)]


def _shape(step: Step, annotation: str | None = None) -> str:
    label = [step.id, describe(step)] if step.name is None else [step.id, step.name, describe(step)]
    if annotation:
        label.append(annotation)
    match step:
        case BranchStep() | SplitStep():
            return f"{{{_label(*label)}}}"
        case WaitStep() | WaitForStep():
            return f"[/{_label(*label)}/]"
        case EndStep():
            return f"([{_label(*label)}])"
    return f"[{_label(*label)}]"


def _label(*lines: str) -> str:
    return '"' + "<br/>".join(escape(line) for line in lines) + '"'


def _edge(source: str, target: str, label: str | None = None) -> str:
    if label is None:
        return f"    {source} --> {target}"
    return f'    {source} -->|"{escape(label)}"| {target}'


def _condition(expr: Expr) -> str:
    text = " ".join(expr.text.split())
    return text if len(text) <= MAX_CONDITION else text[: MAX_CONDITION - 1] + "…"


def _rule(kind: str, event: str, when: Expr | None) -> str:
    return _label(f"{kind}: {event}", *([f"when {_condition(when)}"] if when else []))


def _share(fraction: float) -> str:
    return f"{round(fraction * 100, 1):g}%"


def _host(url: object) -> str:
    text = str(url)
    return urlsplit(text).hostname or text
