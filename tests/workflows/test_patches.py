"""workflows/patches.py lists every patch the interpreter asks for, and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import workflows.patches
from journeyman.contracts import CURRENT_ERA
from workflows.patches import (
    BY_ID,
    FIRST_WAIT_HEARS,
    FOLD_STEPS,
    LEAN_STEPS,
    ONE_MARKER,
    PATCHES,
    RECORD_STEPS,
    without_query,
)


def _asked() -> set[str]:
    """The ids passed to `workflow.patched(...)` anywhere in the interpreter."""
    asked = set()
    nodes = (
        node
        for module in Path(workflows.patches.__file__).parent.glob("*.py")
        for node in ast.walk(ast.parse(module.read_text()))
    )
    for node in nodes:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"patched", "deprecate_patch"}
        ):
            (arg,) = node.args
            assert isinstance(arg, ast.Name), "patch ids are constants of workflows/patches.py"
            asked.add(getattr(workflows.patches, arg.id))
    return asked


def test_every_patch_the_interpreter_asks_for_is_listed_and_only_those():
    assert _asked() == set(BY_ID)
    assert len(BY_ID) == len(PATCHES)


def test_a_superseding_patch_is_itself_a_listed_patch():
    for patch in PATCHES:
        assert patch.superseded_by is None or patch.superseded_by in BY_ID


def test_every_patch_is_asked_in_one_module():
    """The eras of the interpreter are one place: workflows/eras.py asks every patch."""
    folder = Path(workflows.patches.__file__).parent
    asking = {
        module.name
        for module in folder.glob("*.py")
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in {"patched", "deprecate_patch"}
    }
    assert asking == {"eras.py"}


def test_a_run_on_a_later_patch_is_not_listed_as_lacking_an_earlier_one():
    """`perf-one-marker` runs take the patches before it unasked, without their markers,
    and `perf-fold-steps` runs take `perf-one-marker` so."""
    lean = without_query(LEAN_STEPS)
    assert f'TemporalChangeVersion != "{ONE_MARKER}"' in lean
    # record-steps -> lean-steps -> perf-one-marker -> perf-fold-steps: a run with any
    # later marker is fine.
    assert (
        f'(TemporalChangeVersion != "{RECORD_STEPS}" AND TemporalChangeVersion != '
        f'"{LEAN_STEPS}" AND TemporalChangeVersion != "{ONE_MARKER}" AND '
        f'TemporalChangeVersion != "{FOLD_STEPS}"))'
    ) in without_query(RECORD_STEPS)
    assert (
        f'(TemporalChangeVersion != "{ONE_MARKER}" AND TemporalChangeVersion != "{FOLD_STEPS}"))'
    ) in without_query(ONE_MARKER)
    assert without_query(FOLD_STEPS).endswith(
        f'(TemporalChangeVersion != "{FOLD_STEPS}")) AND (JourneyEra IS NULL OR JourneyEra < 1)'
    )


def test_a_run_of_an_era_is_not_listed_as_lacking_a_patch_the_era_takes_unasked():
    """Era 1 runs record no marker at all: a run lacks a patch only when it has no marker
    for it (nor a later one standing for it) and was not started in an era that takes it
    (`JourneyEra`, set at the start; none on runs from before eras)."""
    for patch in PATCHES:
        assert patch.era == 1, patch.id  # every patch so far: era 1 takes them all
        assert without_query(patch.id).endswith(" AND (JourneyEra IS NULL OR JourneyEra < 1)"), (
            patch.id
        )
    # Asked at a step on era 0 only, so era 1 runs never carry its marker.
    assert without_query(FIRST_WAIT_HEARS) == (
        'ExecutionStatus = "Running" AND (TemporalChangeVersion IS NULL OR '
        f'(TemporalChangeVersion != "{FIRST_WAIT_HEARS}")) AND '
        "(JourneyEra IS NULL OR JourneyEra < 1)"
    )
    assert CURRENT_ERA == 1


def test_a_patch_after_the_era_is_asked_on_every_era(monkeypatch):
    """A patch added after era 1 has no era: every run, of any era, asks it, so only its
    marker says a run took it."""
    later = workflows.patches.Patch("later-change", "something", "a commit", "start")
    monkeypatch.setitem(BY_ID, later.id, later)
    assert without_query(later.id) == (
        'ExecutionStatus = "Running" AND (TemporalChangeVersion IS NULL OR '
        '(TemporalChangeVersion != "later-change"))'
    )
