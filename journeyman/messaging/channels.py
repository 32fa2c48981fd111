"""Which channel a send uses, per ../shared/product/journey-dsl.md "Channels and templates".

A channel is suitable when the customer (1) is reachable on it (an email address, a
phone number for sms and whatsapp, a push token; the inbox always), (2) consents to it
and to the journey's topic (whatsapp: opted in, see journeyman/messaging/whatsapp.py), and the
address is not suppressed (hard bounce, spam report, invalid number, SMS STOP). A
whatsapp send outside the customer's 24-hour window without an approved template
moves on to the next channel (`Channels.whatsapp_window`). The
first suitable channel in the step's list is used; a permanent rejection by its
provider moves on to the next. Then, for the send as a whole:

- the frequency cap (per customer, across journeys; see `journeyman.messaging.caps`) holds it
  until there is room, for at most a day;
- quiet hours hold sms, push and whatsapp until the window ends in the customer's time zone;
- the provider's rate limit, when it has one, holds it until its slot in the provider's
  pace (see `journeyman.messaging.ratelimit`); the outbox is never limited.

Held sends are deferred, not skipped: the workflow sleeps on a durable timer and asks
again. When no channel is suitable, the reasons for each are the skip reason.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from journeyman.contracts import SendInput
from journeyman.customers.clock import window_end, zone
from journeyman.dsl.durations import parse_window
from journeyman.messaging import caps, whatsapp
from journeyman.messaging.inbox import InboxProvider
from journeyman.messaging.providers import FailureKind, OutboxProvider, OutgoingMessage, Provider
from journeyman.messaging.ratelimit import Rate
from journeyman.messaging.reasons import ChannelReason, Held, joined
from journeyman.messaging.rendering import Renderer
from journeyman.privacy import contacts
from journeyman.privacy.consent import blocked_reason, remove_push_token, set_consent, suppress
from journeyman.privacy.pseudonyms import installation_key
from journeyman.privacy.tokens import UnsubscribeToken, unsubscribe_url
from journeyman.storage.models import Customer

QUIET_CHANNELS = ("sms", "push", "whatsapp")


@dataclass(frozen=True)
class Candidate:
    channel: str
    address: str  # email address, phone number or push token


@dataclass
class Decision:
    candidates: list[Candidate] = field(default_factory=list)
    passed_over: list[ChannelReason] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        """Why channels were passed over, as kept: "email: not reachable (...); ..."."""
        return joined(self.passed_over)


class ChannelRequest(Protocol):
    """What channel choice reads of a send (a `SendInput`, or a dry run's probe)."""

    @property
    def channels(self) -> Sequence[str]: ...

    @property
    def topic(self) -> str | None: ...


def address_digest(address: str, key: bytes | None = None) -> str:
    """A short stable digest of an address, for records that must not hold it: keyed
    with the installation's key when there is one (a phone number's unkeyed digest is
    found by trying every number)."""
    if key is None:
        return hashlib.sha256(address.encode()).hexdigest()[:16]
    return hmac.new(key, b"attempt:" + address.encode(), hashlib.sha256).hexdigest()[:16]


def addresses_for(customer: Customer, channel: str) -> list[str]:
    """Every address of the customer on a channel, best first (push: newest token first
    is the caller's order; the profile keeps tokens in the order identify sent them)."""
    if channel == "email":
        return [customer.email] if customer.email else []
    if channel == "sms":
        return [customer.phone] if customer.phone else []
    if channel == "push":
        return [t for t in (customer.push_tokens or []) if t]
    if channel == "whatsapp":
        return [whatsapp.address(customer.phone)] if customer.phone else []
    if channel == "inbox":
        return [customer.id]  # kept for the customer: anyone with a profile has one
    return []


class Channels:
    """Channel choice and the provider per channel (the outbox where none is configured)."""

    def __init__(
        self,
        providers: dict[str, Provider] | None = None,
        default_quiet_hours: str | None = None,
        default_timezone: str = "UTC",
        default_frequency_cap: str | None = None,
        public_base_url: str = "http://localhost:8000",
        signing_key: bytes | None = None,
        rate_limits: dict[str, Rate] | None = None,
        confirm_contacts: bool = False,
    ) -> None:
        self.providers = providers or {}
        # JOURNEYMAN_CLIENT_CONTACTS=confirm: contact points set by a client key wait
        # for the customer's confirmation (journeyman/privacy/contacts.py).
        self.confirm_contacts = confirm_contacts
        self.rate_limits = rate_limits or {}  # by provider name
        self.outbox = OutboxProvider()
        self.inbox = InboxProvider()  # the inbox is ours: it needs no settings
        self.default_quiet_hours = default_quiet_hours
        self.default_timezone = default_timezone
        self.default_frequency_cap = caps.parse_cap(default_frequency_cap)
        self.public_base_url = public_base_url
        self.signing_key = signing_key
        # Keys the digests of addresses kept in suppressions and the ledger's attempts.
        self.address_key = installation_key(signing_key) if signing_key is not None else None

    def provider(self, channel: str) -> Provider:
        default = self.inbox if channel == "inbox" else self.outbox
        return self.providers.get(channel, default)

    def rate_limit(self, provider: Provider) -> Rate | None:
        """The provider's pace; None for a provider with no limit, and for those that
        write in the ledger's transaction (the outbox), which nothing needs to pace."""
        if provider.transactional:
            return None
        return self.rate_limits.get(provider.name)

    def suitable(
        self,
        session: Session,
        customer: Customer,
        inp: ChannelRequest,
        exclude: set[tuple[str, str | None]] | None = None,
    ) -> Decision:
        """The reachable, consenting channels of the step in order, with the reasons the
        others were passed over. `exclude`: (channel, address digest) already rejected
        for this send."""
        reasons: list[ChannelReason] = []
        found: list[Candidate] = []
        exclude = exclude or set()
        for channel in inp.channels:
            addresses = [
                a
                for a in addresses_for(customer, channel)
                if (channel, address_digest(a, self.address_key)) not in exclude
            ]
            if not addresses:
                if any(c == channel for c, _ in exclude):
                    continue  # tried and rejected: the rejection is the reason
                text = f"not reachable ({_missing(channel)})"
                reasons.append(ChannelReason(channel, "not reachable", text))
                continue
            if channel == whatsapp.CHANNEL and not whatsapp.opted_in(session, customer):
                text = "not opted in (consent or trait whatsapp_opt_in)"
                reasons.append(ChannelReason(channel, "not opted in", text))
                continue
            blocked = None
            for address in addresses:
                blocked = blocked_reason(
                    session, customer.id, channel, address, inp.topic, self.address_key
                )
                if (
                    blocked is None
                    and self.confirm_contacts
                    and contacts.unconfirmed(session, customer.id, channel, address)
                ):
                    blocked = contacts.HELD_REASON
                if blocked is None:
                    found.append(Candidate(channel, address))
                    break
            if blocked is not None:
                reasons.append(ChannelReason(channel, "blocked", blocked))
        return Decision(candidates=found, passed_over=reasons)

    def cap_for(self, inp: SendInput) -> caps.Cap | None:
        if inp.frequency_cap == "none":
            return None
        return caps.parse_cap(inp.frequency_cap) or self.default_frequency_cap

    def quiet_until(self, customer: Customer, channel: str, inp: SendInput) -> Held | None:
        """A deferral when `channel` is in quiet hours for this customer now."""
        quiet = inp.quiet_hours or self.default_quiet_hours
        if not quiet or channel not in QUIET_CHANNELS:
            return None
        start, end = parse_window(quiet)
        tz = zone(customer.timezone, self.default_timezone)
        until = window_end(inp.context.now, tz, start, end)
        if until is None:
            return None
        return Held("quiet hours", f"quiet hours {quiet} for {channel}", until)

    def whatsapp_window(
        self,
        session: Session,
        candidate: Candidate,
        renderer: Renderer,
        inp: SendInput,
        locale: str | None,
    ) -> str | None:
        """Why a WhatsApp send may not go now: outside the customer's 24-hour window with
        no approved template (`whatsapp.yaml`) to send instead; None when it may."""
        if candidate.channel != whatsapp.CHANNEL:
            return None
        if whatsapp.window_open(session, candidate.address, inp.context.now, self.address_key):
            return None
        if renderer.whatsapp_approved(inp.template, locale) is not None:
            return None
        return (
            f"outside the 24-hour window since the customer's last WhatsApp message, and "
            f"template {inp.template!r} has no {whatsapp.CONTENT_FILE} (an approved template)"
        )

    def whatsapp_outgoing(
        self, session: Session, message: OutgoingMessage, now: datetime
    ) -> OutgoingMessage:
        """Within the window the free-form text goes (`whatsapp.txt`); outside it, the
        approved template the rendering put in `data` (checked by `whatsapp_window`)."""
        if whatsapp.window_open(session, message.to, now, self.address_key):
            data = {
                k: v
                for k, v in message.data.items()
                if k not in ("content_sid", "content_variables")
            }
            return replace(message, data=data)
        return message

    def template_names(
        self, customer_id: str, candidate: Candidate, inp: SendInput
    ) -> dict[str, Any]:
        """Names a template of this send sees besides the profile and events:
        `unsubscribe_url`, which unsubscribes from the journey's topic (else the channel)."""
        if self.signing_key is None:
            return {}
        token = UnsubscribeToken(customer_id, inp.topic, candidate.channel)
        url = unsubscribe_url(self.public_base_url, self.signing_key, token)
        return {"unsubscribe_url": url}

    @staticmethod
    def headers(channel: str, names: dict[str, Any]) -> dict[str, str]:
        """The mail headers of a marketing email: RFC 8058 one-click unsubscribe."""
        url = names.get("unsubscribe_url")
        if channel != "email" or not url:
            return {}
        return {
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }

    def on_permanent_failure(
        self,
        session: Session,
        customer_id: str,
        candidate: Candidate,
        kind: FailureKind,
        error: str,
        now: datetime,
    ) -> None:
        """A provider refused the address for good: make sure it is not tried again."""
        source = f"provider:{self.provider(candidate.channel).name}"
        if kind == "invalid_address":
            suppress(
                session,
                candidate.channel,
                candidate.address,
                "invalid",
                source,
                now,
                error,
                key=self.address_key,
            )
        elif kind == "unregistered_token":
            remove_push_token(session, customer_id, candidate.address)
        elif kind == "unsubscribed":
            channel = candidate.channel
            set_consent(session, customer_id, "channel", channel, False, source, now, error)


def _missing(channel: str) -> str:
    return {
        "email": "no email address",
        "sms": "no phone number",
        "push": "no push token",
        "whatsapp": "no phone number",
    }.get(channel, "no address")
