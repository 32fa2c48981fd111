"""Erasure and export of one customer's data (GDPR articles 17 and 15).

Erasure, in order:

0. a tombstone (a keyed digest, journeyman/privacy/pseudonyms.py) is written for each identity,
   with the customer rows locked: from then on routing, sends, profile updates and the
   step log write nothing for them, so work under way cannot write the real id back;
1. the customer's running journeys are terminated, so nothing more is sent;
2. their workflow executions are deleted from Temporal (histories hold event
   properties; payloads are encrypted besides, see docs/encryption.md);
3. in the database, the profile, its merged anonymous profiles, their events, outbox
   and inbox messages, consents and consent trail, send locks and cap waits are deleted; the
   delivery ledger, journey runs, step log and entry errors are kept for statistics,
   with the customer id and workflow ids replaced by a keyed pseudonym (HMAC under the
   installation's key: it leads back to no one without the key), an entry error's
   message (which may quote a value) replaced, and the ledger's attempts keeping no
   address digest;
4. an `erasures` row records that it happened (pseudonym, time, who asked);
5. the erased bytes are reclaimed: on SQLite a WAL checkpoint that truncates the WAL
   (with `secure_delete` the main file holds zeros where the rows were); on PostgreSQL
   a VACUUM of the tables touched, so no page keeps the dead rows' tuples.

Suppressions stay: they hold only digests of addresses, and a bounced or complained-of
address must not be mailed again when it comes back under a new profile.

SQLite runs with `secure_delete`, so erased rows are overwritten on disk, not merely
unlinked. docs/privacy.md says what remains, and why.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, or_, select, text, update
from sqlalchemy.orm import Session
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from journeyman.customers.identity import customer_behind
from journeyman.platform.temporal import visibility_literal
from journeyman.privacy.consent import address_hash, consents_of, rekey_suppressions, suppression
from journeyman.privacy.pseudonyms import bury
from journeyman.privacy.pseudonyms import pseudonym as keyed_pseudonym
from journeyman.storage.db import Database
from journeyman.storage.models import (
    AudienceTick,
    CapWait,
    Consent,
    ConsentChange,
    ContactConfirmation,
    Customer,
    Delivery,
    DispatchLease,
    EntryError,
    Erasure,
    Event,
    HeldEntry,
    InboxMessage,
    JourneyRun,
    OperatorAction,
    OutboxMessage,
    SendLock,
    StepLog,
    WhatsAppWindow,
)

log = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    customer_id: str
    pseudonym: str
    identities: list[str]
    runs_terminated: list[str] = field(default_factory=list)
    executions_deleted: int = 0
    # Why some histories could not be deleted (a server without the API): they stay,
    # encrypted, until the namespace's retention removes them.
    histories_note: str | None = None
    # Why erased bytes may stay on disk a while (a reader kept SQLite's WAL busy).
    storage_note: str | None = None
    rows_deleted: dict[str, int] = field(default_factory=dict)
    rows_pseudonymized: dict[str, int] = field(default_factory=dict)


# The tables erasure deletes from or rewrites: vacuumed after it on PostgreSQL.
TOUCHED_TABLES = (
    "customers",
    "events",
    "outbox",
    "consents",
    "consent_changes",
    "send_locks",
    "cap_waits",
    "held_entries",
    "deliveries",
    "journey_runs",
    "step_log",
    "entry_errors",
    "operator_actions",
    "audience_ticks",
    "contact_confirmations",
    "dispatch_leases",
    "inbox_messages",
    "whatsapp_windows",
)
# How long erasure waits for SQLite readers to let the WAL be truncated.
CHECKPOINT_TRIES = 50
CHECKPOINT_PAUSE = 0.1


def pseudonym(key: bytes, customer_id: str) -> str:
    """What the kept statistics carry instead of `customer_id` (keyed: see
    journeyman/privacy/pseudonyms.py)."""
    return keyed_pseudonym(key, customer_id)


def identities(session: Session, customer_id: str) -> list[str]:
    """The customer and every anonymous id merged into them (transitively)."""
    root = customer_behind(session, customer_id)
    if root is None:
        return []
    found = [root.id]
    frontier = [root.id]
    while frontier:
        merged = list(
            session.scalars(select(Customer.id).where(Customer.merged_into.in_(frontier)))
        )
        frontier = [m for m in merged if m not in found]
        found.extend(frontier)
    return found


async def erase(
    db: Database, client: Client, customer_id: str, requested_by: str, *, key: bytes
) -> ErasureReport | None:
    """Erase the customer; None when there is no such customer. `key` is the
    installation's pseudonym key (`pseudonyms.installation_key`). Database work runs in
    a thread, off the event loop."""
    found = await asyncio.to_thread(_find, db, customer_id, key)
    if found is None:
        return None
    ids, running, workflow_ids = found
    root = ids[0]
    report = ErasureReport(customer_id=root, pseudonym=pseudonym(key, root), identities=ids)
    for workflow_id in running:
        try:
            await client.get_workflow_handle(workflow_id).terminate("customer erased")
            report.runs_terminated.append(workflow_id)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
    await _delete_histories(client, ids, workflow_ids, report)
    await asyncio.to_thread(_finish, db, ids, report, requested_by, key)
    report.storage_note = await asyncio.to_thread(reclaim, db)
    return report


def _find(
    db: Database, customer_id: str, key: bytes
) -> tuple[list[str], list[str], set[str]] | None:
    with db.session() as session:
        ids = identities(session, customer_id)
        if not ids:
            return None
        # Locked: a run the router records meanwhile is either listed here, or recorded
        # after the tombstones, which the router checks (routing.Router._record_run).
        session.execute(select(Customer.id).where(Customer.id.in_(ids)).with_for_update())
        bury(session, key, ids, datetime.now(UTC))
        runs = list(session.scalars(select(JourneyRun).where(JourneyRun.customer_id.in_(ids))))
        running = [r.workflow_id for r in runs if r.status == "running"]
        return ids, running, {r.workflow_id for r in runs}


def _finish(
    db: Database, ids: list[str], report: ErasureReport, requested_by: str, key: bytes
) -> None:
    with db.session() as session:
        _erase_rows(session, ids, report, key)
        session.add(
            Erasure(
                pseudonym=report.pseudonym,
                requested_by=requested_by,
                at=datetime.now(UTC),
                identities=len(ids),
                runs_terminated=len(report.runs_terminated),
                executions_deleted=report.executions_deleted,
            )
        )


async def _delete_histories(
    client: Client, ids: list[str], workflow_ids: set[str], report: ErasureReport
) -> None:
    executions: set[tuple[str, str | None]] = {(w, None) for w in workflow_ids}
    try:
        for customer in ids:
            query = "CustomerId = " + visibility_literal(customer, "'")
            async for execution in client.list_workflows(query):
                executions.add((execution.id, execution.run_id))
    except RPCError as exc:
        log.warning("erasure: could not list the customer's workflows: %s", exc)
    # Deleting by id alone removes the latest run; listed run ids cover the rest.
    with_run = {w for w, r in executions if r is not None}
    targets = [(w, r) for w, r in executions if r is not None or w not in with_run]
    for workflow_id, run_id in sorted(targets, key=lambda t: (t[0], t[1] or "")):
        request = DeleteWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id or ""),
        )
        try:
            await client.workflow_service.delete_workflow_execution(request)
            report.executions_deleted += 1
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue
            if exc.status == RPCStatusCode.UNIMPLEMENTED:
                report.histories_note = (
                    "this Temporal server cannot delete executions: the histories stay, "
                    "with encrypted payloads, until the namespace's retention period ends"
                )
                return
            raise


def _erase_rows(
    session: Session, ids: list[str], report: ErasureReport, key: bytes | None = None
) -> None:
    alias = report.pseudonym
    kept = report.rows_pseudonymized
    if key is not None:
        kept["suppressions"] = _rekey_suppressions(session, ids, key)
    kept["deliveries"] = _pseudonymize_deliveries(session, ids, alias)
    workflow_ids, kept["journey_runs"] = _pseudonymize_runs(session, ids, alias)
    kept["step_log"] = _rowcount(
        session.execute(
            update(StepLog).where(StepLog.customer_id.in_(ids)).values(customer_id=alias, detail={})
        )
    )
    kept["entry_errors"] = _pseudonymize_entry_errors(session, ids, alias)
    # Operator actions on the customer's runs: the ids and the operator's words go.
    kept["operator_actions"] = _rowcount(
        session.execute(
            update(OperatorAction)
            .where(OperatorAction.workflow_id.in_(workflow_ids))
            .values(workflow_id=alias, why="(erased)")
        )
    )
    kept["audience_ticks"] = _scrub_audience_ticks(session, ids)
    _delete_rows(session, ids, report.rows_deleted, key)


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _rekey_suppressions(session: Session, ids: list[str], key: bytes) -> int:
    """A suppression of theirs stays (the address must not be mailed again), but under
    the keyed digest only: the plain digest of a number is found by trying them all."""
    held = session.scalars(select(Customer).where(Customer.id.in_(ids))).all()
    addresses = [
        (channel, address)
        for customer in held
        for channel, address in (("email", customer.email), ("sms", customer.phone))
        if address
    ]
    return rekey_suppressions(session, key, addresses)


def _pseudonymize_deliveries(session: Session, ids: list[str], alias: str) -> int:
    deliveries = session.scalars(select(Delivery).where(Delivery.customer_id.in_(ids))).all()
    for row in deliveries:
        row.customer_id = alias
        row.workflow_id = alias
        row.idempotency_key = f"{alias}/{row.id}"
        row.reason = _scrub(row.reason)
        row.failure = _scrub(row.failure)
        # Attempts name failed addresses by digest: they go, the channel and error stay.
        row.attempts = [
            {k: _scrub(v) if k == "error" else v for k, v in a.items() if k != "address"}
            for a in row.attempts or []
        ]
    return len(deliveries)


def _pseudonymize_runs(session: Session, ids: list[str], alias: str) -> tuple[set[str], int]:
    """The runs' workflow ids as they were, and how many runs were rewritten."""
    runs = session.scalars(select(JourneyRun).where(JourneyRun.customer_id.in_(ids))).all()
    workflow_ids = {run.workflow_id for run in runs}
    for index, run in enumerate(runs):
        run.customer_id = alias
        run.workflow_id = alias
        run.entry_key = str(index)
        run.trigger_message_id = None
        if run.status == "running":
            run.status = "completed"
            run.outcome = "erased"
            run.ended_at = datetime.now(UTC)
    return workflow_ids, len(runs)


def _pseudonymize_entry_errors(session: Session, ids: list[str], alias: str) -> int:
    """Entry errors count in the journey's stats; the error may quote a property's value."""
    entry_errors = session.scalars(select(EntryError).where(EntryError.customer_id.in_(ids))).all()
    for error in entry_errors:
        error.customer_id = alias
        error.message_id = f"{alias}/{error.id}"
        error.error = "(erased)"
    return len(entry_errors)


def _scrub_audience_ticks(session: Session, ids: list[str]) -> int:
    """A segment check keeps a few errors as examples, "customer: message", and a message
    may quote a trait's value: the customer's go."""
    prefixes = tuple(f"{customer_id}: " for customer_id in ids)
    scrubbed = 0
    for tick in session.scalars(select(AudienceTick).where(AudienceTick.errors > 0)):
        kept = [s for s in tick.error_samples or [] if not str(s).startswith(prefixes)]
        if len(kept) != len(tick.error_samples or []):
            tick.error_samples = kept
            scrubbed += 1
    return scrubbed


# The tables whose rows of the customer go whole, by their customer id column.
DELETED_BY_CUSTOMER = (
    (HeldEntry, HeldEntry.customer_id),
    (OutboxMessage, OutboxMessage.customer_id),
    (InboxMessage, InboxMessage.customer_id),
    (Event, Event.customer_id),
    (ConsentChange, ConsentChange.customer_id),
    (SendLock, SendLock.customer_id),
    (CapWait, CapWait.customer_id),
    (ContactConfirmation, ContactConfirmation.customer_id),
    # A dispatcher's lease on the customer (and, on PostgreSQL, the dead rows of
    # every lease it took, which the VACUUM below prunes).
    (DispatchLease, DispatchLease.customer_id),
)


def _delete_rows(
    session: Session, ids: list[str], deleted: dict[str, int], key: bytes | None
) -> None:
    for model, column in DELETED_BY_CUSTOMER:
        result = session.execute(delete(model).where(column.in_(ids)))
        deleted[model.__tablename__] = _rowcount(result)
    events = session.execute(delete(Event).where(Event.anonymous_id.in_(ids)))
    deleted["events"] += _rowcount(events)
    # When they last wrote on WhatsApp (keyed by their number's digest) goes too.
    phones = session.scalars(
        select(Customer.phone).where(Customer.id.in_(ids), Customer.phone.is_not(None))
    ).all()
    windows = session.execute(
        delete(WhatsAppWindow).where(
            WhatsAppWindow.address_hash.in_(
                [address_hash("sms", p, k) for p in phones if p for k in (None, key)]
            )
        )
    )
    deleted["whatsapp_windows"] = _rowcount(windows)
    consents = session.execute(delete(Consent).where(Consent.customer_id.in_(ids)))
    deleted["consents"] = _rowcount(consents)
    customers = session.execute(
        delete(Customer).where(or_(Customer.id.in_(ids), Customer.merged_into.in_(ids)))
    )
    deleted["customers"] = _rowcount(customers)


def reclaim(db: Database) -> str | None:
    """Leave no copy of erased rows in the database files; a note when that has to wait.

    SQLite: `secure_delete` zeroed them in the pages, but the WAL still holds the pages
    as they were until a checkpoint copies them back, and keeps its old frames until
    overwritten: `wal_checkpoint(TRUNCATE)` copies every frame and empties the file.
    It needs a moment without readers; it is tried again for a few seconds.
    PostgreSQL: deleted and updated rows stay in their pages as dead tuples until a
    VACUUM prunes them: the tables erasure touched are vacuumed now.
    """
    dialect = db.engine.dialect.name
    if dialect == "sqlite":
        for attempt in range(CHECKPOINT_TRIES):
            with db.engine.connect() as connection:
                busy = connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)")).one()[0]
            if not busy:
                return None
            if attempt < CHECKPOINT_TRIES - 1:
                time.sleep(CHECKPOINT_PAUSE)
        log.warning("erasure: the SQLite WAL stayed busy; it is truncated at the next checkpoint")
        return (
            "another connection kept the SQLite WAL busy: erased rows stay in it until "
            "the next checkpoint (automatic, or when every process has stopped)"
        )
    if dialect == "postgresql":
        autocommit = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        with autocommit as connection:
            for table in TOUCHED_TABLES:
                connection.execute(text(f"VACUUM {table}"))
    return None


def _scrub(text: str | None) -> str | None:
    """Ledger reasons name channels and provider errors; drop anything that looks like
    an address or a number, which a provider's message may quote."""
    if not text:
        return text
    text = re.sub(r"[^\s<>\"']+@[^\s<>\"']+", "[address]", text)
    return re.sub(r"\+?\d[\d\s().-]{6,}\d", "[number]", text)


# What an export shows of each row it lists, attribute by attribute (datetimes as ISO
# 8601 text); an attribute shown under another name is `attribute:name`.
CONSENT_CHANGE_FIELDS = ("scope", "name", "subscribed", "source", "detail", "at")
EVENT_FIELDS = ("type", "name:event", "properties", "timestamp", "message_id")
RUN_FIELDS = ("journey_id", "version", "status", "outcome", "started_at", "ended_at")
DELIVERY_FIELDS = (
    *("journey_id", "step_id", "template", "channel", "status"),
    *("sent_at", "delivered_at", "opened_at", "clicked_at"),
)
OUTBOX_FIELDS = ("to", "subject", "body")
INBOX_FIELDS = ("title", "body", "link", "image", "created_at", "read_at", "expires_at")
ENTRY_ERROR_FIELDS = ("journey_id", "message_id", "error", "at")


def export(session: Session, customer_id: str, key: bytes | None = None) -> dict[str, Any] | None:
    """Everything held about the customer, as JSON-ready data; None when unknown. `key`:
    the installation's, which suppressions are digested with."""
    ids = identities(session, customer_id)
    if not ids:
        return None
    root = session.get(Customer, ids[0])
    assert root is not None
    profiles = [session.get(Customer, i) for i in ids]
    held = {m.delivery_id: m for m in _of(session, OutboxMessage, ids)}
    inbox = {m.delivery_id: m for m in _of(session, InboxMessage, ids)}
    addresses = [("email", root.email), ("sms", root.phone), ("whatsapp", root.phone)] + [
        ("push", token) for token in root.push_tokens or []
    ]
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "profile": root.as_profile(),
        "merged_profiles": [
            {"id": p.id, "created_at": p.created_at.isoformat()}
            for p in profiles[1:]
            if p is not None
        ],
        "consents": consents_of(session, root.id),
        "consent_history": [
            _shown(c, CONSENT_CHANGE_FIELDS)
            for c in _of(session, ConsentChange, ids, ConsentChange.id)
        ],
        "suppressed_addresses": [
            {"channel": channel, "reason": row.reason, "since": row.created_at.isoformat()}
            for channel, address in addresses
            if address and (row := suppression(session, channel, address, key)) is not None
        ],
        "events": [
            _shown(e, EVENT_FIELDS) for e in _of(session, Event, ids, Event.timestamp, Event.id)
        ],
        "journeys": [
            _shown(r, RUN_FIELDS) for r in _of(session, JourneyRun, ids, JourneyRun.started_at)
        ],
        "messages": [
            _shown(d, DELIVERY_FIELDS)
            | (_shown(held[d.id], OUTBOX_FIELDS) if d.id in held else {})
            | ({"inbox": _shown(inbox[d.id], INBOX_FIELDS)} if d.id in inbox else {})
            for d in _of(session, Delivery, ids, Delivery.id)
        ],
        "entry_errors": [
            _shown(e, ENTRY_ERROR_FIELDS) for e in _of(session, EntryError, ids, EntryError.id)
        ],
    }


def _of(session: Session, model: Any, ids: list[str], *order: Any) -> Sequence[Any]:
    """The rows of `model` whose customer is one of `ids`, in `order`."""
    return session.scalars(select(model).where(model.customer_id.in_(ids)).order_by(*order)).all()


def _shown(row: object, fields: tuple[str, ...]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for spec in fields:
        attribute, _, name = spec.partition(":")
        value = getattr(row, attribute)
        shown[name or attribute] = value.isoformat() if isinstance(value, datetime) else value
    return shown


__all__ = ["ErasureReport", "address_hash", "erase", "export", "identities", "pseudonym"]
