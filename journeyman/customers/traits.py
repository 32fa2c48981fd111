"""Trait changes as events: the built-in `trait_changed` (journey DSL v2).

When an `identify` (journeyman/events/intake.py) or an `update_profile` step
(activities/journey.py) changes a trait, the customer gets one `trait_changed` track
event per changed trait, with properties `trait`, `old` and `new`. Setting a trait to
the value it has is no change; clearing it (null) is a change to `new: null`.

The events are stored in the same transaction as the change, undispatched, so the
dispatcher routes them like any track event: they are never lost, and their message ids
are derived from the source (the identify's message id, or the update step's
idempotency key) and the trait, so a retried identify or step stores nothing twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeyman.storage.models import Customer, Event

TRAIT_CHANGED = "trait_changed"


@dataclass(frozen=True)
class TraitChange:
    trait: str
    old: Any
    new: Any


def snapshot(customer: Customer) -> dict[str, Any]:
    """The customer's traits: what `profile` shows besides its contact fields (`id`,
    `email`, `phone`, `timezone`, `locale` and push tokens, which are no traits and
    give no trait_changed)."""
    return dict(customer.traits or {})


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[TraitChange]:
    """Each trait whose value differs between two snapshots, in a stable order."""
    return [
        TraitChange(trait, before.get(trait), after.get(trait))
        for trait in sorted({*before, *after})
        if not _same(before.get(trait), after.get(trait))
    ]


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind: 1 and 1.0 are the same, "1" and 1 or True and 1
    are not (a trait that turns from text into a number changed)."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return isinstance(a, bool) == isinstance(b, bool) and a == b
    return type(a) is type(b) and a == b


def message_id(source_id: str, trait: str) -> str:
    """The derived message id of a trait change: the same for the same source and trait."""
    digest = hashlib.sha256(f"{source_id}\0{trait}".encode()).hexdigest()[:40]
    return f"{TRAIT_CHANGED}-{digest}"


def store(
    session: Session,
    customer_id: str,
    source_id: str,
    found: list[TraitChange],
    timestamp: datetime,
    received_at: datetime,
) -> int:
    """Add the `trait_changed` events of `found` to the session, undispatched, except
    those stored already (a retried source); returns how many were added."""
    if not found:
        return 0
    ids = {change.trait: message_id(source_id, change.trait) for change in found}
    stored = set(
        session.scalars(select(Event.message_id).where(Event.message_id.in_(ids.values())))
    )
    added = 0
    for change in found:
        if ids[change.trait] in stored:
            continue
        session.add(
            Event(
                message_id=ids[change.trait],
                type="track",
                customer_id=customer_id,
                anonymous_id=None,
                name=TRAIT_CHANGED,
                properties={"trait": change.trait, "old": change.old, "new": change.new},
                timestamp=timestamp,
                received_at=received_at,
                dispatched_at=None,
            )
        )
        added += 1
    return added
