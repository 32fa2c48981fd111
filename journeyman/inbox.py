"""Reading a customer's inbox (the `inbox` channel's messages, activities/inbox.py).

- Listed newest first, with the unread count; messages past their `expires_at` are
  neither listed nor counted, and are deleted as the inbox is read.
- A customer's inbox includes the messages of runs that started under an anonymous id
  later merged into them, as the outbox does.
- Marking a message read sets `read_at` once, and the delivery's `opened_at` (the
  first time), so an inbox message read counts in stats as an email opened does.
- Identity verification: an app holding only a write key proves whose inbox it asks
  for with `userHash`, the hex HMAC-SHA256 of the user id under
  `JOURNEYMAN_IDENTITY_SECRET` (computed by the retailer's server, as Intercom's and
  Customer.io's in-app messaging do).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from journeyman.storage.models import Customer, Delivery, InboxMessage


def user_hash(secret: str, user_id: str) -> str:
    """The `userHash` of `user_id`: hex HMAC-SHA256 under the identity secret."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_user_hash(secret: str, user_id: str, given: str) -> bool:
    return hmac.compare_digest(user_hash(secret, user_id), given.strip().lower())


def _owners(customer_id: str) -> ColumnElement[bool]:
    merged = select(Customer.id).where(Customer.merged_into == customer_id)
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
