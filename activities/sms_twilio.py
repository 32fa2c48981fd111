"""SMS through Twilio's Programmable Messaging API, with the official `twilio` client.

One message is one Message resource created under the account: `To`, `Body`, the
sender (`From`, or a Messaging Service that picks one), and `StatusCallback`, where
Twilio posts the message's delivery status. The Message's `sid` is the provider id.

Twilio's refusals map to `PermanentFailure`s: a number that cannot take SMS (21211,
21217, 21401, 21407, 21614) with `kind="invalid_address"`, a recipient who replied STOP
(21610) with `kind="unsubscribed"`, bad credentials (401, 20003) naming the settings,
any other 4xx with `kind="rejected"`. The rest as every provider
(journeyman/messaging/providers.py).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from sqlalchemy.orm import Session
from twilio.base import values
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError

from journeyman.messaging import providers
from journeyman.messaging.providers import OutgoingMessage, PermanentFailure, TransientFailure

TWILIO_API = "https://api.twilio.com"

# Twilio error codes (https://www.twilio.com/docs/api/errors) that are about the number.
INVALID_NUMBER_CODES = frozenset({21211, 21217, 21401, 21407, 21614})
UNSUBSCRIBED_CODE = 21610
AUTHENTICATION_CODE = 20003
TOO_MANY_REQUESTS_CODE = 20429


class BaseUrlHttpClient(TwilioHttpClient):
    """The official HTTP client, sending what it addresses to Twilio to `base_url`.

    It also keeps, per thread, the headers of the last answer: Twilio's exceptions do
    not carry them, and a 429's `Retry-After` is there.
    """

    def __init__(self, base_url: str | None = None, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self._origin = urlsplit(base_url.rstrip("/")) if base_url else None
        self._last = threading.local()

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self._last.headers = {}
        response = super().request(
            method,
            self.rewrite(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        self._last.headers = response.headers or {}
        return response

    def rewrite(self, url: str) -> str:
        """`https://api.twilio.com/2010-04-01/...` as `{base_url}/2010-04-01/...`."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if self._origin is None or not (host == "twilio.com" or host.endswith(".twilio.com")):
            return url
        origin = self._origin
        return urlunsplit(
            (origin.scheme, origin.netloc, origin.path + parts.path, parts.query, parts.fragment)
        )

    def last_headers(self) -> Mapping[str, str]:
        """Headers of this thread's last answer; empty when none came."""
        return getattr(self._last, "headers", {})

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


class TwilioProvider:
    """Sends SMS through Twilio. Thread-safe: the client keeps no per-send state."""

    name = "twilio"
    transactional = False

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str | None = None,
        status_callback_url: str | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        """
        Args:
            account_sid, auth_token: the account's credentials (HTTP Basic).
            from_: the sending number or sender id; optional with a Messaging Service.
            messaging_service_sid: a Messaging Service (`MG...`) choosing the sender.
            base_url: another origin for the API (a proxy, a stand-in); the real API
                when None.
            status_callback_url: where Twilio posts delivery status changes.
            timeout: seconds to connect, and to wait for the answer.
        """
        if not from_ and not messaging_service_sid:
            raise ValueError("Twilio needs a sender: TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID")
        self.base_url = (base_url or TWILIO_API).rstrip("/")
        self._from = from_
        self._messaging_service_sid = messaging_service_sid
        self._status_callback_url = status_callback_url
        self._http = BaseUrlHttpClient(base_url, timeout=timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)

    def send(self, message: OutgoingMessage, session: Session | None) -> str:
        """Create the Message; return its sid (`SM...`)."""
        return self._create(to=message.to, body=message.body)

    def _create(self, **fields: Any) -> str:
        """Create a Message with `fields` (to, body or content) from our sender."""
        try:
            created = self._client.messages.create(
                **fields,
                from_=self._from or values.unset,
                messaging_service_sid=self._messaging_service_sid or values.unset,
                status_callback=self._status_callback_url or values.unset,
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _failure(exc, self._http.last_headers()) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise providers.unreachable("Twilio", self.base_url, exc) from exc
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise providers.unreachable("Twilio", self.base_url, exc) from exc
            raise providers.answer_lost("Twilio", exc) from exc
        except (requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise providers.answer_lost("Twilio", exc) from exc
        return str(created.sid)

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()


def _failure(
    exc: TwilioRestException | TwilioServiceException, headers: Mapping[str, str]
) -> Exception:
    """The provider failure for an error answer from Twilio."""
    status = int(exc.status)
    code = exc.code
    detail = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
    described = f"({status}, code {code}): {detail}"
    retry_after = providers.retry_after_seconds(headers.get("Retry-After"))
    if code in INVALID_NUMBER_CODES:
        return PermanentFailure(f"Twilio refused the number {described}", kind="invalid_address")
    if code == UNSUBSCRIBED_CODE:
        return PermanentFailure(
            f"The recipient unsubscribed by replying STOP {described}", kind="unsubscribed"
        )
    if status == 401 or code == AUTHENTICATION_CODE:
        return PermanentFailure(
            f"Twilio rejected the credentials {described}: "
            "check TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN"
        )
    if status == 429 or code == TOO_MANY_REQUESTS_CODE:
        return TransientFailure(f"Twilio rate limit {described}", retry_after=retry_after)
    if status >= 500:
        return TransientFailure(f"Twilio failed {described}", retry_after=retry_after)
    return PermanentFailure(f"Twilio rejected the message {described}")


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether the connection failed before anything was sent (refused, DNS, connect)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # urllib3's NewConnectionError and NameResolutionError are ConnectTimeoutErrors.
    return isinstance(reason, ConnectTimeoutError)
