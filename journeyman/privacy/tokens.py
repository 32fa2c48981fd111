"""Signed unsubscribe tokens: who, from what, unforgeable without the service's key.

Tokens made now (`v2~<sealed>`) are opaque: `<sealed>` is base64url (no padding) of a
12-byte nonce and the AES-256-GCM encryption of compact JSON `{"c": customer id,
"t": topic or null, "h": channel, "d": issue date}` under a key derived from the signing
key. Nothing in the link is readable (the customer id is not in it in clear) and any
changed byte breaks the GCM tag. A token older than `max_age` days (the issue date) is
refused as expired.

Tokens of links sent before (`<payload>.<mac>`: readable JSON `{"c", "t", "h"}`, the MAC
its HMAC-SHA256 under the signing key cut to 128 bits) keep working, as RFC 8058 asks of a
List-Unsubscribe URL for as long as the message may be read.

Every token is checked for shape (ASCII base64url, bounded length) before anything is
decoded: odd input is a BadToken (a 400 page), never an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAC_BYTES = 16
NONCE_BYTES = 12
V2_PREFIX = "v2~"
MAX_TOKEN_CHARS = 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
INVALID = "this unsubscribe link is not valid"


class BadToken(ValueError):
    """The token was not made by this service (or was altered, or has expired)."""


@dataclass(frozen=True)
class UnsubscribeToken:
    customer_id: str
    topic: str | None
    channel: str
    # The day the link was made; None for the links of before (no date in them).
    issued: date | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, b"unsubscribe:" + payload.encode("ascii"), hashlib.sha256).digest()
    return _b64(digest[:MAC_BYTES])


def _sealing_key(key: bytes) -> AESGCM:
    return AESGCM(hmac.new(key, b"unsubscribe token sealing", hashlib.sha256).digest())


def sign(key: bytes, token: UnsubscribeToken, today: date | None = None) -> str:
    """An opaque token for `token`, issued `today` (default: the current UTC date)."""
    issued = today or token.issued or datetime.now(UTC).date()
    body = {"c": token.customer_id, "t": token.topic, "h": token.channel, "d": issued.isoformat()}
    plain = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    nonce = os.urandom(NONCE_BYTES)
    sealed = _sealing_key(key).encrypt(nonce, plain, V2_PREFIX.encode())
    return V2_PREFIX + _b64(nonce + sealed)


def sign_v1(key: bytes, token: UnsubscribeToken) -> str:
    """A token in the form of the links sent before v2 (readable, no date): kept so the
    tests can prove those links still work; new links are made by `sign`."""
    body = {"c": token.customer_id, "t": token.topic, "h": token.channel}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_mac(key, payload)}"


def verify(
    key: bytes, text: str, *, max_age: timedelta | None = None, today: date | None = None
) -> UnsubscribeToken:
    """The token `text` stands for; BadToken when it is not ours, altered or expired."""
    if not text.isascii() or len(text) > MAX_TOKEN_CHARS:
        raise BadToken(INVALID)
    if text.startswith(V2_PREFIX):
        token = _verify_v2(key, text)
        now = today or datetime.now(UTC).date()
        if max_age is not None and token.issued is not None and now - token.issued > max_age:
            raise BadToken("this unsubscribe link has expired: use the link of a newer message")
        return token
    return _verify_v1(key, text)


def _verify_v2(key: bytes, text: str) -> UnsubscribeToken:
    sealed = text.removeprefix(V2_PREFIX)
    if not _B64URL.fullmatch(sealed):
        raise BadToken(INVALID)
    try:
        raw = _unb64(sealed)
        if len(raw) <= NONCE_BYTES:
            raise BadToken(INVALID)
        plain = _sealing_key(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], V2_PREFIX.encode())
        body = json.loads(plain)
        return UnsubscribeToken(
            customer_id=str(body["c"]),
            topic=body["t"],
            channel=str(body["h"]),
            issued=date.fromisoformat(body["d"]),
        )
    except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error):
        raise BadToken(INVALID) from None


def _verify_v1(key: bytes, text: str) -> UnsubscribeToken:
    payload, _, mac = text.partition(".")
    if not _B64URL.fullmatch(payload) or not _B64URL.fullmatch(mac):
        raise BadToken(INVALID)
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise BadToken(INVALID)
    try:
        body = json.loads(_unb64(payload))
        topic = body["t"]
        if topic is not None and not isinstance(topic, str):
            raise TypeError("topic")
        return UnsubscribeToken(customer_id=str(body["c"]), topic=topic, channel=str(body["h"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadToken(INVALID) from None


def unsubscribe_url(base_url: str, key: bytes, token: UnsubscribeToken) -> str:
    return f"{base_url.rstrip('/')}/unsubscribe/{quote(sign(key, token), safe='.-_~')}"
