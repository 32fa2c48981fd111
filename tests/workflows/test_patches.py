"""workflows/patches.py lists every patch the interpreter asks for, and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import workflows.journey
import workflows.patches
from workflows.patches import BY_ID, PATCHES


def _asked() -> set[str]:
    """The ids passed to `workflow.patched(...)` anywhere in the interpreter."""
    tree = ast.parse(Path(workflows.journey.__file__).read_text())
    asked = set()
    for node in ast.walk(tree):
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
