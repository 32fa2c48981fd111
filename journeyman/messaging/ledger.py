"""The delivery ledger: one row per step visit's send, the send activity's memory.

A row is claimed `pending` (it then holds a frequency-cap slot, and while the send waits
for its provider's pace, its slot in it), goes `sending` just before an external
provider call (`claim_for_provider`, committed before the call) and ends `sent`,
`skipped`, `failed` or `unknown`. A retried attempt reads the row first and returns
what it recorded; two attempts at once take turns on the row (`row_locked`).

Failed tries are kept in `attempts`, naming the address only by its keyed digest
(`failed_try`): the ledger keeps no personal data, and the channel choice leaves those
addresses out of the next decision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from journeyman.contracts import SendInput, SendOutcome
from journeyman.messaging import caps
from journeyman.messaging.channels import Candidate, address_digest
from journeyman.messaging.reasons import NotSent
from journeyman.storage.models import Delivery

Final = Literal["sent", "skipped", "failed", "unknown"]
FINAL_STATUSES: tuple[Final, ...] = ("sent", "skipped", "failed", "unknown")
# The fields a ledger row copies from the send it records.
_SEND_FIELDS = ("idempotency_key", "workflow_id", "journey_id", "version", "step_id", "template")


def row_locked(session: Session, key: str) -> Delivery | None:
    """The ledger row of a send, held for the rest of the transaction: two attempts of
    one send (a retry after a heartbeat timeout while the first still runs, on another
    worker) take turns, and the second sees what the first decided. PostgreSQL: a row
    lock (`FOR UPDATE`). SQLite: the database's write lock, taken before the read (its
    driver starts a transaction only at the first write, so a plain read could be stale
    by the time the row is updated)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE deliveries SET id = id WHERE 0"))
    return session.scalar(select(Delivery).where(Delivery.idempotency_key == key).with_for_update())


def row(session: Session, key: str) -> Delivery | None:
    return session.scalar(select(Delivery).where(Delivery.idempotency_key == key))


def claim(session: Session, inp: SendInput, customer_id: str, now: datetime) -> Delivery | None:
    """Insert the ledger row for this step visit, `pending`; None when one exists
    already. The send no longer waits for a frequency-cap slot: it holds one."""
    delivery: Delivery | None = Delivery(
        **{name: getattr(inp, name) for name in _SEND_FIELDS},
        customer_id=customer_id,
        channel=None,
        status="pending",
        decided_at=now,
        attempts=[],
    )
    try:
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        delivery = None
    caps.release(session, inp.idempotency_key)
    return delivery


def claim_for_provider(session: Session, delivery: Delivery, token: str, provider: str) -> bool:
    """`pending` -> `sending` for this attempt, as one conditional UPDATE: it changes the
    row only while it is still `pending`, so of two attempts at most one holds the
    provider call, whatever the isolation level. False: another attempt claimed it."""
    session.flush()
    claimed = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.status == "pending")
        .values(status="sending", attempt_token=token, provider=provider)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.expire(delivery)
        return False
    delivery.status, delivery.attempt_token, delivery.provider = "sending", token, provider
    return True


def record_unsent(
    session: Session, inp: SendInput, delivery: Delivery | None, unsent: NotSent
) -> SendOutcome:
    """Record a send that did not go out, once; return what was recorded."""
    if delivery is None:
        delivery = claim(session, inp, inp.customer_id, inp.context.now)
        if delivery is None:
            earlier = recorded(session, inp.idempotency_key)
            assert earlier is not None
            return earlier
    delivery.status = unsent.status
    delivery.reason = unsent.reason
    return outcome(delivery)


def recorded(session: Session, key: str) -> SendOutcome | None:
    """The outcome recorded for a send that has ended, None while it has not."""
    delivery = row(session, key)
    if delivery is None or delivery.status not in FINAL_STATUSES:
        return None
    return outcome(delivery)


def outcome(delivery: Delivery) -> SendOutcome:
    """What the row says of its send, as the activity returns it."""
    return SendOutcome(
        **{name: getattr(delivery, name) for name in ("status", "channel", "reason")},
        delivery_id=delivery.id,
    )


def in_flight(delivery: Delivery) -> SendOutcome:
    """A row found `sending`: the attempt that held the provider call stopped during it.
    Whether the provider got the message cannot be known, so it is not sent again."""
    delivery.status = "unknown"
    delivery.reason = (
        f"{delivery.channel}: the worker stopped during the provider call; "
        "not sent again, to never send twice"
    )
    return outcome(delivery)


def mine(session: Session, key: str, token: str) -> Delivery | None:
    """The ledger row, if the attempt `token` still holds its provider call."""
    delivery = row(session, key)
    if delivery is None or delivery.attempt_token != token:
        return None
    return delivery


def release(delivery: Delivery) -> None:
    """Back to `pending`, for another try. Its pace slot goes too (the call used it, or a
    429 counted at the provider as well): the next try takes a new one."""
    delivery.status = "pending"
    delivery.attempt_token = None
    delivery.rate_slot_at = None


def mark_sent(
    delivery: Delivery, candidate: Candidate, provider: str, provider_id: str
) -> SendOutcome:
    delivery.status = "sent"
    delivery.reason = None
    delivery.provider = provider
    delivery.provider_message_id = provider_id
    delivery.sent_at = datetime.now(UTC)
    delivery.attempts = [*delivery.attempts, {"channel": candidate.channel, "sent": provider_id}]
    return outcome(delivery)


def add_failed_try(
    delivery: Delivery,
    candidate: Candidate,
    error: str,
    kind: str | None = None,
    *,
    key: bytes | None,
) -> None:
    """Keep a failed try of `candidate` on the row (see `failed_try`)."""
    delivery.attempts = [*delivery.attempts, failed_try(candidate, error, kind, key=key)]


def failed_try(
    candidate: Candidate, error: str, kind: str | None = None, *, key: bytes | None
) -> dict[str, Any]:
    """A failed try, naming the address only by its digest (the ledger keeps no personal
    data); the digest keeps the retry off the same address. `key` is required: the
    channel choice excludes tried addresses by their keyed digest (`Channels.suitable`),
    so a digest made without it would send the next try to the same channel forever."""
    return {
        "channel": candidate.channel,
        "address": address_digest(candidate.address, key),
        "error": error,
        **({"kind": kind} if kind else {}),
    }
