"""Delivery feedback: what SendGrid and Twilio report after a message went out.

Contract:
- The functions here take provider events whose signatures were already verified
  (journeyman/api/provider_auth.py) and apply them in the caller's session, so a whole
  webhook request is one transaction: `transaction` runs one with the retries a race
  between concurrent deliveries of the same webhook needs.
- Each provider event is applied once. Its id is recorded in `provider_events` in the
  same transaction as its effects: a provider retrying, or sending the same event
  twice, changes nothing the second time.
- Effects: the first time of each outcome on the delivery ledger (`delivered_at`,
  `opened_at`, `clicked_at`, `complained_at`, `failed_at` with `failure`);
  suppressions of addresses that can never take a message; consent changes the
  customer asked for, each audited; and journey events of the customer (names from
  `journeyman.names.DELIVERY_EVENTS`, plus `sms_received`) stored through
  `journeyman.events.intake` for the dispatcher to route. A delivery event reaches only the
  run that sent the message.
- Events about a delivery this database does not know (another installation sharing
  the provider account, a message sent by hand) are ignored with a log line and not
  recorded, so the provider gets its 2xx and does not retry for days; except the
  events about the address itself (a hard bounce, a spam report, `dropped` for a
  `Bounced Address` or `Spam Reporting Address`), which suppress the address whoever
  sent the message: the mailbox is gone, or its owner complained, for us too.
- Journey events carry ids, names and outcomes, never an email address, a phone
  number or the text of a message: they are kept with the customer's history, and
  personal data lives in `customers` only.

SendGrid events: delivered, open and click set their first time on the ledger;
bounce and dropped fail the delivery, and a hard bounce (type `bounce`, not
`blocked`) suppresses the address; spamreport sets `complained_at` and suppresses the
address; unsubscribe (SendGrid's subscription tracking) revokes the journey's topic,
else the email channel; group_unsubscribe and group_resubscribe revoke and restore
the email channel. `SENDGRID_JOURNEY_EVENTS` names the journey events of each.

Twilio status callbacks (`MessageStatus`): `sent` gives sms_sent; `delivered` sets
delivered_at and gives sms_delivered; `undelivered` and `failed` set failed_at with
failure `twilio <ErrorCode>` and give sms_failed and message_failed; the error code
may also act on the number (`TWILIO_INVALID_NUMBER`, `TWILIO_OPTED_OUT`).

Inbound texts and WhatsApp messages: journeyman/events/inbound.py, recorded in the same
`provider_events` ledger (`seen`, `record`).

WhatsApp (`From`/`To` of `whatsapp:+…`, on the same two webhooks): statuses give
`whatsapp_sent`, `whatsapp_delivered`, `whatsapp_read` (also the delivery's
`opened_at`) and `whatsapp_failed`; a refused recipient is suppressed on WhatsApp only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from journeyman.customers.profiles import find_customer
from journeyman.events import intake
from journeyman.events.intake import Incoming
from journeyman.messaging import whatsapp
from journeyman.privacy.consent import set_consent, suppress
from journeyman.storage.db import Database
from journeyman.storage.models import (
    Consent,
    Customer,
    Delivery,
    JourneyVersion,
    ProviderEvent,
    SuppressionReason,
    utcnow,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Concurrent deliveries of one webhook race on `provider_events` (and on event ids):
# the loser starts over and finds the winner's rows.
CONFLICT_RETRIES = 5

SENDGRID = "sendgrid"
TWILIO = "twilio"
TWILIO_INBOUND = "twilio-inbound"

# SendGrid event -> the journey events it gives (names of `names.DELIVERY_EVENTS`).
SENDGRID_JOURNEY_EVENTS: dict[str, tuple[str, ...]] = {
    "delivered": ("email_delivered",),
    "open": ("email_opened",),
    "click": ("email_clicked",),
    "bounce": ("email_bounced", "message_failed"),
    "dropped": ("email_bounced", "message_failed"),
    "spamreport": ("email_spam_reported",),
    "unsubscribe": ("email_unsubscribed",),
    "group_unsubscribe": ("email_unsubscribed",),
}
# Twilio MessageStatus -> the journey events it gives.
TWILIO_JOURNEY_EVENTS: dict[str, tuple[str, ...]] = {
    "sent": ("sms_sent",),
    "delivered": ("sms_delivered",),
    "undelivered": ("sms_failed", "message_failed"),
    "failed": ("sms_failed", "message_failed"),
}
# The same callbacks about a WhatsApp message (`To: whatsapp:+…`); `read` is WhatsApp's
# read receipt, counted as an open.
WHATSAPP_JOURNEY_EVENTS: dict[str, tuple[str, ...]] = {
    "sent": ("whatsapp_sent",),
    "delivered": ("whatsapp_delivered",),
    "read": ("whatsapp_read",),
    "undelivered": ("whatsapp_failed", "message_failed"),
    "failed": ("whatsapp_failed", "message_failed"),
}
# WhatsApp error codes that say the number is not on WhatsApp: suppressed on WhatsApp.
WHATSAPP_INVALID_NUMBER: dict[str, str] = {
    "63003": "the number is not on WhatsApp",
    "63024": "invalid WhatsApp recipient",
}

# Twilio error codes (https://www.twilio.com/docs/api/errors) that say the number can
# never take a text: it is suppressed. Codes that may pass (30003 unreachable handset,
# 30007 carrier filtering, 30008 unknown) only fail this message.
TWILIO_INVALID_NUMBER: dict[str, str] = {
    "21211": "invalid 'To' number",
    "21217": "the number does not appear to be valid",
    "21401": "invalid phone number",
    "21407": "the number type does not support SMS",
    "21614": "not a mobile number",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
}
# The recipient replied STOP to our sender: their SMS consent is revoked, as an
# inbound STOP would. 30004 ("message blocked") is not: the carrier, not the customer,
# may be the one blocking, so it only fails this message.
TWILIO_OPTED_OUT = "21610"

# Addresses inside provider texts (bounce reasons quote the recipient; links may carry
# it): replaced before anything is stored outside `customers`.
_ADDRESS = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)


@dataclass
class Outcome:
    """What one webhook request did."""

    applied: int = 0  # provider events applied
    duplicates: int = 0  # provider events applied before
    ignored: int = 0  # about deliveries this database does not know
    to_dispatch: int = 0  # journey events stored for the dispatcher


def transaction(db: Database, apply: Callable[[Session], T]) -> T:
    """Run `apply` in one transaction, starting over when a concurrent request won a race
    on the same rows."""
    for attempt in range(1, CONFLICT_RETRIES + 1):
        try:
            with db.session() as session:
                _lock_for_write(session)
                return apply(session)
        except IntegrityError:
            if attempt == CONFLICT_RETRIES:
                raise
            log.debug("provider webhook conflict (attempt %d): retrying", attempt)
    raise AssertionError("unreachable")


# -- SendGrid -------------------------------------------------------------------------


def sendgrid_events(
    session: Session,
    events: list[dict[str, Any]],
    now: datetime | None = None,
    key: bytes | None = None,
) -> Outcome:
    """Apply a batch of the SendGrid Event Webhook, in order. `key`: the installation's
    pseudonym key, which suppressions are digested with (journeyman/privacy/consent.py)."""
    now = now or utcnow()
    outcome = Outcome()
    messages: list[Incoming] = []
    for event in events:
        kind = str(event.get("event") or "")
        event_id = str(event.get("sg_event_id") or "") or _digest(event)
        if seen(session, SENDGRID, event_id):
            outcome.duplicates += 1
            continue
        delivery = _sendgrid_delivery(session, event)
        if delivery is None:
            if _address_level(session, kind, event, event_id, now, key):
                outcome.applied += 1
                continue
            log.info("SendGrid %s event %s: unknown delivery, ignored", kind, event_id)
            outcome.ignored += 1
            continue
        record(session, SENDGRID, event_id, now)
        at = _epoch(event.get("timestamp")) or now
        messages.extend(_apply_sendgrid(session, delivery, kind, event, event_id, at, key))
        outcome.applied += 1
    if messages:
        outcome.to_dispatch = intake.accept_in(session, messages).to_dispatch
    return outcome


def _sendgrid_delivery(session: Session, event: dict[str, Any]) -> Delivery | None:
    """The delivery of an event: by our `delivery_id` custom arg, else by SendGrid's
    message id (`sg_message_id` is `<X-Message-Id>.<filter...>`)."""
    message_id = str(event.get("sg_message_id") or "").split(".", 1)[0]
    raw_id = str(event.get("delivery_id") or "")
    if raw_id.isdigit():
        delivery = session.get(Delivery, int(raw_id), with_for_update=True)
        if delivery is not None and not _same_email(delivery, event, message_id):
            # Another installation's delivery 7 sharing the SendGrid account.
            log.warning("SendGrid event for delivery %s does not match it: ignored", raw_id)
            return None
        return delivery
    if not message_id:
        return None
    return session.scalars(
        select(Delivery)
        .where(Delivery.provider_message_id == message_id, Delivery.channel == "email")
        .limit(1)
        .with_for_update()
    ).first()


def _same_email(delivery: Delivery, event: dict[str, Any], message_id: str) -> bool:
    if delivery.channel != "email":
        return False
    for arg in ("journey_id", "step_id"):
        if event.get(arg) and str(event[arg]) != getattr(delivery, arg):
            return False
    known = delivery.provider_message_id
    # Without X-Message-Id in SendGrid's answer the ledger holds a placeholder.
    if message_id and known and known != f"sendgrid-{delivery.id}":
        return known == message_id
    return True


def _apply_sendgrid(
    session: Session,
    delivery: Delivery,
    kind: str,
    event: dict[str, Any],
    event_id: str,
    at: datetime,
    key: bytes | None = None,
) -> list[Incoming]:
    customer = find_customer(session, delivery.customer_id)
    extra: dict[str, Any] = {}
    match kind:
        case "delivered":
            _first(delivery, "delivered_at", at)
        case "open":
            _first(delivery, "opened_at", at)
        case "click":
            _first(delivery, "clicked_at", at)
            if event.get("url"):
                extra["url"] = redact(str(event["url"]))
        case "bounce" | "dropped":
            bounce_type = str(event.get("type") or "") if kind == "bounce" else ""
            reason = redact(str(event.get("reason") or event.get("status") or "no reason given"))
            extra["reason"] = f"{bounce_type or kind}: {reason}"
            _failed(delivery, at, extra["reason"])
            # `blocked` is the receiving server refusing for now (reputation, content);
            # `bounce` is the mailbox refusing for good.
            if bounce_type == "bounce":
                _suppress_email(session, event, customer, "bounced", at, extra["reason"], key)
            elif dropped := _dropped_for_address(kind, event):
                _suppress_email(session, event, customer, dropped, at, extra["reason"], key)
        case "spamreport":
            _first(delivery, "complained_at", at)
            _suppress_email(session, event, customer, "spam_report", at, None, key)
        case "unsubscribe" if customer is not None:
            # SendGrid's subscription tracking: the mail was about the journey's topic.
            topic = _topic(session, delivery)
            scope, name = ("topic", topic) if topic else ("channel", "email")
            detail = f"{kind} of delivery {delivery.id}"
            _consent(session, customer.id, scope, name, False, at, detail)
        case "group_unsubscribe" | "group_resubscribe" if customer is not None:
            subscribed = kind == "group_resubscribe"
            detail = f"{kind} of delivery {delivery.id}"
            _consent(session, customer.id, "channel", "email", subscribed, at, detail)
    if customer is None:
        log.info("SendGrid %s event for delivery %s: customer gone", kind, delivery.id)
        return []
    return [
        _journey_event(f"{SENDGRID}:{event_id}:{name}", name, customer, delivery, at, extra)
        for name in SENDGRID_JOURNEY_EVENTS.get(kind, ())
    ]


# SendGrid `dropped` reasons that are about the address, not this message: SendGrid
# itself will drop every later message to it.
DROPPED_FOR_ADDRESS: dict[str, SuppressionReason] = {
    "bounced address": "bounced",
    "spam reporting address": "spam_report",
}


def _dropped_for_address(kind: str, event: dict[str, Any]) -> SuppressionReason | None:
    if kind != "dropped":
        return None
    return DROPPED_FOR_ADDRESS.get(str(event.get("reason") or "").strip().lower())


def _address_level(
    session: Session,
    kind: str,
    event: dict[str, Any],
    event_id: str,
    at_default: datetime,
    key: bytes | None = None,
) -> bool:
    """An event about the address rather than one of our messages (a hard bounce, a
    spam report, a drop for a bounced address) of a message this database did not send
    (another sender on the account, a message from before): the address is suppressed
    all the same, since the mailbox is gone (or its owner complained) whoever wrote to
    it. Returns whether it was applied; delivery-level events are not."""
    address = str(event.get("email") or "").strip()
    if not address or "@" not in address:
        return False
    bounce_type = str(event.get("type") or "")
    reason: SuppressionReason
    if kind == "bounce" and bounce_type == "bounce":
        reason = "bounced"
    elif kind == "spamreport":
        reason = "spam_report"
    elif dropped := _dropped_for_address(kind, event):
        reason = dropped
    else:
        return False
    record(session, SENDGRID, event_id, at_default)
    at = _epoch(event.get("timestamp")) or at_default
    why = redact(str(event.get("reason") or event.get("status") or kind))
    detail = f"{kind} of a message not sent by this installation: {why}"
    suppress(session, "email", address, reason, SENDGRID, at, detail, key)
    log.info("SendGrid %s event %s for an address, not our message: suppressed", kind, event_id)
    return True


def _suppress_email(
    session: Session,
    event: dict[str, Any],
    customer: Customer | None,
    reason: SuppressionReason,
    at: datetime,
    detail: str | None,
    key: bytes | None = None,
) -> None:
    address = str(event.get("email") or "") or (customer.email if customer else None)
    if address:
        suppress(session, "email", address, reason, SENDGRID, at, detail, key)


def _topic(session: Session, delivery: Delivery) -> str | None:
    version = session.get(JourneyVersion, (delivery.journey_id, delivery.version))
    if version is None:
        return None
    topic = (version.plan.get("journey") or {}).get("topic")
    return str(topic) if topic else None


# -- Twilio ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioStatus:
    """One status callback: `MessageSid`, `MessageStatus`, `ErrorCode`, `To`."""

    message_sid: str
    status: str
    error_code: str = ""
    to: str = ""


def twilio_status(
    session: Session,
    callback: TwilioStatus,
    now: datetime | None = None,
    key: bytes | None = None,
) -> Outcome:
    """Apply one status callback (`key`: as for `sendgrid_events`)."""
    now = now or utcnow()
    event_id = f"{callback.message_sid}:{callback.status}"
    if seen(session, TWILIO, event_id):
        return Outcome(duplicates=1)
    delivery = session.scalars(
        select(Delivery)
        .where(Delivery.provider_message_id == callback.message_sid)
        .limit(1)
        .with_for_update()
    ).first()
    if delivery is None:
        log.info("Twilio status %s: unknown delivery, ignored", event_id)
        return Outcome(ignored=1)
    record(session, TWILIO, event_id, now)
    customer = find_customer(session, delivery.customer_id)
    extra: dict[str, Any] = {}
    on_whatsapp = delivery.channel == whatsapp.CHANNEL
    match callback.status:
        case "delivered":
            _first(delivery, "delivered_at", now)
        case "read" if on_whatsapp:
            _first(delivery, "delivered_at", now)
            _first(delivery, "opened_at", now)
        case "undelivered" | "failed":
            code = callback.error_code
            extra["reason"] = f"twilio {code or callback.status}"
            _failed(delivery, now, extra["reason"])
            refusals = WHATSAPP_REFUSALS if on_whatsapp else SMS_REFUSALS
            _recipient_refused(session, refusals, callback, customer, now, key)
    outcome = Outcome(applied=1)
    if customer is None:
        log.info("Twilio status of delivery %s: customer gone", delivery.id)
        return outcome
    names = WHATSAPP_JOURNEY_EVENTS if on_whatsapp else TWILIO_JOURNEY_EVENTS
    messages = [
        _journey_event(f"{TWILIO}:{event_id}:{name}", name, customer, delivery, now, extra)
        for name in names.get(callback.status, ())
    ]
    if messages:
        outcome.to_dispatch = intake.accept_in(session, messages).to_dispatch
    return outcome


@dataclass(frozen=True)
class Refusals:
    """What a failed message's error code says about its recipient, on one channel."""

    channel: str
    invalid: dict[str, str]  # error codes that mean the number can never take a message
    opted_out: str  # what TWILIO_OPTED_OUT means there


SMS_REFUSALS = Refusals("sms", TWILIO_INVALID_NUMBER, "the recipient replied STOP")
# A WhatsApp failure about the recipient acts on WhatsApp only, never on SMS.
WHATSAPP_REFUSALS = Refusals(
    whatsapp.CHANNEL, WHATSAPP_INVALID_NUMBER, "the recipient opted out of WhatsApp"
)


def _recipient_refused(
    session: Session,
    refusals: Refusals,
    callback: TwilioStatus,
    customer: Customer | None,
    at: datetime,
    key: bytes | None = None,
) -> None:
    code = callback.error_code
    if code in refusals.invalid:
        number = whatsapp.bare_number(callback.to) if callback.to else None
        number = number or (customer.phone if customer else None)
        if number:
            detail = f"twilio {code}: {refusals.invalid[code]}"
            suppress(session, refusals.channel, number, "invalid", TWILIO, at, detail, key)
    elif code == TWILIO_OPTED_OUT and customer is not None:
        detail = f"twilio {code}: {refusals.opted_out}"
        _consent(session, customer.id, "channel", refusals.channel, False, at, detail, TWILIO)


# -- shared ---------------------------------------------------------------------------


def redact(value: str) -> str:
    """`value` with email addresses replaced by `[address]`."""
    return _ADDRESS.sub("[address]", value)


def _journey_event(
    message_id: str,
    name: str,
    customer: Customer,
    delivery: Delivery,
    at: datetime,
    extra: dict[str, Any],
) -> Incoming:
    properties = {
        "delivery_id": delivery.id,
        "journey_id": delivery.journey_id,
        "step_id": delivery.step_id,
        "workflow_id": delivery.workflow_id,
        "channel": delivery.channel,
        "template": delivery.template,
        "provider": delivery.provider,
        **extra,
    }
    return Incoming(
        type="track",
        message_id=message_id,
        timestamp=at,
        user_id=customer.id,
        name=name,
        properties=properties,
    )


def _first(delivery: Delivery, column: str, at: datetime) -> None:
    if getattr(delivery, column) is None:
        setattr(delivery, column, at)


def _failed(delivery: Delivery, at: datetime, failure: str) -> None:
    if delivery.failed_at is None:
        delivery.failed_at = at
        delivery.failure = failure


def _consent(
    session: Session,
    customer_id: str,
    scope: str,
    name: str,
    subscribed: bool,
    at: datetime,
    detail: str,
    source: str = SENDGRID,
) -> None:
    """Record a choice the provider reports, unless a later one is already recorded
    (webhooks arrive out of order: a resubscribe must not be undone by an older
    unsubscribe delivered late)."""
    current = session.get(Consent, {"customer_id": customer_id, "scope": scope, "name": name})
    if current is not None and current.updated_at > at:
        log.info("%s %s/%s change older than the recorded one: ignored", source, scope, name)
        return
    set_consent(session, customer_id, scope, name, subscribed, source, at, detail)


def seen(session: Session, provider: str, event_id: str) -> bool:
    return session.get(ProviderEvent, {"provider": provider, "event_id": event_id}) is not None


def record(session: Session, provider: str, event_id: str, at: datetime) -> None:
    session.add(ProviderEvent(provider=provider, event_id=event_id, received_at=at))
    session.flush()  # a second copy of the event later in the same batch sees it


def _epoch(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _digest(event: dict[str, Any]) -> str:
    """An id for an event sent without `sg_event_id`: the same event, the same id."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _lock_for_write(session: Session) -> None:
    """Take SQLite's write lock before the first read, as intake does: a transaction
    that reads first and writes later can find the database changed under it."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE provider_events SET provider = provider WHERE 0"))
