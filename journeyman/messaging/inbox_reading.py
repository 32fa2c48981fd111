"""Reading a customer's inbox (the `inbox` channel's messages, journeyman/messaging/inbox.py).

- Listed newest first, with the unread count; messages past their `expires_at` are
  neither listed nor counted, and are deleted as the inbox is read.
- A customer's inbox includes the messages of runs that started under an anonymous id
  later merged into them, as the outbox does.
- Marking a message read sets `read_at` once, and the delivery's `opened_at` (the
  first time), so an inbox message read counts in stats as an email opened does.
- The app reports engagement through intake as track events of the customer:
  `inbox_opened` and `inbox_clicked` with property `inbox_message_id` (the `id` the
  list gave). They set the delivery's `opened_at` / `clicked_at` the first time, so
  they count in stats as email opens and clicks do; an open also marks it read.
- Identity verification: an app holding only a write key proves whose inbox it asks
  for with `userHash`, the hex HMAC-SHA256 of the user id under
  `JOURNEYMAN_IDENTITY_SECRET` (computed by the retailer's server, as Intercom's and
  Customer.io's in-app messaging do).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from journeyman.customers.identity import merged_ids_query
from journeyman.storage.models import Delivery, InboxMessage


def user_hash(secret: str, user_id: str) -> str:
    """The `userHash` of `user_id`: hex HMAC-SHA256 under the identity secret."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_user_hash(secret: str, user_id: str, given: str) -> bool:
    return hmac.compare_digest(user_hash(secret, user_id), given.strip().lower())


def _owners(customer_id: str) -> ColumnElement[bool]:
    merged = merged_ids_query(customer_id)
    return or_(InboxMessage.customer_id == customer_id, InboxMessage.customer_id.in_(merged))


def _live(now: datetime) -> ColumnElement[bool]:
    return or_(InboxMessage.expires_at.is_(None), InboxMessage.expires_at > now)


def list_messages(
    session: Session, customer_id: str, now: datetime, limit: int = 50
) -> tuple[list[InboxMessage], int]:
    """(the newest `limit` live messages, the number of live unread ones)."""
    session.execute(
        delete(InboxMessage).where(_owners(customer_id), InboxMessage.expires_at <= now)
    )
    rows = list(
        session.scalars(
            select(InboxMessage)
            .where(_owners(customer_id), _live(now))
            .order_by(InboxMessage.created_at.desc(), InboxMessage.id.desc())
            .limit(limit)
        )
    )
    unread = session.scalar(
        select(func.count())
        .select_from(InboxMessage)
        .where(_owners(customer_id), _live(now), InboxMessage.read_at.is_(None))
    )
    return rows, int(unread or 0)


def mark_read(
    session: Session, customer_id: str, message_id: int, now: datetime
) -> InboxMessage | None:
    """Mark one of the customer's live messages read; None when they have no such one."""
    row = session.scalar(
        select(InboxMessage).where(InboxMessage.id == message_id, _owners(customer_id), _live(now))
    )
    if row is None:
        return None
    if row.read_at is None:
        row.read_at = now
        delivery = session.get(Delivery, row.delivery_id)
        if delivery is not None and delivery.opened_at is None:
            delivery.opened_at = now
    return row


# Track events from the app about an inbox message -> the delivery column they set.
ENGAGEMENT_EVENTS = {"inbox_opened": "opened_at", "inbox_clicked": "clicked_at"}


def record_engagement(
    session: Session, customer_id: str, name: str | None, properties: dict[str, Any]
) -> bool:
    """Apply an `inbox_opened` / `inbox_clicked` event of the customer; whether it was
    about one of their messages (anything else is kept as a plain event, no more)."""
    column = ENGAGEMENT_EVENTS.get(name or "")
    raw = properties.get("inbox_message_id")
    if column is None or isinstance(raw, bool):
        return False
    try:
        message_id = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    if not 0 < message_id < 2**62:
        return False
    row = session.scalar(
        select(InboxMessage).where(InboxMessage.id == message_id, _owners(customer_id))
    )
    if row is None:
        return False
    at = datetime.now(UTC)
    if column == "opened_at" and row.read_at is None:
        row.read_at = at
    delivery = session.get(Delivery, row.delivery_id)
    if delivery is not None and getattr(delivery, column) is None:
        setattr(delivery, column, at)
    return True
