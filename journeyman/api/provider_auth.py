"""Signatures of the providers' webhooks: what makes these public endpoints safe.

- SendGrid's Signed Event Webhook: `X-Twilio-Email-Event-Webhook-Signature` is a base64
  DER ECDSA P-256 / SHA-256 signature of `X-Twilio-Email-Event-Webhook-Timestamp`
  followed by the raw body, verified with the public key SendGrid shows under Mail
  Settings (`SENDGRID_WEBHOOK_PUBLIC_KEY`, base64 DER SubjectPublicKeyInfo; a PEM
  block is accepted too). Timestamps further than `JOURNEYMAN_WEBHOOK_TOLERANCE`
  seconds from now are refused, so a captured request cannot be replayed later.
  (`sendgrid.helpers.eventwebhook.EventWebhook` checks the same thing, but on a
  decoded string; `cryptography` verifies the bytes as they arrived.)
- Twilio: `X-Twilio-Signature` is an HMAC-SHA1 of the URL Twilio called and the
  sorted form parameters, keyed with the account's auth token, checked with the
  official `twilio.request_validator.RequestValidator`. The URL is rebuilt from
  `PUBLIC_BASE_URL` and the request path, never from the `Host` the request arrived
  with: behind a proxy that one is not what Twilio signed, and trusting it would let
  the caller pick the URL.

Anything missing, malformed or not matching is a 403 and nothing is applied. A
provider whose secret is not configured gets a 503 saying so: unsigned events are
never accepted.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from fastapi import Depends, Request
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator

from journeyman.api.deps import WIRE_BODY, SettingsDep
from journeyman.api.errors import ApiError

log = logging.getLogger(__name__)

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"


def forbidden(error: str, header: str | None = None) -> ApiError:
    detail = [{"field": header, "message": error, "type": "signature"}] if header else None
    return ApiError(403, error, detail)


def not_configured(provider: str, variable: str) -> ApiError:
    return ApiError(
        503,
        f"the {provider} webhook is not configured: set {variable}",
        [{"field": variable, "message": "not set", "type": "not_configured"}],
    )


# -- SendGrid -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def sendgrid_public_key(encoded: str) -> ec.EllipticCurvePublicKey:
    """The key of `SENDGRID_WEBHOOK_PUBLIC_KEY`; ValueError when it is not a P-256 key."""
    lines = [line.strip() for line in encoded.strip().splitlines()]
    base64_text = "".join(line for line in lines if line and not line.startswith("-----"))
    try:
        key = load_der_public_key(base64.b64decode(base64_text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA P-256 public key")
    return key


def verify_sendgrid(
    key: ec.EllipticCurvePublicKey,
    headers: Mapping[str, str],
    bodies: list[bytes],
    tolerance_seconds: int,
    now: float | None = None,
) -> None:
    """Raise a 403 unless the signature header signs the timestamp and one of `bodies`
    (as received and, for a gzip request, as decoded), and the timestamp is recent."""
    signature = headers.get(SENDGRID_SIGNATURE)
    timestamp = headers.get(SENDGRID_TIMESTAMP)
    if not signature:
        raise forbidden(f"missing {SENDGRID_SIGNATURE} header", SENDGRID_SIGNATURE)
    if not timestamp:
        raise forbidden(f"missing {SENDGRID_TIMESTAMP} header", SENDGRID_TIMESTAMP)
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise forbidden("the signature timestamp is not Unix seconds", SENDGRID_TIMESTAMP) from None
    now = time.time() if now is None else now
    if abs(now - sent_at) > tolerance_seconds:
        raise forbidden("the signature timestamp is too old or too new", SENDGRID_TIMESTAMP)
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except binascii.Error:
        raise forbidden("the signature is not base64", SENDGRID_SIGNATURE) from None
    for body in bodies:
        try:
            key.verify(raw, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return
    raise forbidden("invalid SendGrid signature", SENDGRID_SIGNATURE)


async def sendgrid_body(request: Request, settings: SettingsDep) -> bytes:
    """The body of a SendGrid Event Webhook request whose signature verified."""
    encoded = settings.sendgrid_webhook_public_key
    if not encoded:
        raise not_configured("SendGrid", "SENDGRID_WEBHOOK_PUBLIC_KEY")
    try:
        key = sendgrid_public_key(encoded)
    except ValueError as exc:
        log.error("SendGrid events refused: %s", exc)
        raise ApiError(503, f"the SendGrid webhook is misconfigured: {exc}") from None
    body = await request.body()
    wire = request.scope.get(WIRE_BODY, body)
    bodies = [wire] if wire == body else [wire, body]
    verify_sendgrid(key, request.headers, bodies, settings.webhook_tolerance_seconds)
    return body


SendGridBody = Annotated[bytes, Depends(sendgrid_body)]


# -- Twilio ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioForm:
    """The form parameters of a Twilio webhook whose signature verified."""

    params: ImmutableMultiDict[str, str]

    def get(self, name: str) -> str:
        """The parameter's value, "" when absent."""
        return self.params.get(name) or ""


def twilio_url(public_base_url: str, path: str, query: str = "", root_path: str = "") -> str:
    """The URL Twilio was given for this endpoint: `PUBLIC_BASE_URL` + path + query.

    `path` may include the app's mount point (`root_path`); `PUBLIC_BASE_URL` already
    names it, so it is not repeated.
    """
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    return public_base_url.rstrip("/") + path + (f"?{query}" if query else "")


def verify_twilio(
    auth_token: str, url: str, params: ImmutableMultiDict[str, str], signature: str | None
) -> None:
    """Raise a 403 unless `signature` is Twilio's for `url` and `params`."""
    if not signature:
        raise forbidden(f"missing {TWILIO_SIGNATURE} header", TWILIO_SIGNATURE)
    if not RequestValidator(auth_token).validate(url, params, signature):
        raise forbidden("invalid Twilio signature", TWILIO_SIGNATURE)


async def twilio_form(request: Request, settings: SettingsDep) -> TwilioForm:
    """The form of a Twilio webhook request whose signature verified."""
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    if not token:
        raise not_configured("Twilio", "TWILIO_AUTH_TOKEN")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise forbidden("the form is not UTF-8") from None
    params: ImmutableMultiDict[str, str] = ImmutableMultiDict(pairs)
    url = twilio_url(
        settings.public_base_url,
        request.scope["path"],
        request.scope["query_string"].decode("latin-1"),
        request.scope.get("root_path", ""),
    )
    verify_twilio(token, url, params, request.headers.get(TWILIO_SIGNATURE))
    return TwilioForm(params)


TwilioFormDep = Annotated[TwilioForm, Depends(twilio_form)]
