"""Message providers behind one interface, and the outbox for channels without one.

A provider delivers one rendered message and returns the provider's message id, or
raises `PermanentFailure` (the address or number is bad: try the next channel) or
`TransientFailure` (try again later, honoring `retry_after`). The outbox writes into
the same transaction as the delivery ledger, so it is exactly once by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from journeyman.storage.models import OutboxMessage


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: int
    idempotency_key: str
    customer_id: str
    journey_id: str
    channel: str
    to: str
    subject: str | None = None
    body: str = ""
    html: str | None = None
    preheader: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class PermanentFailure(Exception):
    """The provider refused this message for good (invalid number, bounced address)."""


class TransientFailure(Exception):
    """Worth retrying: 429, 5xx, a timeout. `retry_after` in seconds when the provider says."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Provider(Protocol):
    name: str

    def send(self, message: OutgoingMessage, session: Session) -> str:
        """Deliver; return the provider's message id."""
        ...


class OutboxProvider:
    """Keeps the message in the database, for `journeyman outbox` and `GET /v1/outbox`."""

    name = "outbox"

    def send(self, message: OutgoingMessage, session: Session) -> str:
        row = OutboxMessage(
            delivery_id=message.delivery_id,
            customer_id=message.customer_id,
            journey_id=message.journey_id,
            channel=message.channel,
            to=message.to,
            subject=message.subject,
            body=message.body,
            html=message.html,
            data={**message.data, **({"headers": message.headers} if message.headers else {})},
        )
        session.add(row)
        session.flush()
        return f"outbox-{row.id}"
