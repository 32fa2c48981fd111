"""What is live: the publish log (`releases`) and the processes that follow it.

The database, not the journey files a process was started with, says which version of
each journey new customers enter. `journeyman deploy` (and `POST /v1/deploy`, and
`journeyman dev` on every saved edit) compiles the files and, in one transaction,
registers the new versions and appends a release row per journey that changes; a
journey whose file is gone, or that says `enabled: false`, gets a row with `enabled`
false and takes no new entries (its history and running runs stay). `rollback`
appends a row making an earlier version live again. Nothing is ever deleted.

Every API process (its router and dispatcher) and every worker runs a `Follower`: it
reads the newest release id every `POLL_SECONDS` and, when it moved, loads the live
catalog from the database and swaps it in (the worker syncs the segment schedules).
docs/journeys.md has the figures behind choosing a poll over PostgreSQL LISTEN/NOTIFY.

A running customer keeps the version they entered: the plan is the run's input.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from journeyman.dsl.compiler import Compiled
from journeyman.dsl.plan import Plan
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyRun, JourneyVersion, Release

if TYPE_CHECKING:
    from journeyman.events.routing import Catalog

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
FIRST_START = "first start"


class ReleaseError(Exception):
    """A rollback or release that cannot be made; the message says why."""


def default_author() -> str:
    """Who publishes when `--by` is not given: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")


def is_enabled(plan: Plan) -> bool:
    """`enabled: false` in the journey file switches it off (the DSL's default is on)."""
    return bool(getattr(plan.journey, "enabled", True))


# -- reading ---------------------------------------------------------------------------


def live_releases(session: Session) -> dict[str, Release]:
    """Each journey's live release (its newest row), by journey id."""
    newest = (
        select(Release.journey_id, func.max(Release.id).label("id"))
        .group_by(Release.journey_id)
        .subquery()
    )
    rows = session.scalars(select(Release).join(newest, Release.id == newest.c.id))
    return {row.journey_id: row for row in rows}


def latest_id(db: Database) -> int:
    """The newest release id (0: nothing was ever published): what followers poll."""
    with db.session() as session:
        return session.scalar(select(func.max(Release.id))) or 0


def history(db: Database, journey_id: str | None = None, limit: int = 100) -> list[Release]:
    """The publish log, newest first."""
    query = select(Release).order_by(Release.id.desc()).limit(limit)
    if journey_id is not None:
        query = query.where(Release.journey_id == journey_id)
    with db.session() as session:
        return list(session.scalars(query))


def live_compiled(db: Database) -> list[Compiled]:
    """The live, enabled versions with their templates, as the router serves them."""
    with db.session() as session:
        live = [r for r in live_releases(session).values() if r.enabled]
        out = []
        for release in sorted(live, key=lambda r: r.journey_id):
            row = session.get(
                JourneyVersion, {"journey_id": release.journey_id, "version": release.version}
            )
            if row is None:  # not possible through `publish`; a hand-edited database
                log.error("release %s of %s has no stored version", release.id, release.journey_id)
                continue
            out.append(
                Compiled(
                    plan=Plan.model_validate(row.plan),
                    path=Path(f"{release.journey_id}.yaml"),
                    templates=dict(row.templates),
                )
            )
        return out


def live_off(db: Database) -> list[Plan]:
    """The journeys switched off, at the version last live: the entries they pass by
    are counted ("journey off")."""
    with db.session() as session:
        off = [r for r in live_releases(session).values() if not r.enabled]
        plans = []
        for release in sorted(off, key=lambda r: r.journey_id):
            row = session.get(
                JourneyVersion, {"journey_id": release.journey_id, "version": release.version}
            )
            if row is not None:
                plans.append(Plan.model_validate(row.plan))
        return plans


def live_catalog(db: Database) -> Catalog:
    """What the router serves: the live journeys, and those switched off."""
    from journeyman.events.catalog import registered_listens
    from journeyman.events.routing import Catalog

    return Catalog(live_compiled(db), off=live_off(db), listened=registered_listens(db))


# -- planning a deploy -----------------------------------------------------------------


@dataclass
class Change:
    """What a deploy does to one journey."""

    journey_id: str
    old_version: str | None  # live before (None: new journey)
    old_enabled: bool
    new_version: str
    enabled: bool
    lines: list[str] = field(default_factory=list)  # what changes, in words
    running: int = 0  # runs under way on the old version
    at_removed: dict[str, int] | None = None  # of them, waiting at removed steps
    removed_steps: list[str] = field(default_factory=list)
    compiled: Compiled | None = None  # None: switched off because its file is gone

    def headline(self) -> str:
        if self.old_version is None:
            return f"{self.journey_id}: new journey, version {self.new_version}" + (
                "" if self.enabled else " (enabled: false, takes no entries)"
            )
        if not self.enabled:
            why = "file deleted" if self.compiled is None else "enabled: false"
            return f"{self.journey_id}: switched off ({why}); takes no new entries"
        if not self.old_enabled and self.old_version == self.new_version:
            return f"{self.journey_id}: switched on again, version {self.new_version}"
        return f"{self.journey_id}: version {self.old_version} → {self.new_version}"

    def as_json(self) -> dict[str, Any]:
        return {
            "journey_id": self.journey_id,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "enabled": self.enabled,
            "summary": self.headline(),
            "changes": self.lines,
            "running": self.running,
            "removed_steps": self.removed_steps,
            "waiting_at_removed_steps": self.at_removed,
        }


def plan_deploy(db: Database, compiled: list[Compiled]) -> list[Change]:
    """The changes publishing `compiled` (every journey file) would make, by journey id."""
    from journeyman.insight import diff as jdiff

    by_id = {c.plan.journey.id: c for c in compiled}
    changes: list[Change] = []
    with db.session() as session:
        live = live_releases(session)
        for journey_id in sorted({*by_id, *live}):
            release = live.get(journey_id)
            new = by_id.get(journey_id)
            if new is None:
                if release is None or not release.enabled:
                    continue  # gone and already off
                changes.append(
                    Change(journey_id, release.version, True, release.version, False, [])
                )
                changes[-1].running = _running(session, journey_id, release.version)
                continue
            enabled = is_enabled(new.plan)
            if (
                release is not None
                and release.version == new.plan.version
                and release.enabled == enabled
            ):
                continue
            change = Change(
                journey_id,
                release.version if release else None,
                release.enabled if release else False,
                new.plan.version,
                enabled,
                compiled=new,
            )
            if release is not None and release.version != new.plan.version:
                old = session.get(
                    JourneyVersion, {"journey_id": journey_id, "version": release.version}
                )
                if old is not None:
                    result = jdiff.diff_plans(Plan.model_validate(old.plan), new.plan)
                    result.templates = jdiff.template_changes(dict(old.templates), new.templates)
                    change.lines = result.lines()[1:]
                    change.removed_steps = [step for step, _ in result.removed]
                change.running = _running(session, journey_id, release.version)
            changes.append(change)
    return changes


def _running(session: Session, journey_id: str, version: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(JourneyRun)
            .where(
                JourneyRun.journey_id == journey_id,
                JourneyRun.version == version,
                JourneyRun.status == "running",
            )
        )
        or 0
    )


StepCounter = Callable[[str, str], Awaitable[dict[str, int] | None]]


async def count_at_removed(changes: list[Change], steps: StepCounter) -> None:
    """Fill in how many runs wait at the steps each change removes (Temporal's
    visibility; left unknown, None, when it cannot be asked)."""
    for change in changes:
        if change.running and change.removed_steps and change.old_version is not None:
            by_step = await steps(change.journey_id, change.old_version)
            if by_step is not None:
                change.at_removed = {s: by_step.get(s, 0) for s in change.removed_steps}


def change_lines(changes: list[Change]) -> list[str]:
    """`journeyman deploy`'s account of what it publishes, per journey, in words."""
    if not changes:
        return ["nothing to publish: the live release is the same as these files"]
    out: list[str] = []
    for change in changes:
        out.append(change.headline())
        out += [f"  {line}" if line else "" for line in change.lines if line]
        if change.old_version is not None and change.running:
            line = f"  runs under way on {change.old_version}: {change.running:,}"
            if change.removed_steps:
                if change.at_removed is None:
                    line += " (how many wait at removed steps: unknown)"
                else:
                    waiting = sum(change.at_removed.values())
                    at = ", ".join(f"{s} {n:,}" for s, n in change.at_removed.items())
                    line += f", {waiting:,} waiting at steps this removes ({at})"
            out.append(line + "; they finish the version they entered")
    return out


# -- writing ---------------------------------------------------------------------------


def publish(
    db: Database,
    changes: list[Change],
    by: str,
    message: str = "",
    *,
    only_if_empty: bool = False,
) -> list[Release]:
    """Make `changes` live in one transaction: the new versions are registered with
    their templates and a release row is appended per journey. `only_if_empty`: only
    if nothing was ever published (processes starting together on an empty database
    publish once, not once each); nothing is done otherwise."""
    made: list[Release] = []
    with db.session() as session:
        if only_if_empty:
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                session.execute(text("LOCK TABLE releases IN SHARE ROW EXCLUSIVE MODE"))
            if session.scalar(select(func.count()).select_from(Release)):
                return []
        for change in changes:
            if change.compiled is not None:
                plan = change.compiled.plan
                key = {"journey_id": plan.journey.id, "version": plan.version}
                if session.get(JourneyVersion, key) is None:
                    session.add(
                        JourneyVersion(
                            **key,
                            plan=plan.model_dump(mode="json"),
                            templates=change.compiled.templates,
                        )
                    )
            release = Release(
                journey_id=change.journey_id,
                version=change.new_version,
                enabled=change.enabled,
                by=by,
                message=message,
            )
            session.add(release)
            made.append(release)
    return made


def rollback(
    db: Database, journey_id: str, version: str | None, by: str, message: str = ""
) -> Release:
    """Make an earlier version live again: `version`, else the one live before the
    current one. Raises ReleaseError when there is none."""
    with db.session() as session:
        rows = list(
            session.scalars(
                select(Release).where(Release.journey_id == journey_id).order_by(Release.id.desc())
            )
        )
        if not rows:
            raise ReleaseError(f"journey {journey_id!r} was never published")
        current = rows[0]
        if version is None:
            earlier = [r.version for r in rows if r.version != current.version]
            if not earlier:
                raise ReleaseError(
                    f"{journey_id} has no version before {current.version} to roll back to"
                )
            version = earlier[0]
        elif session.get(JourneyVersion, {"journey_id": journey_id, "version": version}) is None:
            known = session.scalars(
                select(JourneyVersion.version)
                .where(JourneyVersion.journey_id == journey_id)
                .order_by(JourneyVersion.created_at)
            ).all()
            raise ReleaseError(
                f"no version {version!r} of {journey_id} (known: {', '.join(known) or 'none'})"
            )
        if current.version == version and current.enabled:
            raise ReleaseError(f"{journey_id} version {version} is already live")
        release = Release(
            journey_id=journey_id,
            version=version,
            enabled=True,
            by=by,
            message=message or f"rollback from {current.version}",
        )
        session.add(release)
    return release


def release_line(release: Release) -> str:
    at = release.at.strftime("%Y-%m-%d %H:%M:%S UTC")
    state = "live" if release.enabled else "off"
    text = f"{at}  {release.journey_id}  {release.version}  {state}  by {release.by}"
    return text + (f"  — {release.message}" if release.message else "")


def release_json(release: Release) -> dict[str, Any]:
    return {
        "id": release.id,
        "journey_id": release.journey_id,
        "version": release.version,
        "enabled": release.enabled,
        "at": release.at.isoformat(),
        "by": release.by,
        "message": release.message,
    }


# -- starting and following ------------------------------------------------------------


def on_start(db: Database, compiled: list[Compiled], who: str) -> Catalog:
    """What a starting process serves: the live release. Only on a database where
    nothing was ever published are the files published first (a fresh install needs no
    extra step); otherwise files that differ from the live release are named in one log
    line and not published (an old image restarted must never roll a journey back)."""
    if latest_id(db) == 0:
        changes = plan_deploy(db, compiled)
        try:
            if changes and publish(db, changes, by=who, message=FIRST_START, only_if_empty=True):
                log.info("published the journey files on an empty database: %d", len(changes))
        except OperationalError:
            # SQLite: another process starting at the same moment published first (its
            # write ended our read snapshot); what it published is served.
            if latest_id(db) == 0:
                raise
    else:
        differing = [c.journey_id for c in plan_deploy(db, compiled)]
        if differing:
            log.warning(
                "journey files differ from the live release (%s): serving the live release; "
                "`journeyman deploy` publishes the files",
                ", ".join(differing),
            )
    return live_catalog(db)


def start_catalog(db: Database, journeys_dir: Path, templates_dir: Path, who: str) -> Catalog:
    """`on_start` with the files of a starting API or worker. Files with errors stop
    the start only on an empty database (there is nothing else to serve); otherwise
    the live release is served and the errors are named in one log line."""
    from journeyman.dsl import JourneyError
    from journeyman.dsl.compiler import compile_dir

    try:
        compiled = compile_dir(journeys_dir, templates_dir)
    except JourneyError as exc:
        if latest_id(db) == 0:
            raise
        log.warning(
            "journey files have errors (%s): serving the live release",
            "; ".join(str(p) for p in exc.problems[:3]) + ("; …" if len(exc.problems) > 3 else ""),
        )
        return live_catalog(db)
    return on_start(db, compiled, who)


Apply = Callable[["Catalog"], Awaitable[None]]


class Follower:
    """Polls the newest release id; on a change, hands the live catalog to `apply`."""

    def __init__(
        self, db: Database, apply: Apply, *, interval: float = POLL_SECONDS, seen: int | None = None
    ) -> None:
        self.db = db
        self.apply = apply
        self.interval = interval
        self.seen = seen

    async def run(self) -> None:
        if self.seen is None:
            self.seen = await asyncio.to_thread(latest_id, self.db)
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # a database hiccup: try again at the next poll
                log.exception("following releases: check failed; trying again")

    async def check(self) -> bool:
        """Load and apply the live release if it moved since last seen; whether it did."""
        newest = await asyncio.to_thread(latest_id, self.db)
        if newest == self.seen:
            return False
        catalog = await asyncio.to_thread(live_catalog, self.db)
        await self.apply(catalog)
        self.seen = newest
        versions = ", ".join(f"{p.journey.id} {p.version}" for p in catalog.plans)
        log.info("release %d is live: %s", newest, versions or "no journeys")
        return True

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        """Follow from the release live now while the block runs."""
        if self.seen is None:
            self.seen = await asyncio.to_thread(latest_id, self.db)
        task = asyncio.create_task(self.run(), name="journeyman-releases")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
