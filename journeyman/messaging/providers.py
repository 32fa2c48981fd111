"""Message providers behind one interface, and the outbox for channels without one.

A provider delivers one rendered message and returns the provider's message id, or
raises one of:

- `PermanentFailure`: this message to this address will never go (invalid address or
  number, unregistered push token, the provider refusing the recipient). `kind` says
  what the sender should do about the address: suppress it, drop the push token, or
  nothing (the rejection is about the message, not the address). The next channel of
  the step is tried.
- `TransientFailure`: nothing was sent, try again later (429, 5xx before the provider
  accepted, connection refused), honoring `retry_after` when the provider says.
- `UncertainDelivery`: the request may have reached the provider and been accepted
  (the answer was lost: read timeout, connection reset after sending). Sending again
  could send twice, so the delivery is recorded as `unknown` and not retried.

Every external provider maps the same way what is not about the message itself:
429 and 5xx answers, and no connection at all, are `TransientFailure`s honoring
`Retry-After` (`retry_after_seconds`; `unreachable`); a request that went out with no
answer back (read timeout, connection dropped) is `UncertainDelivery` (`answer_lost`).
Each provider's module says how its own refusals map.

External providers (`transactional = False`) are called outside any database
transaction, between the ledger's claim and its completion. The outbox
(`transactional = True`) writes through the ledger's own session, so it is exactly
once by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.orm import Session

from journeyman.storage.models import OutboxMessage

# What a permanent rejection means for the address it was sent to.
FailureKind = Literal["invalid_address", "unregistered_token", "unsubscribed", "rejected"]


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: int
    idempotency_key: str
    customer_id: str
    journey_id: str
    channel: str  # one of `journeyman.dsl.model.Channel`, as the step named it
    to: str  # email address, E.164 phone number or push token
    subject: str | None = None  # email subject, push title
    body: str = ""  # email text part, sms text, push body
    html: str | None = None
    preheader: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # push data (deep link), string values
    headers: dict[str, str] = field(default_factory=dict)  # email headers (List-Unsubscribe)
    step_id: str = ""
    template: str = ""


class PermanentFailure(Exception):
    """The provider refused this message to this address for good."""

    def __init__(self, message: str, kind: FailureKind = "rejected") -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


class TransientFailure(Exception):
    """Nothing was sent; worth retrying. `retry_after` in seconds when the provider says."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UncertainDelivery(Exception):
    """The provider may have accepted the message: sending again could send it twice."""


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header in its seconds form, never below
    zero; None without one, or for the date form."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def unreachable(provider: str, base_url: str, detail: object) -> TransientFailure:
    """No connection to the provider: nothing was sent."""
    return TransientFailure(f"{provider} unreachable at {base_url}: {detail}")


def answer_lost(provider: str, detail: object) -> UncertainDelivery:
    """The request went out and no answer came back: it may have been accepted."""
    return UncertainDelivery(f"{provider}'s answer was lost after the request was sent: {detail}")


class Provider(Protocol):
    name: str
    transactional: bool

    def send(self, message: OutgoingMessage, session: Session | None) -> str:
        """Deliver; return the provider's message id.

        `session` is the ledger's transaction for transactional providers, else None.
        """
        ...

    def close(self) -> None:
        """Release connection pools; the worker calls it on shutdown."""
        ...


# What the outbox keeps of a message as it is (`data` carries the headers too).
_OUTBOX_FIELDS = (
    "delivery_id",
    "customer_id",
    "journey_id",
    "channel",
    "to",
    "subject",
    "body",
    "html",
)


class OutboxProvider:
    """Keeps the message in the database, for `journeyman outbox` and `GET /v1/outbox`."""

    name = "outbox"
    transactional = True

    def send(self, message: OutgoingMessage, session: Session | None) -> str:
        assert session is not None, "the outbox writes in the ledger's transaction"
        row = OutboxMessage(
            **{name: getattr(message, name) for name in _OUTBOX_FIELDS},
            data={**message.data, **({"headers": message.headers} if message.headers else {})},
        )
        session.add(row)
        session.flush()
        return f"outbox-{row.id}"

    def close(self) -> None:
        pass
