"""The journey DSL: pure parsing, validation and compilation of journey files."""

from journeyman.dsl.compiler import (
    Compiled,
    Plan,
    compile_dir,
    compile_file,
    journey_files,
    validate,
)
from journeyman.dsl.errors import JourneyError, Problem

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
