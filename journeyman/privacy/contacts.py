"""Double opt-in for contact points set by client keys (JOURNEYMAN_CLIENT_CONTACTS).

Client keys are public: anyone can `identify` a customer with an email address or a
phone number of their choosing (a customer who has none yet; intake refuses changes).
So every contact point a client key sets is noted (`note`) as awaiting confirmation.
With `JOURNEYMAN_CLIENT_CONTACTS=confirm` such a contact point gets no journey message
(`unconfirmed`, checked by the channels) until:
- the customer follows the link of the confirmation message (`send_confirmations`, sent
  once per contact point, through the channel's provider or the outbox; the link is
  `PUBLIC_BASE_URL/confirm/<token>`, signed like unsubscribe links), or
- a server key (or a signed webhook) sets the same value: the operator vouches for it.
With the default `trust`, nothing is held and no confirmation message is sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from journeyman.storage.db import Database
from journeyman.storage.models import ContactConfirmation, Customer, Delivery, utcnow

log = logging.getLogger(__name__)

# Traits that are contact points, by channel.
CONTACT_TRAITS = {"email": "email", "sms": "phone"}
CONFIRMATION_JOURNEY = "_contact_confirmation"
CONFIRMATION_TEMPLATE = "contact_confirmation"
MAC_BYTES = 16
# Confirmation messages sent after one intake call, at most (the rest: after the next).
SEND_AT_MOST = 50


class BadConfirmation(ValueError):
    """The link was not made by this service, or its contact point is gone."""


# -- intake ---------------------------------------------------------------------------


def note(session: Session, customer: Customer, traits: Mapping[str, Any], source: str) -> None:
    """After an identify: a contact point set by a client key awaits confirmation; the
    same value set by a server key (or a signed webhook) is confirmed."""
    for channel, trait in CONTACT_TRAITS.items():
        value = traits.get(trait)
        if not isinstance(value, str) or not value:
            continue
        row = session.scalar(
            select(ContactConfirmation).where(
                ContactConfirmation.customer_id == customer.id,
                ContactConfirmation.channel == channel,
                ContactConfirmation.address == value,
            )
        )
        if source == "client":
            if row is None:
                session.add(
                    ContactConfirmation(customer_id=customer.id, channel=channel, address=value)
                )
        elif row is not None and row.confirmed_at is None:
            row.confirmed_at = utcnow()
            row.confirmed_by = "server"


def merged(session: Session, source_id: str, target_id: str) -> None:
    """A merge moves contact points, and so what is known of their confirmation."""
    session.execute(
        update(ContactConfirmation)
        .where(ContactConfirmation.customer_id == source_id)
        .values(customer_id=target_id)
        .execution_options(synchronize_session=False)
    )


# -- sending ----------------------------------------------------------------------------


def unconfirmed(session: Session, customer_id: str, channel: str, address: str) -> bool:
    """Whether `address` was set by a client key and is not confirmed yet."""
    row = session.scalar(
        select(ContactConfirmation.id).where(
            ContactConfirmation.customer_id == customer_id,
            ContactConfirmation.channel == channel,
            ContactConfirmation.address == address,
            ContactConfirmation.confirmed_at.is_(None),
        )
    )
    return row is not None


HELD_REASON = "not confirmed by the customer yet (JOURNEYMAN_CLIENT_CONTACTS=confirm)"


# -- the confirmation message and link -------------------------------------------------


@dataclass(frozen=True)
class Confirmation:
    id: int
    address: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, b"confirm:" + payload.encode("ascii"), hashlib.sha256).digest()
    return _b64(digest[:MAC_BYTES])


def sign(key: bytes, confirmation: Confirmation) -> str:
    body = {"i": confirmation.id, "a": confirmation.address}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_mac(key, payload)}"


def verify(key: bytes, token: str) -> Confirmation:
    payload, _, mac = token.partition(".")
    if not payload or not mac or not hmac.compare_digest(mac, _mac(key, payload)):
        raise BadConfirmation("this confirmation link is not valid")
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return Confirmation(id=int(body["i"]), address=str(body["a"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadConfirmation("this confirmation link is not valid") from None


def confirm_url(base_url: str, key: bytes, confirmation: Confirmation) -> str:
    return f"{base_url.rstrip('/')}/confirm/{quote(sign(key, confirmation), safe='.-_')}"


def confirm(db: Database, key: bytes, token: str) -> ContactConfirmation:
    """Confirm the contact point of a link; confirming twice is harmless."""
    parsed = verify(key, token)
    with db.session() as session:
        row = session.get(ContactConfirmation, parsed.id)
        if row is None or row.address != parsed.address:
            raise BadConfirmation("this address is no longer on file")
        if row.confirmed_at is None:
            row.confirmed_at = utcnow()
            row.confirmed_by = "link"
        session.flush()
        session.expunge(row)
        return row


def message_text(channel: str, url: str, sender: str) -> tuple[str | None, str, str | None]:
    """(subject, text, html) of the confirmation message."""
    if channel == "sms":
        return None, f"{sender}: confirm this number to get our messages: {url}", None
    subject = f"Confirm your email address for {sender}"
    text = (
        f"Please confirm that you want to get emails from {sender} at this address:\n\n"
        f"{url}\n\nIf you did not ask for this, ignore this message: you will get nothing more."
    )
    html = (
        f"<p>Please confirm that you want to get emails from {_escape(sender)} at this "
        f'address:</p><p><a href="{_escape(url)}">Confirm my email address</a></p>'
        "<p>If you did not ask for this, ignore this message: you will get nothing more.</p>"
    )
    return subject, text, html


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


@dataclass(frozen=True)
class _Awaiting:
    """A contact point whose confirmation message is to be sent."""

    id: int
    customer_id: str
    channel: str
    address: str


def send_confirmations(
    db: Database,
    providers: Mapping[str, Any],
    outbox: Any,
    base_url: str,
    key: bytes,
    sender: str,
) -> int:
    """Send the confirmation message of every contact point awaiting one (once each:
    the delivery ledger's idempotency key is the confirmation's id); returns how many
    went out. A provider failure is logged and the message tried again after the next
    intake call that sets a contact point."""
    sent = 0
    for awaiting in _awaiting(db):
        provider = providers.get(awaiting.channel, outbox)
        url = confirm_url(base_url, key, Confirmation(awaiting.id, awaiting.address))
        content = message_text(awaiting.channel, url, sender)
        try:
            external = _claim_and_send(db, provider, awaiting, content)
        except IntegrityError:
            continue  # another process claimed it
        except Exception as exc:
            log.warning(
                "confirmation message for %s (%s) not sent: %s",
                awaiting.customer_id,
                awaiting.channel,
                exc,
            )
            _unclaim(db, awaiting.id)
            continue
        if external is not None:
            delivery_id, provider_id = external
            with db.session() as session:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id)
                    .values(
                        status="sent",
                        sent_at=utcnow(),
                        provider=provider.name,
                        provider_message_id=provider_id,
                    )
                )
        sent += 1
    return sent


def _awaiting(db: Database) -> list[_Awaiting]:
    with db.session() as session:
        pending = session.scalars(
            select(ContactConfirmation)
            .where(
                ContactConfirmation.confirmed_at.is_(None),
                ContactConfirmation.delivery_id.is_(None),
            )
            .order_by(ContactConfirmation.id)
            .limit(SEND_AT_MOST)
        ).all()
        return [_Awaiting(row.id, row.customer_id, row.channel, row.address) for row in pending]


def _claim_and_send(
    db: Database,
    provider: Any,
    awaiting: _Awaiting,
    content: tuple[str | None, str, str | None],
) -> tuple[int, str] | None:
    """Claim the confirmation on the delivery ledger and send it. A transactional
    provider (the outbox) sends in the claim's transaction: None. An external one is
    called once the claim is committed, so a crash during the call leaves `sending`,
    never a second message: (the delivery's id, the provider's message id), for the
    caller to mark it sent."""
    from journeyman.messaging.providers import OutgoingMessage

    subject, text, html = content
    with db.session() as session:
        delivery = Delivery(
            idempotency_key=f"confirm/{awaiting.id}",
            workflow_id=f"{CONFIRMATION_JOURNEY}/{awaiting.customer_id}",
            journey_id=CONFIRMATION_JOURNEY,
            version="",
            step_id="confirm",
            customer_id=awaiting.customer_id,
            template=CONFIRMATION_TEMPLATE,
            channel=awaiting.channel,
            status="sending",
            attempts=[],
        )
        session.add(delivery)
        session.flush()  # the unique key: a concurrent sender loses here
        session.execute(
            update(ContactConfirmation)
            .where(ContactConfirmation.id == awaiting.id)
            .values(delivery_id=delivery.id)
        )
        message = OutgoingMessage(
            delivery_id=delivery.id,
            idempotency_key=delivery.idempotency_key,
            customer_id=awaiting.customer_id,
            journey_id=CONFIRMATION_JOURNEY,
            channel=awaiting.channel,
            to=awaiting.address,
            subject=subject,
            body=text,
            html=html,
            step_id="confirm",
            template=CONFIRMATION_TEMPLATE,
        )
        if provider.transactional:
            delivery.provider_message_id = provider.send(message, session)
            delivery.status, delivery.sent_at = "sent", utcnow()
            delivery.provider = provider.name
            return None
        delivery_id = delivery.id
    return delivery_id, provider.send(message, None)


def _unclaim(db: Database, row_id: int) -> None:
    with db.session() as session:
        row = session.get(ContactConfirmation, row_id)
        if row is not None and row.delivery_id is not None:
            delivery = session.get(Delivery, row.delivery_id)
            if delivery is not None and delivery.status == "sending":
                session.delete(delivery)
            row.delivery_id = None
