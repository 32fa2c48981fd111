"""The benchmark sections, in the order `python -m bench` runs them.

Each is a module here with `NAME` (for `--only`), `TITLE`, and
`async def run(ctx: bench.core.Context) -> list[bench.core.Table]`. To add a
comparison, add its module and its name to `SECTIONS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SECTIONS = ["interpreter", "intake", "latency", "scale", "segment", "optimize", "intake-postgres"]


def load(name: str) -> ModuleType:
    if name not in SECTIONS:
        raise KeyError(name)
    return importlib.import_module(f"bench.sections.{name.replace('-', '_')}")
