"""Problems found in a journey, each with the place it was found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# An error stops the journey from compiling; a warning is printed and the journey runs.
Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong (or worth a warning) in a journey file, at 1-based line and column."""

    file: str
    line: int
    column: int
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.column}: {prefix}{self.message}"


class JourneyError(Exception):
    """A journey that cannot be compiled; `problems` lists every error found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
