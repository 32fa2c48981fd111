"""State files only their owner can read: `.journeyman/` (0700), keys, logs and the
SQLite databases in it (0600), created so from the first byte, never chmod-ed after."""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """`path` made if missing (0700; its parents as usual)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    return path


def create_private(path: Path) -> Path:
    """`path` as an empty file readable only by its owner, unless it exists.

    An existing file is never opened: it may be a SQLite database this process already
    has open, and closing any descriptor of a file drops every POSIX lock the process
    holds on it (SQLite's locks included), which corrupts what its connections do next
    ("disk I/O error")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    os.close(fd)
    return path


def write_private(path: Path, data: bytes | str) -> None:
    """`path` (re)written with `data`, created 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
