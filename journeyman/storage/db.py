"""Engine and sessions. One `Database` per process, built from a URL, never at import."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from journeyman.platform.private import create_private, private_dir
from journeyman.settings import STATE_DIR
from journeyman.storage.models import Base


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            # Made 0600 before SQLite opens it; its -wal and -shm files take its mode.
            path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
            if path.parent == STATE_DIR:
                private_dir(path.parent)
            create_private(path)
        kwargs: dict[str, object] = {"pool_pre_ping": True}
        if ":memory:" not in url:
            # The worker runs up to 32 activities at once, each with one session.
            kwargs.update(pool_size=10, max_overflow=40)
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)  # type: ignore[arg-type]
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """The schema of the models, stamped as the newest migration (for tests and
        throwaway databases; `journeyman.storage.migrate.upgrade` for real ones).
        tests/storage/test_migrations.py keeps the two the same."""
        from journeyman.storage import migrate

        Base.metadata.create_all(self.engine)
        migrate.stamp_head(self)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(connection: object, _record: object) -> None:
    # WAL lets the API read while the worker writes; foreign keys are off by default.
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Erased personal data is overwritten on disk, not left in free pages.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
