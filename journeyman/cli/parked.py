"""`journeyman events failed|retry`: events parked after failing to route."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer

from journeyman.cli.common import _count, _fail, _table, command_group, migrated_database

# -- parked events ----------------------------------------------------------------------

events_app = command_group(
    "events", "Events the dispatcher could not hand to Temporal: list them, try them again."
)


@events_app.command("failed")
def events_failed(
    limit: Annotated[int, typer.Option(help="At most this many, the oldest.")] = 100,
) -> None:
    """Parked events (10 failed hand-overs), oldest first, with their last error."""
    from journeyman.events import parked

    with migrated_database() as db, db.session() as session:
        events = parked.listing(session, limit)
        total = parked.count(session)
    if not events:
        typer.echo("no parked events")
        return
    _table(
        ["id", "parked (UTC)", "customer", "event", "message id", "attempts", "last error"],
        [
            [
                str(e.id),
                e.parked_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                e.customer_id,
                e.name or e.type,
                e.message_id,
                str(e.attempts),
                (e.last_error or "").splitlines()[0] if e.last_error else "",
            ]
            for e in events
        ],
    )
    if total > len(events):
        typer.echo(f"... and {total - len(events)} more (--limit)")
    typer.echo("`journeyman events retry ID ...` hands them over again (no ID: all of them)")


@events_app.command("retry")
def events_retry(
    ids: Annotated[
        list[str] | None,
        typer.Argument(help="Event ids or message ids, as `events failed` lists them; none: all."),
    ] = None,
) -> None:
    """Hand parked events over again: the running dispatcher takes them on its next pass."""
    from journeyman.events import parked

    with migrated_database() as db:
        result = parked.retry(db, ids or [])
    retried = " ".join(str(i) for i in result.retried)
    missing = "not parked events (unknown, or not parked): " + " ".join(result.not_parked)
    if not result.retried:
        if result.not_parked:
            _fail(missing)
        typer.echo("no parked events")
        return
    typer.echo(f"{_count(len(result.retried), 'event')} pending again: {retried}")
    if result.not_parked:
        # Those retried took effect: the command succeeds, and says what it left.
        typer.echo(missing, err=True)
