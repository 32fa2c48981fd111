"""workflows/patches.py lists every patch the interpreter asks for, and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import workflows.patches
from workflows.patches import (
    BY_ID,
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
    assert without_query(RECORD_STEPS).endswith(
        f'(TemporalChangeVersion != "{RECORD_STEPS}" AND TemporalChangeVersion != '
        f'"{LEAN_STEPS}" AND TemporalChangeVersion != "{ONE_MARKER}" AND '
        f'TemporalChangeVersion != "{FOLD_STEPS}"))'
    )
    assert without_query(ONE_MARKER).endswith(
        f'(TemporalChangeVersion != "{ONE_MARKER}" AND TemporalChangeVersion != "{FOLD_STEPS}"))'
    )
    assert without_query(FOLD_STEPS).endswith(f'(TemporalChangeVersion != "{FOLD_STEPS}"))')
