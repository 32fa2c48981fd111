"""Which channel a send uses, per ../shared/product/journey-dsl.md "Channels and templates".

The first channel in the step's list on which the customer is reachable (an email
address, a phone number, a push token) wins. Quiet hours hold sms and push until the
window ends in the customer's time zone: the send is deferred, not skipped, and the
workflow sleeps on a durable timer until then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from activities.providers import OutboxProvider, Provider
from journeyman.clock import window_end, zone
from journeyman.dsl.durations import parse_window
from journeyman.storage.models import Customer
from journeyman.types import SendInput

QUIET_CHANNELS = ("sms", "push")


@dataclass(frozen=True)
class Candidate:
    channel: str
    address: str  # email address, phone number or push token


@dataclass
class Decision:
    candidates: list[Candidate] = field(default_factory=list)
    reason: str | None = None
    defer_until: datetime | None = None


def address_for(customer: Customer, channel: str) -> str | None:
    if channel == "email":
        return customer.email or None
    if channel == "sms":
        return customer.phone or None
    if channel == "push":
        tokens = customer.push_tokens or []
        return tokens[0] if tokens else None
    return None


class Channels:
    """Channel choice and the provider per channel (the outbox where none is configured)."""

    def __init__(
        self,
        providers: dict[str, Provider] | None = None,
        default_quiet_hours: str | None = None,
        default_timezone: str = "UTC",
    ) -> None:
        self.providers = providers or {}
        self.outbox = OutboxProvider()
        self.default_quiet_hours = default_quiet_hours
        self.default_timezone = default_timezone

    def provider(self, channel: str) -> Provider:
        return self.providers.get(channel, self.outbox)

    def choose(
        self, session: Session, customer: Customer, inp: SendInput, now: datetime
    ) -> Decision:
        reasons: list[str] = []
        reachable: list[Candidate] = []
        for channel in inp.channels:
            address = address_for(customer, channel)
            if address is None:
                reasons.append(f"{channel}: not reachable ({_missing(channel)})")
                continue
            reachable.append(Candidate(channel, address))
        if not reachable:
            return Decision(reason="; ".join(reasons) or "no channel")
        first = reachable[0]
        quiet = inp.quiet_hours or self.default_quiet_hours
        if quiet and first.channel in QUIET_CHANNELS:
            start, end = parse_window(quiet)
            until = window_end(now, zone(customer.timezone, self.default_timezone), start, end)
            if until is not None:
                return Decision(
                    reason=f"quiet hours {quiet} for {first.channel}", defer_until=until
                )
        return Decision(candidates=reachable, reason="; ".join(reasons) or None)

    def template_names(self, candidate: Candidate, inp: SendInput) -> dict[str, Any]:
        """Extra names a template of this send sees (unsubscribe links come with consent)."""
        return {}

    def on_permanent_failure(self, candidate: Candidate, error: str) -> None:
        """A provider refused the address for good; later issues suppress it."""


def _missing(channel: str) -> str:
    return {"email": "no email address", "sms": "no phone number", "push": "no push token"}[channel]
