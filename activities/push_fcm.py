"""Push through Firebase Cloud Messaging's HTTP v1 API.

One message is one `POST /v1/projects/{project}/messages:send` to one device token,
with the title and body as a notification and `data` as string pairs (FCM accepts
nothing else there). FCM answers with the message's `name`
(`projects/{project}/messages/{id}`), the provider id.

The request carries an OAuth 2.0 access token for a Google service account (the JSON
key in `GOOGLE_APPLICATION_CREDENTIALS`), obtained from the account's `token_uri` and
reused until it nears expiry.

FCM's refusals map to `PermanentFailure`s: a token no longer valid (404 UNREGISTERED,
or a 400 about `message.token`) with `kind="unregistered_token"`, any other 400, 401 or
403 with `kind="rejected"` (401 and 403 saying what to check). 429 (QUOTA_EXCEEDED) and
5xx (UNAVAILABLE, INTERNAL) as every provider (journeyman/messaging/providers.py).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import google.auth.exceptions
import httpx
import requests
from google.auth.transport.requests import Request
from google.oauth2 import service_account
from sqlalchemy.orm import Session

from journeyman.messaging import providers
from journeyman.messaging.providers import OutgoingMessage, PermanentFailure, TransientFailure

FCM_API = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

# FcmError.errorCode values meaning "this device token is gone".
_GONE_TOKEN_CODES = frozenset({"UNREGISTERED"})


class FcmProvider:
    """Sends push notifications through FCM. Thread-safe: the access token is
    refreshed under a lock, and httpx clients may be shared between threads."""

    name = "fcm"
    transactional = False

    def __init__(
        self,
        project_id: str,
        credentials_file: str | Path,
        base_url: str | None = None,
        http: httpx.Client | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        """
        Args:
            project_id: the Firebase project the device tokens belong to.
            credentials_file: a service account JSON key; read now, used at first send.
            base_url: another origin for the API (a proxy, a stand-in); the real API
                when None. The token endpoint is the key's own `token_uri`.
            http: the client for sends; one of its own (closed by `close`) when None.
            timeout: seconds to connect, and to wait for each answer.
        """
        self.project_id = project_id
        self.base_url = (base_url or FCM_API).rstrip("/")
        self._url = f"{self.base_url}/v1/projects/{project_id}/messages:send"
        self._credentials = service_account.Credentials.from_service_account_file(
            str(credentials_file), scopes=[FCM_SCOPE]
        )
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._token_session = requests.Session()
        self._token_request = _TimeoutRequest(self._token_session, timeout)
        self._token_lock = threading.Lock()

    def send(self, message: OutgoingMessage, session: Session | None) -> str:
        """POST the message; return FCM's message name."""
        token = self._access_token()
        headers = {"Authorization": f"Bearer {token}"}
        try:
            response = self._http.post(self._url, json=fcm_body(message), headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise providers.unreachable("FCM", self.base_url, repr(exc)) from exc
        except (httpx.WriteError, httpx.WriteTimeout) as exc:
            # The request never fully left, so FCM cannot have acted on it.
            raise TransientFailure(f"FCM request not sent to {self.base_url}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise providers.answer_lost("FCM", repr(exc)) from exc
        if response.status_code == 200:
            return _message_name(response) or f"fcm-{message.delivery_id}"
        if response.status_code == 401:
            self._forget(token)
        raise _failure(response)

    def close(self) -> None:
        """Close the connections this provider opened."""
        if self._owns_http:
            self._http.close()
        self._token_session.close()

    def _access_token(self) -> str:
        """A valid access token, fetched from the key's `token_uri` when needed."""
        with self._token_lock:
            if not self._credentials.valid:
                self._refresh()
            return str(self._credentials.token)

    def _forget(self, token: str) -> None:
        """Drop a token FCM refused (revoked, key rotated), so the next send gets another."""
        with self._token_lock:
            if self._credentials.token == token:
                self._credentials.token = None

    def _refresh(self) -> None:
        try:
            self._credentials.refresh(self._token_request)
        except google.auth.exceptions.RefreshError as exc:
            if exc.retryable:
                raise TransientFailure(f"Google's token endpoint failed: {exc}") from exc
            raise PermanentFailure(
                f"Google refused an access token for the service account ({exc}): "
                "check GOOGLE_APPLICATION_CREDENTIALS"
            ) from exc
        except google.auth.exceptions.TransportError as exc:
            raise TransientFailure(f"Google's token endpoint unreachable: {exc}") from exc


def fcm_body(message: OutgoingMessage) -> dict[str, Any]:
    """The HTTP v1 `messages:send` request body for one message to one device."""
    notification = {"title": message.subject, "body": message.body}
    fcm_message: dict[str, Any] = {"token": message.to}
    if any(notification.values()):
        fcm_message["notification"] = {key: value for key, value in notification.items() if value}
    if message.data:
        fcm_message["data"] = {str(key): _text(value) for key, value in message.data.items()}
    return {"message": fcm_message}


def _text(value: Any) -> str:
    """A data value as FCM wants it: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _message_name(response: httpx.Response) -> str | None:
    """The `name` FCM gives an accepted message (it was accepted even without one)."""
    try:
        name = response.json().get("name")
    except (ValueError, AttributeError):
        return None
    return str(name) if name else None


def _failure(response: httpx.Response) -> Exception:
    """The provider failure for an error answer from FCM."""
    status = response.status_code
    error = _error(response)
    status_name = str(error.get("status") or "")
    detail = f"{status} {status_name}: {error.get('message') or response.reason_phrase}"
    codes = {
        str(item.get("errorCode"))
        for item in error.get("details") or []
        if isinstance(item, dict) and item.get("errorCode")
    }
    if codes & _GONE_TOKEN_CODES or (status == 404 and status_name == "NOT_FOUND"):
        return PermanentFailure(f"FCM: the device token is gone ({detail})", "unregistered_token")
    if status == 400 and _about_token(error):
        return PermanentFailure(
            f"FCM: the device token is invalid ({detail})", "unregistered_token"
        )
    if status == 401 and "THIRD_PARTY_AUTH_ERROR" in codes:
        return PermanentFailure(
            f"FCM: Apple or web push refused the project's credentials ({detail}): "
            "check the APNs key or web push certificate in the Firebase console"
        )
    if status == 401:
        return PermanentFailure(
            f"FCM rejected the access token ({detail}): check GOOGLE_APPLICATION_CREDENTIALS"
        )
    if status == 403:
        return PermanentFailure(
            f"FCM refused the request ({detail}): check that the service account in "
            "GOOGLE_APPLICATION_CREDENTIALS may send messages for FCM_PROJECT_ID"
        )
    if status == 429 or status >= 500:
        retry_after = providers.retry_after_seconds(response.headers.get("Retry-After"))
        return TransientFailure(f"FCM failed ({detail})", retry_after=retry_after)
    return PermanentFailure(f"FCM rejected the message ({detail})")


def _error(response: httpx.Response) -> dict[str, Any]:
    """Google's `{"error": {"code", "message", "status", "details"}}`, or {}."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _about_token(error: dict[str, Any]) -> bool:
    """Whether a 400 INVALID_ARGUMENT is about the device token."""
    for item in error.get("details") or []:
        for violation in (item.get("fieldViolations") or []) if isinstance(item, dict) else []:
            if violation.get("field") == "message.token":
                return True
    return "registration token" in str(error.get("message", "")).lower()


class _TimeoutRequest(Request):
    """google-auth's requests transport with our timeout (its own default is 120 s)."""

    def __init__(self, session: requests.Session, timeout: float) -> None:
        super().__init__(session)
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        return super().__call__(
            url, method, body, headers, timeout=timeout or self._timeout, **kwargs
        )
