"""The `inbox` channel: a message kept in the database for the customer's app or site.

The provider writes an `inbox_messages` row in the ledger's own transaction (like the
outbox), so a message is stored exactly once per step visit. The journey's
`send.expires_after` (e.g. `30d`) sets when it leaves the inbox; without it, it stays
until the customer is erased. `GET /v1/inbox/{userId}` lists them
(journeyman/messaging/inbox_reading.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from journeyman.dsl.durations import parse_duration
from journeyman.messaging.providers import OutgoingMessage
from journeyman.storage.models import InboxMessage, JourneyVersion


class InboxProvider:
    """Stores the message for the customer's inbox."""

    name = "inbox"
    transactional = True

    def send(self, message: OutgoingMessage, session: Session | None) -> str:
        assert session is not None, "the inbox writes in the ledger's transaction"
        expires = message.data.get("expires_at")
        row = InboxMessage(
            delivery_id=message.delivery_id,
            customer_id=message.customer_id,
            journey_id=message.journey_id,
            step_id=message.step_id,
            title=message.subject or "",
            body=message.body,
            link=message.data.get("link"),
            image=message.data.get("image"),
            created_at=datetime.fromisoformat(message.data["created_at"]),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )
        session.add(row)
        session.flush()
        return f"inbox-{row.id}"

    def close(self) -> None:
        pass


def inbox_message(
    session: Session, message: OutgoingMessage, version: str, now: datetime
) -> OutgoingMessage:
    """The message with its times: created now (the workflow's clock), expiring after
    the step's `send.expires_after` when the journey version sets one."""
    data: dict[str, Any] = {**message.data, "created_at": now.isoformat()}
    expires_after = _expires_after(session, message.journey_id, version, message.step_id)
    if expires_after is not None:
        data["expires_at"] = (now + parse_duration(expires_after)).isoformat()
    return replace(message, data=data)


def _expires_after(session: Session, journey_id: str, version: str, step_id: str) -> str | None:
    row = session.get(JourneyVersion, {"journey_id": journey_id, "version": version})
    if row is None:
        return None
    for step in row.plan.get("journey", {}).get("steps", []):
        if step.get("id") == step_id and isinstance(step.get("send"), dict):
            value = step["send"].get("expires_after")
            return value if isinstance(value, str) else None
    return None
