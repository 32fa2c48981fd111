"""The dev state (`.journeyman/`) and SQLite databases are readable by their owner only,
from the moment they exist (a umask of 022 would have made them world-readable)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from journeyman.settings import STATE_DIR, Settings
from journeyman.storage.db import Database


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_sqlite_database_and_its_wal_are_0600(tmp_path: Path, permissive_umask: None):
    path = tmp_path / "data" / "journeyman.db"
    db = Database(f"sqlite:///{path}")
    try:
        with db.engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x TEXT)"))
            connection.execute(text("INSERT INTO t VALUES ('ana@example.com')"))
        with db.engine.connect() as connection:  # keeps the WAL and SHM open
            connection.execute(text("SELECT * FROM t")).all()
            files = [path, path.with_name("journeyman.db-wal"), path.with_name("journeyman.db-shm")]
            for file in files:
                assert file.exists(), file
                assert mode(file) == 0o600, (file, oct(mode(file)))
    finally:
        db.dispose()


def test_the_dev_state_directory_and_its_files_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, permissive_umask: None
):
    from journeyman.platform import devserver

    monkeypatch.chdir(tmp_path)
    for name in ("JOURNEYMAN_PAYLOAD_KEY", "JOURNEYMAN_WRITE_KEYS", "JOURNEYMAN_ADMIN_TOKEN"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    devserver.credentials(Settings(_env_file=None))
    state = tmp_path / STATE_DIR
    assert mode(state) == 0o700
    for file in (devserver.WRITE_KEY_FILE, devserver.ADMIN_TOKEN_FILE, devserver.PAYLOAD_KEY_FILE):
        assert mode(tmp_path / file) == 0o600, file
    db = Database(Settings(_env_file=None).database_url)
    try:
        with db.engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x TEXT)"))
        assert mode(tmp_path / STATE_DIR / "journeyman.db") == 0o600
    finally:
        db.dispose()


def test_making_a_database_private_again_keeps_this_process_sqlite_locks(tmp_path):
    """A second `Database` on a file this process has open must not touch the file:
    closing any descriptor of it drops every POSIX lock the process holds, SQLite's
    included, and the next write of the first connection fails with "disk I/O error"
    (seen with `journeyman dev`, whose API, worker and CLI helpers share a process)."""
    import sqlite3
    import subprocess
    import sys

    from journeyman.platform.private import create_private

    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # this process holds the write lock
    try:
        create_private(path)
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0); "
                "c.execute('BEGIN IMMEDIATE')",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert other.returncode != 0 and "database is locked" in other.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
