"""Email through SendGrid's v3 Mail Send API, with the official `sendgrid` client.

One message is one `POST /v3/mail/send`: the rendered text and HTML parts, the
message's headers (List-Unsubscribe), and `custom_args` carrying `delivery_id`,
`journey_id` and `step_id`, which SendGrid copies into every Event Webhook event so
delivery events map back to the ledger. SendGrid answers 202 with the message id in
`X-Message-Id`.

Refusals map to `PermanentFailure`s: a 400 about the recipient's address with
`kind="invalid_address"`, any other 4xx with `kind="rejected"` (401 and 403 saying
which setting to check). A 429 waits for `Retry-After`, else SendGrid's
`X-RateLimit-Reset`; the rest as every provider (journeyman/messaging/providers.py).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
from email.utils import parseaddr
from typing import Any

import sendgrid
from python_http_client.exceptions import HTTPError
from sqlalchemy.orm import Session

from journeyman.messaging import providers
from journeyman.messaging.providers import OutgoingMessage, PermanentFailure, TransientFailure

SENDGRID_API = "https://api.sendgrid.com"

# SendGrid names the offending field; these point at a recipient's address.
_RECIPIENT_FIELD = re.compile(r"^personalizations\.\d+\.(to|cc|bcc)\.\d+\.email$")


class SendGridProvider:
    """Sends email through SendGrid. Thread-safe: each send builds its own client."""

    name = "sendgrid"
    transactional = False

    def __init__(
        self,
        api_key: str,
        email_from: str,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        """
        Args:
            api_key: a SendGrid API key with the Mail Send permission.
            email_from: the sender, `noreply@shop.com` or `Shop <noreply@shop.com>`.
            base_url: another origin for the API (a proxy, a stand-in); the real API
                when None.
            timeout: seconds to connect, and to wait for each read of the answer.
        """
        self._api_key = api_key
        self._sender = parse_sender(email_from)
        self.base_url = (base_url or SENDGRID_API).rstrip("/")
        self._timeout = timeout

    def send(self, message: OutgoingMessage, session: Session | None) -> str:
        """POST the message; return SendGrid's message id (`X-Message-Id`)."""
        client = sendgrid.SendGridAPIClient(api_key=self._api_key, host=self.base_url)
        try:
            response = client.client.mail.send.post(
                request_body=mail_body(message, self._sender), timeout=self._timeout
            )
        except HTTPError as exc:
            raise _failure(exc) from exc
        except urllib.error.URLError as exc:
            # urllib wraps everything that fails before the request is fully sent.
            raise providers.unreachable("SendGrid", self.base_url, exc.reason) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise providers.answer_lost("SendGrid", repr(exc)) from exc
        return response.headers.get("X-Message-Id") or f"sendgrid-{message.delivery_id}"

    def close(self) -> None:
        """Nothing to close: each send opens and closes its own connection."""


def parse_sender(email_from: str) -> dict[str, str]:
    """`Shop <noreply@shop.com>` as SendGrid's `{"email": ..., "name": ...}`."""
    name, address = parseaddr(email_from)
    if "@" not in address:
        raise ValueError(f"EMAIL_FROM is not an email address: {email_from!r}")
    return {"email": address, "name": name} if name else {"email": address}


def mail_body(message: OutgoingMessage, sender: dict[str, str]) -> dict[str, Any]:
    """The v3 Mail Send request body for one message to one recipient."""
    content = []
    # SendGrid requires text/plain first, then text/html, each non-empty.
    if message.body:
        content.append({"type": "text/plain", "value": message.body})
    if message.html:
        content.append({"type": "text/html", "value": message.html})
    custom_args = {
        "delivery_id": str(message.delivery_id),
        "journey_id": message.journey_id,
        "step_id": message.step_id,
    }
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": message.to}]}],
        "from": sender,
        "subject": message.subject or "",
        "content": content,
        # Only strings are accepted, and empty values say nothing to a webhook.
        "custom_args": {key: value for key, value in custom_args.items() if value},
    }
    if message.headers:
        body["headers"] = dict(message.headers)
    if message.journey_id:
        body["categories"] = [message.journey_id]
    return body


def _failure(exc: HTTPError) -> Exception:
    """The provider failure for an error answer from SendGrid."""
    status = int(exc.status_code)
    errors = _errors(exc.body)
    detail = "; ".join(str(error.get("message")) for error in errors) or str(exc.reason)
    if status == 401:
        return PermanentFailure("SendGrid rejected the API key (401): check SENDGRID_API_KEY")
    if status == 403:
        return PermanentFailure(
            f"SendGrid refused the request (403): {detail}. Check that SENDGRID_API_KEY "
            "has the Mail Send permission and that EMAIL_FROM is a verified sender"
        )
    if status == 429:
        return TransientFailure(
            f"SendGrid rate limit (429): {detail}", retry_after=_retry_after(exc.headers)
        )
    if status >= 500:
        return TransientFailure(
            f"SendGrid failed ({status}): {detail}", retry_after=_retry_after(exc.headers)
        )
    if status == 400 and any(_about_recipient(error) for error in errors):
        return PermanentFailure(
            f"SendGrid refused the recipient (400): {detail}", kind="invalid_address"
        )
    return PermanentFailure(f"SendGrid rejected the message ({status}): {detail}")


def _errors(body: bytes | str | None) -> list[dict[str, Any]]:
    """SendGrid's `{"errors": [{"message", "field", "help"}]}`, or [] for anything else."""
    try:
        errors = json.loads(body or b"").get("errors")
    except (ValueError, AttributeError):
        return []
    return (
        [error for error in errors if isinstance(error, dict)] if isinstance(errors, list) else []
    )


def _about_recipient(error: dict[str, Any]) -> bool:
    field = error.get("field")
    if field:
        return bool(_RECIPIENT_FIELD.match(str(field)))
    return "invalid email" in str(error.get("message", "")).lower()


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait: `Retry-After`, else SendGrid's `X-RateLimit-Reset` (epoch)."""
    if headers is None:
        return None
    seconds = providers.retry_after_seconds(headers.get("Retry-After"))
    if seconds is not None:
        return seconds
    try:
        return max(0.0, float(headers.get("X-RateLimit-Reset")) - time.time())
    except (TypeError, ValueError):
        return None
