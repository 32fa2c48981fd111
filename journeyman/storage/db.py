"""Engine and sessions. One `Database` per process, built from a URL, never at import."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from journeyman.platform.private import create_private, private_dir
from journeyman.settings import STATE_DIR
from journeyman.storage.models import Base

# Seconds a pooled connection is used for before it is replaced (see `Database`).
POOL_RECYCLE = 1800


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            # Made 0600 before SQLite opens it; its -wal and -shm files take its mode.
            path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
            if path.parent == STATE_DIR:
                private_dir(path.parent)
            create_private(path)
        # No ping on every checkout: it was a round trip each (five a group of intake and
        # a dispatcher pass) and ~7% of the API's samples under intake load (issue 19).
        # A connection the server dropped is found out when used instead: SQLAlchemy
        # then invalidates it and every pooled connection older than it, so one
        # statement fails (`DBAPIError.connection_invalidated`) and the next checkout
        # connects afresh; intake tries a call once more on a fresh connection
        # (journeyman/events/intake.py `_accept_alone`). Connections are replaced after
        # POOL_RECYCLE seconds anyway, before servers or proxies time idle ones out.
        kwargs: dict[str, object] = {"pool_pre_ping": False, "pool_recycle": POOL_RECYCLE}
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

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a transaction: committed on success, rolled back on
        error. Cheaper than `session` where no ORM object is needed (intake's hot path)."""
        with self.engine.begin() as connection:
            yield connection

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
