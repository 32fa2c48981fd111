"""The send decision, up to the message: whether a step's send goes now, waits or ends,
and on which channel. Plain functions the send activity (activities/journey.py) calls in
the ledger's transaction, in this order:

1. `paused`: an operator paused the journey: the send waits (`PAUSE_RECHECK`);
2. `choose`: the customer exists, is not in the global holdout, and one of the step's
   channels can take the message (reachable, consenting, not suppressed, not refused
   by a provider for this send already; `journeyman.messaging.channels`);
3. `check_caps`, for a send not yet claimed: the frequency cap, then the journey cap
   (`journeyman.messaging.caps`): wait for room, or give up after a day;
4. quiet hours (`Channels.quiet_until`), then the provider's pace (`pace`).

Each answers with a typed reason (`journeyman.messaging.reasons`): `Held` (deferred),
`NotSent` (skipped or failed), or None to go on. The workflow's clock (`inp.context.now`)
decides, not this machine's: quiet hours and caps must agree with the durable timers
the workflow sets, also in simulations.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from journeyman.contracts import SendInput
from journeyman.customers.profiles import find_customer
from journeyman.messaging import caps, ratelimit
from journeyman.messaging.channels import Candidate, Channels
from journeyman.messaging.providers import OutgoingMessage, Provider
from journeyman.messaging.reasons import (
    UNKNOWN_CUSTOMER,
    ChannelReason,
    ChannelReasonKind,
    Held,
    NotSent,
    no_channel,
)
from journeyman.optimization.holdout import GlobalHoldout
from journeyman.storage.models import Customer, Delivery, JourneyControl

# How long a send held by a paused journey waits before asking again (resuming wakes
# the runs sooner, see journeyman/operations/controls.py).
PAUSE_RECHECK = timedelta(minutes=5)
# What a message carries of its send, for the provider and its webhooks.
_MESSAGE_FIELDS = ("idempotency_key", "customer_id", "journey_id", "step_id", "template")


def paused(session: Session, journey_id: str, now: datetime) -> Held | None:
    """While an operator has paused the journey, the send waits and asks again."""
    control = session.get(JourneyControl, journey_id)
    if control is None or not control.paused:
        return None
    reason = f"journey paused by {control.paused_by}: {control.reason}"
    return Held("paused", reason, now + PAUSE_RECHECK)


def choose(
    session: Session,
    channels: Channels,
    holdout: GlobalHoldout,
    inp: SendInput,
    delivery: Delivery | None,
) -> tuple[Customer, Candidate] | NotSent:
    """The customer and the first channel of the step that can take the message, leaving
    out the addresses this send tried already (`delivery.attempts`)."""
    customer = find_customer(session, inp.customer_id)
    if customer is None:
        return NotSent("skipped", "unknown customer", UNKNOWN_CUSTOMER)
    held = holdout.reason(customer.id, inp.topic)
    if held is not None:
        return NotSent("skipped", "global holdout", held)
    tried = [t for t in (delivery.attempts if delivery is not None else []) if "error" in t]
    failed = {(t["channel"], t.get("address")) for t in tried}
    decision = channels.suitable(session, customer, inp, exclude=failed)
    if not decision.candidates:
        return no_channel([*map(_tried_reason, tried), *decision.passed_over])
    return customer, decision.candidates[0]


def _tried_reason(tried: dict[str, Any]) -> ChannelReason:
    """A failed try kept in the ledger, as the reason its channel was passed over."""
    # Passed over for a rule (WhatsApp's window), not refused: no failure of its own.
    kind: ChannelReasonKind = "passed over" if tried.get("kind") == "passed_over" else "refused"
    return ChannelReason(tried["channel"], kind, tried["error"])


def check_caps(
    session: Session, channels: Channels, inp: SendInput, customer_id: str, now: datetime
) -> Held | NotSent | None:
    """The frequency cap, then the journey cap, for a send that holds no slot yet. None:
    there is room; the caller claims its ledger row in this transaction."""
    cap = channels.cap_for(inp)
    if cap is not None:
        caps.lock_customer(session, customer_id)
        verdict = caps.check(
            session,
            cap,
            customer_id,
            inp.idempotency_key,
            inp.priority,
            now,
            inp.first_attempt_at,
        )
        if not verdict.allowed:
            return _cap_verdict("frequency cap", verdict)
    journey_cap = caps.parse_cap(inp.journey_cap)
    if journey_cap is not None:
        caps.lock_customer(session, customer_id)
        verdict = caps.check_journey(
            session, journey_cap, customer_id, inp.journey_id, now, inp.first_attempt_at
        )
        if not verdict.allowed:
            return _cap_verdict("journey cap", verdict)
    return None


def _cap_verdict(kind: caps.CapKind, verdict: caps.CapDecision) -> Held | NotSent:
    reason = verdict.reason or kind
    if verdict.give_up:
        return NotSent("skipped", kind, reason)
    return Held(kind, reason, verdict.until)


def capped(channels: Channels, inp: SendInput) -> bool:
    """Whether a cap counts this send: a deferred one keeps the slot it was granted."""
    return channels.cap_for(inp) is not None or inp.journey_cap is not None


def pace(
    session: Session,
    channels: Channels,
    delivery: Delivery,
    provider: Provider,
    started: datetime,
) -> Held | None:
    """Hold the send until its slot in the provider's pace; None: it may go now. Slots
    are judged by when this attempt started (`started`, on the Temporal server's clock).

    The row stays `pending` while it waits, keeping its frequency-cap slot, with the
    slot it reserved (`rate_slot_at`, for `provider`). Back at most `GRACE` after the
    slot, the send goes on it; back early (woken), it waits for it again; back later,
    or for another provider (the channel changed meanwhile), it reserves anew. Never
    a wait here: the row is not held `sending` across one.
    """
    rate = channels.rate_limit(provider)
    if rate is None:
        return None
    slot = delivery.rate_slot_at
    if slot is None or delivery.provider != provider.name or slot < started - ratelimit.GRACE:
        slot = ratelimit.reserve(session, provider.name, rate.per_second, started)
        delivery.rate_slot_at = slot
        delivery.provider = provider.name
    if slot <= started:
        return None
    return Held("pace", f"{provider.name} pace {rate}", slot)


def outgoing(
    inp: SendInput,
    delivery: Delivery,
    candidate: Candidate,
    message: Any,
    headers: dict[str, str],
) -> OutgoingMessage:
    """The rendered message, addressed, as a provider takes it."""
    return OutgoingMessage(
        **{name: getattr(inp, name) for name in _MESSAGE_FIELDS},
        delivery_id=delivery.id,
        channel=candidate.channel,
        to=candidate.address,
        subject=getattr(message, "subject", None) or getattr(message, "title", None),
        body=_body(message),
        html=getattr(message, "html", None),
        preheader=getattr(message, "preheader", None),
        data={k: str(v) for k, v in (getattr(message, "data", None) or {}).items()},
        headers=headers,
    )


def _body(message: Any) -> str:
    for attribute in ("text", "body"):
        value = getattr(message, attribute, None)
        if value:
            return str(value)
    return ""
