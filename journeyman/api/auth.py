"""Who may call: write keys and signed webhooks send events, the admin token reads.

- Write keys (HTTP Basic user name, as Segment's libraries send them; or `writeKey` in
  a batch body) only send events. Client keys (JOURNEYMAN_WRITE_KEYS) ship inside apps
  and are not secret: what their messages may change is limited (journeyman/events/intake.py
  `Refused`, docs/api.md). Server keys (JOURNEYMAN_SERVER_KEYS) are secret, sent by the
  operator's servers, and may do everything Segment's API allows; so may a signed
  webhook, whose secret is the operator's too.
- Standard Webhooks (https://www.standardwebhooks.com), checked by the standard's own
  `standardwebhooks` library: `webhook-signature` holds one or more
  `v1,<base64 HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the
  base64 part of `whsec_...`; several signatures (the sender rotating its key) or
  several configured secrets (us rotating) pass when any pair matches. Timestamps
  more than five minutes away from now are refused, so a captured request cannot be
  replayed later.
- The admin token: `Authorization: Bearer <token>`, or HTTP Basic with the token as
  password so that a browser can open the pages.

Every comparison of a secret is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import standardwebhooks
from standardwebhooks.webhooks import WebhookVerificationError

from journeyman.api.errors import ApiError

WEBHOOK_TOLERANCE_SECONDS = 5 * 60
SECRET_PREFIX = "whsec_"
# Svix, where the standard comes from, sends the same headers under its own prefix.
HEADER_PREFIXES = ("webhook-", "svix-")


@dataclass(frozen=True)
class Sender:
    """Who sent an intake request."""

    kind: str  # client | server | webhook
    webhook_id: str | None = None

    @property
    def source(self) -> str:
        """What the stored event records as where it came from."""
        return self.kind


def unauthorized(error: str, scheme: str = 'Basic realm="journeyman"') -> ApiError:
    return ApiError(401, error, headers={"WWW-Authenticate": scheme})


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user, password


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def matches_any(candidate: str, secrets: list[str]) -> bool:
    """Constant-time membership: compares with every secret, whatever the first says."""
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(candidate.encode(), secret.encode())
    return found


def check_admin(authorization: str | None, admin_token: str | None) -> None:
    if not admin_token:
        raise unauthorized("the admin token is not configured (JOURNEYMAN_ADMIN_TOKEN)")
    token = bearer_token(authorization)
    if token is None:
        credentials = basic_credentials(authorization)
        token = credentials[1] if credentials else None
    if token is None:
        raise unauthorized("admin token required: Authorization: Bearer <token>")
    if not matches_any(token, [admin_token]):
        raise unauthorized("invalid admin token")


def user_hash(secret: str, user_id: str) -> str:
    """Identity verification: the hex HMAC-SHA256 of the userId, as the operator's
    server computes it for its app (JOURNEYMAN_IDENTITY_SECRET)."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_user_hash(secret: str, user_id: str, given: object) -> bool:
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(user_hash(secret, user_id).encode(), given.strip().lower().encode())


# -- Standard Webhooks ----------------------------------------------------------------


@dataclass(frozen=True)
class WebhookHeaders:
    id: str
    timestamp: str
    signature: str

    @classmethod
    def find(cls, headers: Mapping[str, str]) -> WebhookHeaders | str | None:
        """The three headers; None when none is there; the name of a missing one."""
        if not any(name.lower().startswith(HEADER_PREFIXES) for name in headers):
            return None  # most requests, in one pass over the headers instead of six
        for prefix in HEADER_PREFIXES:
            values = {name: headers.get(f"{prefix}{name}") for name in ("id", "timestamp")}
            values["signature"] = headers.get(f"{prefix}signature")
            if any(values.values()):
                for name, value in values.items():
                    if not value:
                        return f"{prefix}{name}"
                return cls(values["id"] or "", values["timestamp"] or "", values["signature"] or "")
        return None


def webhook_keys(secrets: str) -> list[bytes]:
    """The signing keys of `JOURNEYMAN_WEBHOOK_SECRET`: one `whsec_...` or several,
    separated by spaces or commas (during a rotation)."""
    keys = []
    for secret in secrets.replace(",", " ").split():
        raw = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise ValueError("JOURNEYMAN_WEBHOOK_SECRET is not whsec_<base64>") from exc
        if not key:
            raise ValueError("JOURNEYMAN_WEBHOOK_SECRET is empty: whsec_<base64 of the key>")
        keys.append(key)
    return keys


class _Webhook(standardwebhooks.Webhook):
    """The standard's reference implementation, with the age a message may have set by
    JOURNEYMAN_WEBHOOK_TOLERANCE (the reference fixes it at five minutes, the default)."""

    def __init__(self, key: bytes, now: float, tolerance: float) -> None:
        super().__init__(key)
        self._now = now
        self._tolerance = tolerance

    # Overrides the reference's private timestamp check (its name is mangled).
    def _Webhook__verify_timestamp(self, timestamp_header: str) -> datetime:
        try:
            sent_at = float(timestamp_header)
        except ValueError:
            raise WebhookVerificationError("invalid webhook-timestamp") from None
        if abs(self._now - sent_at) > self._tolerance:
            raise WebhookVerificationError("webhook-timestamp too old or too new")
        return datetime.fromtimestamp(sent_at, tz=UTC)


def verify_webhook(
    keys: list[bytes],
    headers: WebhookHeaders,
    bodies: list[bytes],
    now: float | None = None,
    tolerance: float = WEBHOOK_TOLERANCE_SECONDS,
) -> None:
    """Raise a 401 unless one of `headers.signature` signs one of `bodies` with one key,
    sent within `tolerance` seconds of now (JOURNEYMAN_WEBHOOK_TOLERANCE). The check is
    the `standardwebhooks` reference library's.

    `bodies` are the body as received and, for a gzip request, as decoded: a sender
    may have signed either (the reference signs text: a body that is not UTF-8, the
    compressed one, cannot be what was signed).
    """
    try:
        sent_at = int(headers.timestamp)
    except ValueError:
        raise unauthorized("invalid webhook-timestamp", scheme="Webhook") from None
    now = time.time() if now is None else now
    if abs(now - sent_at) > tolerance:
        raise unauthorized("webhook-timestamp too old or too new", scheme="Webhook")
    # The reference parses every `version,signature` pair and stops at a malformed one:
    # only well-formed v1 signatures are handed to it (others could never match).
    given = " ".join(
        part
        for part in headers.signature.split()
        if part.startswith("v1,") and _base64(part.partition(",")[2])
    )
    if not given:
        raise unauthorized("invalid webhook signature", scheme="Webhook")
    standard = {
        "webhook-id": headers.id,
        "webhook-timestamp": headers.timestamp,
        "webhook-signature": given,
    }
    texts = []
    for body in bodies:
        try:
            texts.append(body.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    for key in keys:
        webhook = _Webhook(key, now, tolerance)
        for text in texts:
            try:
                webhook.verify(text, standard, json_parse=False)
            except WebhookVerificationError:
                continue
            return
    raise unauthorized("invalid webhook signature", scheme="Webhook")


def _base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(text)
