"""Journey files to plans: parse, validate everything, and report every problem at once.

`compile_file` reads one journey and the templates it names and returns a `Compiled`
(the frozen `Plan` the workflow runs, plus the template sources of that version) or
raises `JourneyError` listing each problem as `file:line:col: message`.

The work is shared out by concern: journeyman/dsl/problems.py places each problem and
words the model's errors, checks.py checks the step graph, events and secrets,
template_checks.py the templates; this module runs them in order and builds the plan.

The plan's version is a content hash of the journey file and of every template file it
can render, so editing a template makes a new version just as editing the journey does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from journeyman.dsl.checks import (
    check_graph,
    check_secrets,
    check_swallowed_entries,
    check_wait_for,
)
from journeyman.dsl.errors import JourneyError, Problem
from journeyman.dsl.loader import Positions, YamlSyntaxError, load_with_positions, position_of
from journeyman.dsl.model import Journey, step_action
from journeyman.dsl.plan import Plan
from journeyman.dsl.problems import Problems, read_journey, report_invalid
from journeyman.dsl.template_checks import (
    CHANNEL_FILES,
    TemplateChecker,
    check_templates,
    template_files,
)

__all__ = [
    "CHANNEL_FILES",
    "Compiled",
    "compile_dir",
    "compile_file",
    "journey_files",
    "positions_for",
    "validate",
]


@dataclass(frozen=True)
class Compiled:
    plan: Plan
    path: Path
    templates: dict[str, str] = field(default_factory=dict)  # "name/email.html" -> source
    warnings: list[Problem] = field(default_factory=list)
    # The secrets its webhooks read (`secret('CRM_TOKEN')`, from the worker's environment),
    # each with the line and column of its first use.
    secrets: dict[str, tuple[int, int]] = field(default_factory=dict)


def compile_file(
    path: Path, templates_dir: Path, checker: TemplateChecker | None = None
) -> Compiled:
    """Compile one journey file; JourneyError names every problem found. The journeys
    of one compile share a `checker`, which reads and checks each template once."""
    checker = checker or TemplateChecker(templates_dir)
    text = read_journey(path)
    name = str(path)
    try:
        data, positions = load_with_positions(text)
    except YamlSyntaxError as exc:
        raise JourneyError([Problem(name, exc.line, exc.column, exc.message)]) from None
    if not isinstance(data, dict):
        raise JourneyError([Problem(name, 1, 1, "a journey file must be a mapping of fields")])
    problems = Problems(name, positions)
    at = problems.at
    journey: Journey | None = None
    try:
        journey = Journey.model_validate(data)
    except ValidationError as exc:
        report_invalid(exc, at)
    if data.get("id") is not None and data.get("id") != path.stem:
        at(("id",), f"id {data.get('id')!r} must equal the file name {path.stem!r}")
    steps = data.get("steps")
    if isinstance(steps, list):
        check_graph(steps, at)
        check_wait_for(steps, at)
        check_templates(steps, templates_dir, at, checker)
    if journey is not None:
        check_swallowed_entries(journey, at)
    secrets = {secret: position_of(positions, loc) for secret, loc in check_secrets(data, at)}
    found = problems.one_per_place()
    errors = [p for p in found if p.severity == "error"]
    if errors or journey is None:
        raise JourneyError(found or [Problem(name, 1, 1, "journey is not valid")])
    files = template_files(journey, templates_dir, checker)
    texts = {rel: checker.text_of(rel, content) for rel, content in files.items()}
    templates = {rel: text for rel, text in texts.items() if text is not None}
    plan = Plan(
        journey=journey,
        version=_version(text, files, checker),
        next=_fall_through(journey),
        listens=_listens(journey),
    )
    return Compiled(plan=plan, path=path, templates=templates, warnings=found, secrets=secrets)


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
    checker = TemplateChecker(templates_dir)
    for path in journey_files(paths):
        try:
            result = compile_file(path, templates_dir, checker)
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
            line, column = position_of(positions_for(read_journey(result.path)), ("id",))
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


# -- the plan -----------------------------------------------------------------------


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


def _version(journey_text: str, files: dict[str, bytes], checker: TemplateChecker) -> str:
    digest = hashlib.sha256(journey_text.encode())
    for name, data in sorted(files.items()):
        digest.update(checker.digest_of(name, data))
    return digest.hexdigest()[:12]


def positions_for(text: str) -> Positions:
    """Positions of a journey text's nodes, for tools that annotate a file."""
    return load_with_positions(text)[1]
