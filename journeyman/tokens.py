"""Signed unsubscribe tokens: who, from what, unforgeable without the service's key.

A token is `<payload>.<mac>`, both base64url without padding: the payload is compact
JSON `{"c": customer id, "t": topic or null, "h": channel}`, the MAC its HMAC-SHA256
under the signing key, cut to 128 bits. Changing any byte of the payload (another
customer, another topic) breaks the MAC; the key never leaves the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import quote

MAC_BYTES = 16


class BadToken(ValueError):
    """The token was not made by this service (or was altered)."""


@dataclass(frozen=True)
class UnsubscribeToken:
    customer_id: str
    topic: str | None
    channel: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, b"unsubscribe:" + payload.encode("ascii"), hashlib.sha256).digest()
    return _b64(digest[:MAC_BYTES])


def sign(key: bytes, token: UnsubscribeToken) -> str:
    body = {"c": token.customer_id, "t": token.topic, "h": token.channel}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_mac(key, payload)}"


def verify(key: bytes, text: str) -> UnsubscribeToken:
    payload, _, mac = text.partition(".")
    if not payload or not mac or not hmac.compare_digest(mac, _mac(key, payload)):
        raise BadToken("this unsubscribe link is not valid")
    try:
        body = json.loads(_unb64(payload))
        return UnsubscribeToken(customer_id=str(body["c"]), topic=body["t"], channel=body["h"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadToken("this unsubscribe link is not valid") from None


def unsubscribe_url(base_url: str, key: bytes, token: UnsubscribeToken) -> str:
    return f"{base_url.rstrip('/')}/unsubscribe/{quote(sign(key, token), safe='.-_')}"
