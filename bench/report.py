"""docs/benchmarks.md: the run writes its blocks, and leaves the rest of the file alone.

The file holds a machine block and one block per section, each between markers
(`<!-- bench:NAME -->` ... `<!-- /bench:NAME -->`). A run replaces the blocks of the
sections it ran (with `--only`, the others keep their figures and their own dates) and
the machine block; a block not in the file yet goes before `<!-- bench:end -->`. The
findings written by hand below that marker are kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.core import Table

END = "<!-- bench:end -->"
BUDGET = 15 * 60  # seconds `make bench` must fit in on 2 cores (issue 19)

TEMPLATE = f"""# Benchmarks

How close Journeyman comes to what Temporal and the web framework can do alone, and how
its cost grows, measured side by side in one run on one machine. `make bench` runs every
section at sizes that fit 15 minutes on 2 cores; `--large` adds the sizes that do not
(`-large` blocks); `.venv/bin/python -m bench --quick` runs small sizes in a minute or
two; `--only NAME` runs one section. bench/README.md says what each section measures
and how.

Ratios are always Journeyman / baseline; the target column says which way is good.
Everything between the `bench:` markers is written by the run; the findings after
them are written by hand.

{END}

## Findings
"""


@dataclass
class SectionResult:
    name: str
    title: str
    number: int
    tables: list[Table] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def markdown(self, command: str, date: str) -> str:
        lines = [
            f"### {self.number}. {self.title}",
            "",
            f"Measured {date} by `{command}` in {self.seconds:.0f} s.",
            "",
        ]
        if self.error:
            lines += [f"**Failed:** {self.error}", ""]
        for table in self.tables:
            lines += [table.markdown(), ""]
        return "\n".join(lines).rstrip()


def took(seconds: float) -> str:
    """`754 s (12 min 34 s)`."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.0f} s ({minutes} min {rest} s)"


def machine_block(
    machine: dict[str, str],
    settings: dict[str, str],
    command: str,
    date: str,
    total: float | None = None,
    sections: list[tuple[str, float]] | None = None,
) -> str:
    """The machine, the settings, and how long the run took: in all (from the process's
    start) and per section."""
    lines = ["### Machine and settings", "", f"Last run {date}: `{command}`."]
    if total is not None:
        each = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sections or [])
        lines.append(f"It took {took(total)} in all" + (f": {each}." if each else "."))
        if command == "make bench":
            within = "within" if total <= BUDGET else "**over**"
            lines.append(f"That is {within} make bench's {BUDGET // 60} minutes on 2 cores.")
    lines.append("")
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in {**machine, **settings}.items()]
    return "\n".join(lines)


def write(path: Path, blocks: dict[str, str]) -> None:
    """Put each block (name -> markdown) into the file at `path`, creating it if need be."""
    text = path.read_text() if path.exists() else TEMPLATE
    if END not in text:
        text = text.rstrip() + f"\n\n{END}\n"
    for name, body in blocks.items():
        block = f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"
        pattern = re.compile(
            rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S
        )
        found = pattern.search(text)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.replace(END, f"{block}\n\n{END}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
