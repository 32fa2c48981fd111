"""Consent and suppression: who may get what, and the record of every change.

A customer is subscribed to every channel and topic until they opt out (no row means
subscribed). A send needs all of: the channel subscribed, the journey's topic
subscribed, and the address not suppressed. Suppressions belong to the address (a
bounced mailbox stays bounced whichever profile carries it); consents belong to the
customer. Every change of consent is written to `consent_changes` with its source.

These are plain functions over a session, shared by the send activity, the API and the
provider webhooks, so the same rules hold everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeyman.storage.models import (
    Consent,
    ConsentChange,
    Customer,
    Suppression,
    SuppressionReason,
)

CHANNELS = ("email", "sms", "push", "whatsapp", "inbox")
SCOPES = ("channel", "topic")


def normalize_address(channel: str, address: str) -> str:
    """The form suppressions are keyed by: emails lower-cased, numbers without spaces."""
    address = address.strip()
    if channel == "email":
        return address.lower()
    if channel == "sms":
        return "".join(address.split())
    if channel == "whatsapp":  # the number, whether given as whatsapp:+… or +…
        return "".join(address.split()).removeprefix("whatsapp:")
    return address


def address_hash(channel: str, address: str, key: bytes | None = None) -> str:
    """The digest suppressions are keyed by: HMAC-SHA256 of the normalized address under
    the installation's key (journeyman/privacy/pseudonyms.py), so a list of known addresses or
    the phone numbering plan cannot be tested against it without the key. Without a key,
    the plain SHA-256 suppressions were made with before (still found, see
    `suppression`)."""
    normalized = normalize_address(channel, address).encode()
    if key is None:
        return hashlib.sha256(normalized).hexdigest()
    message = b"address:" + channel.encode() + b":" + normalized
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def is_subscribed(session: Session, customer_id: str, scope: str, name: str) -> bool:
    row = session.get(Consent, {"customer_id": customer_id, "scope": scope, "name": name})
    return True if row is None else row.subscribed


def suppression(
    session: Session, channel: str, address: str, key: bytes | None = None
) -> Suppression | None:
    """The suppression of an address: under its keyed digest, else under the plain one
    of suppressions made before digests were keyed."""
    if key is not None:
        row = session.get(
            Suppression, {"channel": channel, "address_hash": address_hash(channel, address, key)}
        )
        if row is not None:
            return row
    return session.get(
        Suppression, {"channel": channel, "address_hash": address_hash(channel, address)}
    )


def rekey_suppressions(session: Session, key: bytes, addresses: list[tuple[str, str]]) -> int:
    """Move the plain-digest suppressions of `addresses` to their keyed digest (erasure
    does it for the erased customer's addresses); returns how many moved."""
    moved = 0
    for channel, address in addresses:
        plain = session.get(
            Suppression, {"channel": channel, "address_hash": address_hash(channel, address)}
        )
        keyed = address_hash(channel, address, key)
        if plain is None or plain.address_hash == keyed:
            continue
        if session.get(Suppression, {"channel": channel, "address_hash": keyed}) is None:
            session.add(
                Suppression(
                    channel=channel,
                    address_hash=keyed,
                    reason=plain.reason,
                    detail=plain.detail,
                    source=plain.source,
                    created_at=plain.created_at,
                )
            )
        session.delete(plain)
        moved += 1
    session.flush()
    return moved


def blocked_reason(
    session: Session,
    customer_id: str,
    channel: str,
    address: str,
    topic: str | None,
    key: bytes | None = None,
) -> str | None:
    """Why this channel may not be used for this customer and topic, or None."""
    if not is_subscribed(session, customer_id, "channel", channel):
        return "unsubscribed from " + channel
    if topic and not is_subscribed(session, customer_id, "topic", topic):
        return f"unsubscribed from topic {topic}"
    row = suppression(session, channel, address, key)
    if row is not None:
        return f"address suppressed ({row.reason})"
    return None


def set_consent(
    session: Session,
    customer_id: str,
    scope: str,
    name: str,
    subscribed: bool,
    source: str,
    at: datetime,
    detail: str | None = None,
) -> bool:
    """Record a choice; returns whether it changed anything (an unchanged choice is not
    audited again, so a webhook delivered twice leaves one trail entry)."""
    if scope not in SCOPES:
        raise ValueError(f"consent scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    key = {"customer_id": customer_id, "scope": scope, "name": name}
    row = session.get(Consent, key)
    if row is not None and row.subscribed == subscribed:
        return False
    if row is None:  # an explicit opt-in is recorded too, though subscribed is the default
        session.add(Consent(**key, subscribed=subscribed, source=source, updated_at=at))
    else:
        row.subscribed = subscribed
        row.source = source
        row.updated_at = at
    session.add(
        ConsentChange(
            customer_id=customer_id,
            scope=scope,
            name=name,
            subscribed=subscribed,
            source=source,
            detail=detail,
            at=at,
        )
    )
    session.flush()
    return True


def consents_of(session: Session, customer_id: str) -> dict[str, dict[str, Any]]:
    """`{"channels": {"email": {...}}, "topics": {...}}` with every explicit choice."""
    rows = session.scalars(select(Consent).where(Consent.customer_id == customer_id)).all()
    result: dict[str, dict[str, Any]] = {"channels": {}, "topics": {}}
    for row in rows:
        result["channels" if row.scope == "channel" else "topics"][row.name] = {
            "subscribed": row.subscribed,
            "source": row.source,
            "updated_at": row.updated_at.isoformat(),
        }
    return result


def suppress(
    session: Session,
    channel: str,
    address: str,
    reason: SuppressionReason,
    source: str,
    at: datetime,
    detail: str | None = None,
    key: bytes | None = None,
) -> bool:
    """Suppress an address (under its keyed digest when `key` is given); returns False
    when it already was."""
    if suppression(session, channel, address, key) is not None:
        return False
    session.add(
        Suppression(
            channel=channel,
            address_hash=address_hash(channel, address, key),
            reason=reason,
            detail=detail,
            source=source,
            created_at=at,
        )
    )
    session.flush()
    return True


def remove_push_token(session: Session, customer_id: str, token: str) -> bool:
    """Drop a token the push service no longer knows; returns whether it was there."""
    customer = session.get(Customer, customer_id)
    if customer is None or token not in (customer.push_tokens or []):
        return False
    customer.push_tokens = [t for t in customer.push_tokens if t != token]
    return True
