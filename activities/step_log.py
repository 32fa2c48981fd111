"""The step log and the run rows, as the journey activities write them (`record_steps`,
`finish_run` and, since patch `perf-fold-steps`, `send` in activities/journey.py).

- Step log entries are inserted or ignored on (run id, seq): a retried or repeated call
  records each entry once.
- A run's row is closed once: only while it is `running`, so a retried close changes
  nothing. A run that ended before the router recorded its entry gets its row written
  closed (`closed_before_recorded`); the router, finding it, fills in the entry's fields.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from temporalio.exceptions import ApplicationError

from journeyman.contracts import PathEntry, RecordStepsInput
from journeyman.storage.models import JourneyRun, StepLog

# The fields a run's row copies from the record that closes it.
_RUN_FIELDS = ("run_id", "workflow_id", "journey_id", "version", "customer_id", "entry_key")


def rows(inp: RecordStepsInput) -> list[dict[str, Any]]:
    """The step log rows of the entries, numbered from `first_seq`."""
    return [
        {
            "run_id": inp.run_id,
            "seq": inp.first_seq + index,
            "journey_id": inp.journey_id,
            "version": inp.version,
            "customer_id": inp.customer_id,
            "step_id": entry.step,
            "action": entry.action,
            "detail": {
                "detail": entry.detail,
                "channel": entry.channel,
                "template": entry.template,
            },
            "at": entry.at,
        }
        for index, entry in enumerate(inp.entries)
    ]


def with_entry(record: RecordStepsInput, entry: PathEntry) -> RecordStepsInput:
    """`record` and then `entry`, a send's own (patch `perf-fold-steps`); a closing record
    ends the run at that entry's time."""
    ended_at = entry.at if record.outcome is not None else None
    return replace(record, entries=[*record.entries, entry], ended_at=ended_at)


def close_run(session: Session, run_id: str, outcome: str, ended_at: datetime) -> bool:
    """Mark the run completed with its outcome, if it is still running; True when
    this call closed it. A retry after a commit whose answer was lost finds it
    closed and changes nothing."""
    values = {"closing_run": run_id, "closing_outcome": outcome, "closing_at": ended_at}
    closed = session.execute(_CLOSE_RUN, values)
    assert isinstance(closed, CursorResult)
    return bool(closed.rowcount)


def _close_run_statement() -> Executable:
    """`close_run`'s UPDATE, on the table rather than the ORM entity and built once: the
    ORM's bulk update costs more to prepare than the statement costs to run."""
    runs = JourneyRun.__table__
    assert isinstance(runs, Table)
    return (
        update(runs)
        .where(runs.c.run_id == bindparam("closing_run"), runs.c.status == "running")
        .values(
            status="completed",
            outcome=bindparam("closing_outcome", type_=runs.c.outcome.type),
            ended_at=bindparam("closing_at", type_=runs.c.ended_at.type),
            current_step=None,
        )
    )


_CLOSE_RUN = _close_run_statement()


def closed_before_recorded(session: Session, inp: RecordStepsInput, ended_at: datetime) -> None:
    """The run ended before the router recorded its entry (it does so just after the
    start returns, and a run with nothing to wait for can end first): write the row
    closed, and the router, finding it, fills in the entry's own fields. Either order
    gives one row, closed."""
    assert inp.outcome is not None
    row = JourneyRun(
        **{name: getattr(inp, name) for name in _RUN_FIELDS},
        status="completed",
        outcome=inp.outcome,
        started_at=ended_at,
        ended_at=ended_at,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # recorded meanwhile: close it as it stands
        close_run(session, inp.run_id, inp.outcome, ended_at)


def logged_at(session: Session, run_id: str, seq: int) -> datetime | None:
    """The time of entry `seq` of the run chain `run_id` in the step log, if it is there."""
    return session.scalar(select(StepLog.at).where(StepLog.run_id == run_id, StepLog.seq == seq))


def insert_or_ignore(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert step log rows, skipping those whose (run id, seq) is there already (`ON
    CONFLICT DO NOTHING`, the same on SQLite and PostgreSQL): no error, so no
    savepoint, and a concurrent retry waits for this one's commit."""
    dialect = session.get_bind().dialect.name
    # One statement for any number of rows (executemany), on the table rather than the
    # ORM entity: compiled once per process, where a multi-row VALUES through the ORM's
    # bulk insert was compiled again for every record.
    statement = _step_log_insert(dialect)
    # Without the option, psycopg reports -1 for an INSERT's row count.
    result = session.execute(statement, rows, execution_options={"preserve_rowcount": True})
    assert isinstance(result, CursorResult)
    return result.rowcount


@functools.cache
def _step_log_insert(dialect: str) -> Executable:
    table = StepLog.__table__
    assert isinstance(table, Table)
    key = ["run_id", "seq"]
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=key)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=key)
    raise ApplicationError(
        f"the step log needs SQLite or PostgreSQL, not {dialect}",
        type="UnsupportedDatabase",
        non_retryable=True,
    )
