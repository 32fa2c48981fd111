"""`journeyman diff OLD NEW`: what changes between two versions of a journey, and whom
it concerns.

A version is a journey file, a journey id (its file in the journeys folder, as it is
now), or `JOURNEY@VERSION`: a version registered in `journey_versions`, which holds the
plan of every version a run ever entered. Steps are matched by id: a step only in NEW
is added, one only in OLD is removed, and one in both is changed when its action, its
settings, its `goto` or the step it falls through to differ. Entry, goal, exits,
settings, name and topic are compared the same way.

Runs under way are not moved: each customer finishes the version they entered (its plan
is the run's input), so a step the new version removes still exists for them. The diff
says how many runs of OLD are running and, from Temporal's visibility (`JourneyStep`),
how many of them wait at a removed step: those finish on the old path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from journeyman.dsl.compiler import compile_file
from journeyman.dsl.durations import format_duration
from journeyman.dsl.model import (
    BranchStep,
    SendStep,
    SplitStep,
    UpdateProfileStep,
    WaitForStep,
    WaitStep,
    WebhookStep,
    step_action,
)
from journeyman.dsl.plan import Plan
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyRun, JourneyVersion

NONE = "(none)"
FINISH_NOTE = (
    "customers finish the version they entered: runs under way keep the old steps, "
    "removed ones included; only new entries take the new version"
)
# Running runs of a journey version by step: None when visibility cannot be asked.
StepCounter = Callable[[str, str], Awaitable[dict[str, int] | None]]


class DiffError(Exception):
    """A version that cannot be found; the message says what was looked for."""


@dataclass
class LiveRuns:
    """Runs of the old version under way, and where they wait."""

    running: int  # journey_runs with status running
    by_step: dict[str, int] | None  # from visibility; None: unknown
    at_removed: dict[str, int] | None  # the removed steps among them; None: unknown


@dataclass
class JourneyDiff:
    journey_id: str
    old_version: str
    new_version: str
    old_source: str = ""
    new_source: str = ""
    added: list[tuple[str, str]] = field(default_factory=list)  # (step, what it does)
    removed: list[tuple[str, str]] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # step -> what changed
    journey: list[str] = field(default_factory=list)  # entry, goal, exits, settings...
    order: tuple[list[str], list[str]] | None = None  # the kept steps' order, if it changed
    live: LiveRuns | None = None
    templates: list[str] = field(default_factory=list)  # template files added, removed, edited

    @property
    def unchanged(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.changed
            or self.journey
            or self.order
            or self.templates
        )

    def as_json(self) -> dict[str, Any]:
        live = self.live
        return {
            "journey_id": self.journey_id,
            "old": {"version": self.old_version, "source": self.old_source},
            "new": {"version": self.new_version, "source": self.new_source},
            "added": [{"step": s, "does": d} for s, d in self.added],
            "removed": [{"step": s, "does": d} for s, d in self.removed],
            "changed": self.changed,
            "journey": self.journey,
            "order": None if self.order is None else {"old": self.order[0], "new": self.order[1]},
            "templates": self.templates,
            "live": None
            if live is None
            else {
                "running": live.running,
                "by_step": live.by_step,
                "at_removed_steps": live.at_removed,
                "note": FINISH_NOTE,
            },
        }

    def lines(self) -> list[str]:
        old = f"{self.old_version}" + (f" ({self.old_source})" if self.old_source else "")
        new = f"{self.new_version}" + (f" ({self.new_source})" if self.new_source else "")
        lines = [f"{self.journey_id}: version {old} → {new}"]
        if self.unchanged:
            lines.append("no changes" if self.old_version != self.new_version else "same version")
        if self.added:
            lines += ["", "steps added"] + [f"  + {s}: {d}" for s, d in self.added]
        if self.removed:
            lines += ["", "steps removed"] + [f"  - {s}: {d}" for s, d in self.removed]
        if self.changed:
            lines += ["", "steps changed"]
            lines += [f"  ~ {s}: {c}" for s, changes in self.changed.items() for c in changes]
        if self.order is not None:
            lines += ["", "step order: " + ", ".join(self.order[0])]
            lines += ["        now: " + ", ".join(self.order[1])]
        if self.journey:
            lines += ["", "journey"] + [f"  ~ {c}" for c in self.journey]
        if self.templates:
            lines += ["", "templates"] + [f"  {c}" for c in self.templates]
        if self.live is not None:
            lines += ["", *self._live_lines()]
        return lines

    def _live_lines(self) -> list[str]:
        live = self.live
        assert live is not None
        if not live.running:
            return [f"live runs of version {self.old_version}: none running"]
        lines = [f"live runs of version {self.old_version}: {live.running:,} running"]
        removed = [step for step, _ in self.removed]
        if live.at_removed is None:
            lines.append(
                "  at steps the new version removes: unknown (Temporal's visibility "
                "cannot be reached)"
                if removed
                else "  none can wait at a removed step: the new version removes no step"
            )
        elif not removed:
            lines.append("  none can wait at a removed step: the new version removes no step")
        else:
            waiting = sum(live.at_removed.values())
            at = ", ".join(f"{step} {n:,}" for step, n in live.at_removed.items())
            lines.append(f"  waiting at steps the new version removes: {waiting:,} ({at})")
        lines.append(f"  note: {FINISH_NOTE}")
        return lines


# -- loading --------------------------------------------------------------------------


def load_version(
    spec: str, *, journeys_dir: Path, templates_dir: Path, db: Database | None
) -> tuple[Plan, str]:
    """The plan named by `spec` and where it came from: a file, `JOURNEY@VERSION` from
    the database, or a journey id (its file in `journeys_dir`). Compiling raises
    `JourneyError`."""
    given = Path(spec)
    if given.is_file():
        return compile_file(given, templates_dir).plan, str(given)
    if "@" in spec:
        journey_id, version = spec.split("@", 1)
        if db is None:
            raise DiffError(f"{spec}: registered versions need the database")
        with db.session() as session:
            row = session.get(JourneyVersion, {"journey_id": journey_id, "version": version})
            if row is None:
                known = session.scalars(
                    select(JourneyVersion.version)
                    .where(JourneyVersion.journey_id == journey_id)
                    .order_by(JourneyVersion.created_at)
                ).all()
                hint = f"registered: {', '.join(known)}" if known else "none is registered"
                raise DiffError(f"no version {version!r} of journey {journey_id!r} ({hint})")
            return Plan.model_validate(row.plan), "registered"
    for suffix in (".yaml", ".yml"):
        candidate = journeys_dir / f"{spec}{suffix}"
        if candidate.is_file():
            return compile_file(candidate, templates_dir).plan, str(candidate)
    raise DiffError(
        f"{spec!r} is not a file, not JOURNEY@VERSION, and there is no {journeys_dir / spec}.yaml"
    )


def load_templates(
    spec: str, *, journeys_dir: Path, templates_dir: Path, db: Database | None
) -> dict[str, str]:
    """The template sources of the version `spec` names (as `load_version` reads it):
    a file's as they are now, a registered version's as they were registered."""
    given = Path(spec)
    if given.is_file():
        return compile_file(given, templates_dir).templates
    if "@" in spec and db is not None:
        journey_id, version = spec.split("@", 1)
        with db.session() as session:
            row = session.get(JourneyVersion, {"journey_id": journey_id, "version": version})
            return dict(row.templates) if row is not None else {}
    for suffix in (".yaml", ".yml"):
        candidate = journeys_dir / f"{spec}{suffix}"
        if candidate.is_file():
            return compile_file(candidate, templates_dir).templates
    return {}


# -- comparing ------------------------------------------------------------------------


def template_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The template files a version renders that were added, removed or edited, in
    words (`~ abandoned_cart/email.html: 2 lines changed`)."""
    import difflib

    out = [f"+ {name}: added" for name in sorted(new.keys() - old.keys())]
    out += [f"- {name}: removed" for name in sorted(old.keys() - new.keys())]
    for name in sorted(old.keys() & new.keys()):
        if old[name] == new[name]:
            continue
        before, after = old[name].splitlines(), new[name].splitlines()
        matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
        edited = sum(
            max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"
        )
        first = next(
            (after[j] for tag, _, _, j, _ in matcher.get_opcodes() if tag in ("replace", "insert")),
            "",
        ).strip()
        shown = f' (now: "{first[:60]}")' if first else ""
        out.append(f"~ {name}: {edited or 1} line{'s' if edited != 1 else ''} changed{shown}")
    return out


def diff_plans(old: Plan, new: Plan) -> JourneyDiff:
    """Steps added, removed and changed, and the journey-wide changes, OLD to NEW."""
    result = JourneyDiff(old.journey.id, old.version, new.version)
    if old.journey.id != new.journey.id:
        result.journey.append(f"id {old.journey.id} → {new.journey.id}")
    before = {step.id: step for step in old.journey.steps}
    after = {step.id: step for step in new.journey.steps}
    result.added = [(s.id, describe(s)) for s in new.journey.steps if s.id not in before]
    result.removed = [(s.id, describe(s)) for s in old.journey.steps if s.id not in after]
    for step_id, step in after.items():
        if step_id in before:
            changes = step_changes(before[step_id], step, old.next[step_id], new.next[step_id])
            if changes:
                result.changed[step_id] = changes
    kept_old = [s for s in before if s in after]
    kept_new = [s for s in after if s in before]
    if kept_old != kept_new:
        result.order = (kept_old, kept_new)
    old_rest = as_written(old.journey.model_dump(mode="json", exclude={"id", "steps"}))
    new_rest = as_written(new.journey.model_dump(mode="json", exclude={"id", "steps"}))
    result.journey += _changes(_flatten(old_rest), _flatten(new_rest))
    return result


async def live_runs(
    db: Database, plan: Plan, removed: list[str], steps: StepCounter | None
) -> LiveRuns:
    """Running runs of `plan`'s version: the count from `journey_runs`, and by step from
    `steps` (Temporal's visibility), which is not asked when none is running."""
    with db.session() as session:
        running = session.scalar(
            select(func.count())
            .select_from(JourneyRun)
            .where(
                JourneyRun.journey_id == plan.journey.id,
                JourneyRun.version == plan.version,
                JourneyRun.status == "running",
            )
        )
    running = running or 0
    by_step = None
    if running and steps is not None:
        by_step = await steps(plan.journey.id, plan.version)
    at_removed = None if by_step is None else {s: by_step.get(s, 0) for s in removed}
    return LiveRuns(running, by_step, at_removed)


def describe(step: Any) -> str:
    """What a step does, in a few words: `send reminder via [email, sms]`."""
    match step:
        case WaitStep():
            return f"wait {_fmt(as_written(_dump(step)))}"
        case WaitForStep():
            spec = step.wait_for
            timeout = _fmt(as_written(_dump(step)["timeout"]))
            return f"wait_for {' | '.join(spec.events)} (timeout {timeout})"
        case SendStep():
            return f"send {step.send.template} via {_fmt(list(step.send.channels))}"
        case BranchStep():
            return f"branch ({len(step.branch)} cases)"
        case SplitStep():
            return "split " + " / ".join(f"{c.goto} {c.weight:g}" for c in step.split)
        case UpdateProfileStep():
            return "update_profile " + ", ".join(step.update_profile.set)
        case WebhookStep():
            return f"webhook {step.webhook.method} {step.webhook.url.raw}"
    return step_action(step) or "?"


def step_changes(old: Any, new: Any, old_next: str | None, new_next: str | None) -> list[str]:
    """What changed in one step, each as `what old → new`."""
    old_action, new_action = step_action(old), step_action(new)
    changes: list[str] = []
    if old_action != new_action:
        changes.append(f"{describe(old)} → {describe(new)}")
    elif isinstance(old, WaitStep):
        before, after = as_written(_dump(old)), as_written(_dump(new))
        if before != after:
            changes.append(f"wait {_fmt(before)} → {_fmt(after)}")
    else:
        assert old_action is not None
        before = _flatten(as_written(_dump(old)), old_action)
        after = _flatten(as_written(_dump(new)), new_action or "")
        changes += _changes(before, after)
    if isinstance(old, SplitStep) and isinstance(new, SplitStep) and old.optimize != new.optimize:
        changes.append(f"optimize {_optimize(old)} → {_optimize(new)}")
    if old.name != new.name:
        changes.append(f"name {_fmt(old.name)} → {_fmt(new.name)}")
    if old.on_error != new.on_error:
        changes.append(
            f"on_error {old.on_error or '(outcome error)'} → {new.on_error or '(outcome error)'}"
        )
    if old.goto != new.goto:
        changes.append(f"goto {old.goto or '(next step)'} → {new.goto or '(next step)'}")
    elif old_next != new_next and old_action == new_action:
        changes.append(f"then {old_next or '(end)'} → {new_next or '(end)'}")
    return changes


def _optimize(step: SplitStep) -> str:
    """A split's `optimize`, as `order_placed within 7d`, or `(none)`."""
    spec = step.optimize
    return "(none)" if spec is None else f"{spec.event} within {format_duration(spec.within)}"


def _dump(step: Any) -> Any:
    """The step's action alone, as JSON data."""
    action = step_action(step)
    return step.model_dump(mode="json")[action] if action else {}


def as_written(value: Any) -> Any:
    """JSON data with compiled expressions and values back as written."""
    if isinstance(value, dict):
        if set(value) == {"text", "tree", "needs_activity"}:
            return value["text"]
        if set(value) == {"raw", "tree", "needs_activity"}:
            return value["raw"]
        return {k: as_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_written(v) for v in value]
    return value


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as `{"send channels": [...]}`; lists and scalars are leaves."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix} {key}".strip()))
        return flat
    return {prefix: value}


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """`key old → new` for each leaf that differs; lists of cases (branch, split, exit)
    of the same length are compared case by case (`branch #1 goto a → b`)."""
    changes = []
    for key in dict.fromkeys([*before, *after]):
        old: Any = before.get(key)
        new: Any = after.get(key)
        if old == new:
            continue
        if _cases(old) and _cases(new) and len(old) == len(new):
            for n, (a, b) in enumerate(zip(old, new, strict=True), start=1):
                changes += _changes(_flatten(a, f"{key} #{n}"), _flatten(b, f"{key} #{n}"))
            continue
        changes.append(f"{key} {_fmt(old)} → {_fmt(new)}")
    return changes


def _cases(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _fmt(value: Any) -> str:
    """`[email, sms]`, `until 09:00`, `(none)`: values as a marketer writes them."""
    if value is None or value == [] or value == {}:
        return NONE
    if isinstance(value, list):
        joint = "; " if any(isinstance(v, dict) for v in value) else ", "
        return "[" + joint.join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
