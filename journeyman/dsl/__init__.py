"""The journey DSL: pure parsing, validation and compilation of journey files.

The names below load lazily: the workflow sandbox imports `journeyman.dsl.plan` and the
expression evaluator without pulling in the compiler's YAML and template libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from journeyman.dsl.compiler import (
        Compiled,
        compile_dir,
        compile_file,
        journey_files,
        validate,
    )
    from journeyman.dsl.errors import JourneyError, Problem
    from journeyman.dsl.plan import Plan

_HOMES = {
    "Compiled": "journeyman.dsl.compiler",
    "compile_dir": "journeyman.dsl.compiler",
    "compile_file": "journeyman.dsl.compiler",
    "journey_files": "journeyman.dsl.compiler",
    "validate": "journeyman.dsl.compiler",
    "JourneyError": "journeyman.dsl.errors",
    "Problem": "journeyman.dsl.errors",
    "Plan": "journeyman.dsl.plan",
}

__all__ = [
    "Compiled",
    "JourneyError",
    "Plan",
    "Problem",
    "compile_dir",
    "compile_file",
    "journey_files",
    "validate",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
