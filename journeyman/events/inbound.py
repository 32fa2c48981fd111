"""Inbound texts: what a customer sends to one of our numbers, by SMS or on WhatsApp
(Twilio's inbound webhook), applied to every profile carrying the sender's number.

Contract, as for delivery feedback (journeyman/events/feedback.py): the message's
signature was verified by the caller, it is applied in the caller's session, once (its
`MessageSid` is recorded in `provider_events`), and the journey events it gives carry
its first word and id, never its text.

- SMS (see `intent`): a STOP word revokes the SMS channel, a START word restores it, a
  HELP word is answered by the caller; any other text is the journey event
  `sms_received` with its first word as `keyword`.
- WhatsApp (`From: whatsapp:+…`): the message opens the number's 24-hour window
  (journeyman/messaging/whatsapp.py); STOP and START change the WhatsApp consent only
  (SMS consent is the SMS channel's); any other text is `whatsapp_received`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from journeyman.events import intake
from journeyman.events.feedback import TWILIO_INBOUND, record, seen
from journeyman.events.intake import Incoming
from journeyman.messaging import whatsapp
from journeyman.privacy.consent import set_consent
from journeyman.storage.models import Customer, utcnow

log = logging.getLogger(__name__)

SMS_RECEIVED = "sms_received"
WHATSAPP_RECEIVED = "whatsapp_received"

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})
PUNCTUATION = ".,;:!?\"'()"
Intent = Literal["stop", "start", "help", "message"]


@dataclass(frozen=True)
class InboundSms:
    """One text a customer sent us: `MessageSid`, `From`, `Body`, `OptOutType`."""

    message_sid: str
    from_: str
    body: str
    opt_out_type: str = ""  # Twilio's Advanced Opt-Out: STOP, START or HELP


@dataclass
class InboundOutcome:
    intent: Intent
    keyword: str
    customers: int = 0  # profiles carrying the sender's number
    duplicate: bool = False
    to_dispatch: int = 0


def keyword(body: str) -> str:
    """The first word of a text, upper-cased, without punctuation around it."""
    words = body.split()
    return words[0].strip(PUNCTUATION).upper() if words else ""


def intent(body: str, opt_out_type: str = "") -> Intent:
    """What a text asks for.

    Twilio's `OptOutType` (its Advanced Opt-Out, which also knows custom and localized
    keywords) wins over our own reading. Otherwise a text whose first word is a STOP
    word opts out ("Stop texting me" too: when in doubt, stop), while only a START
    word alone opts back in ("yes please, call me" is not consent).
    """
    opt_out = opt_out_type.strip().upper()
    if opt_out in ("STOP", "START", "HELP"):
        return cast(Intent, opt_out.lower())
    word = keyword(body)
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS and len(body.split()) == 1:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return "message"


def twilio_inbound(
    session: Session, message: InboundSms, now: datetime | None = None, key: bytes | None = None
) -> InboundOutcome:
    """Apply one inbound text to every profile with the sender's number. `key`: the
    installation's pseudonym key, which the WhatsApp window's number is digested with."""
    now = now or utcnow()
    word = keyword(message.body)
    outcome = InboundOutcome(intent=intent(message.body, message.opt_out_type), keyword=word)
    if seen(session, TWILIO_INBOUND, message.message_sid):
        outcome.duplicate = True
        return outcome
    record(session, TWILIO_INBOUND, message.message_sid, now)
    on_whatsapp = whatsapp.is_whatsapp(message.from_)
    channel, received = (
        (whatsapp.CHANNEL, WHATSAPP_RECEIVED) if on_whatsapp else ("sms", SMS_RECEIVED)
    )
    number = message.from_
    if on_whatsapp:
        number = whatsapp.bare_number(message.from_)
        whatsapp.record_inbound(session, number, now, key)
    customers = customers_with_phone(session, number)
    outcome.customers = len(customers)
    if not customers:
        what = "WhatsApp" if on_whatsapp else "text"
        log.info("inbound %s %s from a number no profile has", what, message.message_sid)
    messages: list[Incoming] = []
    for customer in customers:
        match outcome.intent:
            case "stop" | "start":
                subscribed = outcome.intent == "start"
                source = f"{channel}:{'START' if subscribed else 'STOP'}"
                detail = word or message.opt_out_type
                set_consent(
                    session, customer.id, "channel", channel, subscribed, source, now, detail
                )
            case "message":
                messages.append(
                    Incoming(
                        type="track",
                        message_id=f"{TWILIO_INBOUND}:{message.message_sid}:{customer.id}",
                        timestamp=now,
                        user_id=customer.id,
                        name=received,
                        properties={"keyword": word, "message_sid": message.message_sid},
                    )
                )
    if messages:
        outcome.to_dispatch = intake.accept_in(session, messages).to_dispatch
    return outcome


def customers_with_phone(session: Session, number: str) -> list[Customer]:
    """Profiles whose phone is `number`, spaces ignored on both sides."""
    wanted = "".join(number.split())
    if not wanted:
        return []
    return list(
        session.scalars(
            select(Customer)
            .where(func.replace(Customer.phone, " ", "") == wanted)
            .order_by(Customer.id)
        )
    )
