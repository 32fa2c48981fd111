"""Keyed pseudonyms and erasure tombstones: HMAC-SHA256 under the installation's key.

What erasure keeps for statistics carries `erased-<32 hex>` instead of a customer id,
the HMAC of the id under a key derived from JOURNEYMAN_SECRET_KEY (else the admin
token, as for unsubscribe links): without the key, nobody can recompute it from an id
they suspect, nor test a list of ids against it (an unsalted `sha256(id)` allowed both).

A tombstone (`erasure_tombstones`) is another HMAC of each erased identity, written
before anything else of the erasure: routing, sends, profile updates and the step log
check it before they write a customer id, so work already under way when the customer
is erased (a send in flight, an event being routed) cannot write the real id back.
It holds while the id has no profile made after the erasure: a customer who comes back
(new events create a new profile) is a new customer, and is not held.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeyman.settings import Settings
from journeyman.storage.models import Customer, ErasureTombstone

PREFIX = "erased-"


def installation_key(signing_key: bytes) -> bytes:
    """The pseudonym key, derived from the signing key (never the same bytes)."""
    return hmac.new(signing_key, b"journeyman pseudonyms", hashlib.sha256).digest()


def settings_key(settings: Settings) -> bytes | None:
    """The installation key of `settings`; None without JOURNEYMAN_SECRET_KEY or an admin
    token (nothing is keyed then, and no erasure can be asked for)."""
    try:
        return installation_key(settings.signing_key())
    except ValueError:
        return None


def pseudonym(key: bytes, customer_id: str) -> str:
    digest = hmac.new(key, b"customer:" + customer_id.encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:32]


def tombstone_digest(key: bytes, customer_id: str) -> str:
    return hmac.new(key, b"tombstone:" + customer_id.encode(), hashlib.sha256).hexdigest()


def bury(session: Session, key: bytes, customer_ids: list[str], at: datetime) -> None:
    """Tombstones for `customer_ids` (kept, or moved to `at`, when there already)."""
    for customer_id in customer_ids:
        digest = tombstone_digest(key, customer_id)
        row = session.get(ErasureTombstone, digest)
        if row is None:
            session.add(ErasureTombstone(digest=digest, erased_at=at))
        else:
            row.erased_at = at
    session.flush()


def erased(session: Session, key: bytes | None, customer_id: str) -> bool:
    """Whether `customer_id` was erased and has not come back since: a tombstone, and no
    profile, or only one made before the erasure (the erasure is still under way)."""
    if key is None:
        return False
    row = session.get(ErasureTombstone, tombstone_digest(key, customer_id))
    if row is None:
        return False
    created = session.scalar(select(Customer.created_at).where(Customer.id == customer_id))
    return created is None or created <= row.erased_at
