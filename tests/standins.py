"""Local stand-ins for SendGrid, Twilio and Firebase Cloud Messaging.

Each stand-in is an HTTP server on 127.0.0.1 (a free port) that checks a request the
way the real API does (authentication, required fields, value types) and answers
with the real API's success and error shapes, so the official clients run against it
unchanged. Tests point a provider's `base_url` at `stand_in.base_url`, then look at
`stand_in.received` to see what arrived.

A test scripts what the provider decides with `stand_in.script(answer, ...)`: the
queued answers are given, in order, to requests that pass the checks; once the queue
is empty, requests succeed again. An `Answer` can also be held past the client's
timeout (`delay`) or be no answer at all (`drop`, the connection closes).

    with SendGridStandIn() as sendgrid:
        sendgrid.script(SendGridStandIn.rate_limited(retry_after=1))
        ...
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


@dataclass(frozen=True)
class Received:
    """One request as the stand-in saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: Any  # JSON as parsed, a form as {name: value}, else the text


@dataclass(frozen=True)
class Answer:
    """What the stand-in answers."""

    status: int
    body: Any = None  # JSON-able, or text, or None for an empty body
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # hold the answer this long (cut short when the stand-in closes)
    drop: bool = False  # close the connection without answering


class StandIn:
    """An HTTP server in a thread; subclasses decide the answers in `answer`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stand_in = self
        # A short poll interval makes `close` quick: shutdown waits for the next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, release held answers, and wait for every handler to end."""
        self._closing.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next requests that pass the checks."""
        with self._lock:
            self._script.extend(answers)

    def scripted(self) -> Answer | None:
        """The next scripted answer, or None when the script is used up."""
        with self._lock:
            return self._script.popleft() if self._script else None

    def answer(self, request: Received) -> Answer:
        raise NotImplementedError

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        request = _read(handler)
        with self._lock:
            self.received.append(request)
        reply = self.answer(request)
        if reply.delay:
            self._closing.wait(reply.delay)
        if reply.drop:
            handler.close_connection = True
            return
        _write(handler, reply)


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close, so no test leaves one behind.
    daemon_threads = False
    block_on_close = True
    stand_in: StandIn


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.stand_in.serve(self)

    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests look at `received` instead."""


def _read(handler: BaseHTTPRequestHandler) -> Received:
    url = urlsplit(handler.path)
    raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    text = raw.decode("utf-8", errors="replace")
    content_type = handler.headers.get("Content-Type", "")
    body: Any = text
    if content_type.startswith("application/json"):
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    elif content_type.startswith("application/x-www-form-urlencoded"):
        body = {
            name: values[0] if len(values) == 1 else values
            for name, values in parse_qs(text, keep_blank_values=True).items()
        }
    return Received(
        method=handler.command,
        path=url.path,
        query=parse_qs(url.query),
        headers={name.lower(): value for name, value in handler.headers.items()},
        body=body,
    )


def _write(handler: BaseHTTPRequestHandler, reply: Answer) -> None:
    if reply.body is None:
        payload, content_type = b"", None
    elif isinstance(reply.body, str):
        payload, content_type = reply.body.encode(), "text/plain; charset=utf-8"
    else:
        payload, content_type = json.dumps(reply.body).encode(), "application/json"
    try:
        handler.send_response(reply.status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up waiting (a read timeout under test)


def closed_port_url() -> str:
    """An http:// origin where nothing listens: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


# --- SendGrid -----------------------------------------------------------------------

# Headers SendGrid sets itself and refuses in `headers`.
SENDGRID_RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)


class SendGridStandIn(StandIn):
    """SendGrid's v3 `POST /v3/mail/send`."""

    def __init__(self, api_key: str = "SG.stand-in-key") -> None:
        super().__init__()
        self.api_key = api_key

    def answer(self, request: Received) -> Answer:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return self.error(404, "resource not found")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        if not isinstance(request.body, dict):
            return self.error(400, "Bad Request")
        problem = _sendgrid_problem(request.body)
        if problem is not None:
            return self.error(400, problem[1], field=problem[0])
        return self.scripted() or Answer(202, headers={"X-Message-Id": secrets.token_urlsafe(16)})

    @staticmethod
    def error(
        status: int,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """SendGrid's error shape."""
        body = {"errors": [{"message": message, "field": field, "help": None}]}
        return Answer(status, body, headers or {})

    @classmethod
    def invalid_address(cls) -> Answer:
        """What SendGrid says when the recipient's address is not one."""
        return cls.error(400, "Does not contain a valid address.", "personalizations.0.to.0.email")

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, reset: float | None = None) -> Answer:
        """429, with `Retry-After` seconds and/or `X-RateLimit-Reset` (epoch seconds)."""
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        if reset is not None:
            headers["X-RateLimit-Reset"] = str(int(reset))
        return cls.error(429, "too many requests", headers=headers)


def _sendgrid_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) of the first thing SendGrid would refuse, or None."""
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return (
            "personalizations",
            "The personalizations field is required and must have at least one personalization.",
        )
    for p, personalization in enumerate(personalizations):
        recipients = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(recipients, list) or not recipients:
            return (
                f"personalizations.{p}.to",
                "The to array is required for all personalization objects, and must have "
                "at least one email object with a valid email address.",
            )
        for t, recipient in enumerate(recipients):
            if not _EMAIL.match(str(recipient.get("email", ""))):
                return f"personalizations.{p}.to.{t}.email", "Does not contain a valid address."
    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        return "from", "The from object must be provided for every email send."
    if not _EMAIL.match(str(sender["email"])):
        return "from.email", "The from email does not contain a valid address."
    templated = bool(body.get("template_id"))
    every_has_subject = all(p.get("subject") for p in personalizations)
    if not templated and not body.get("subject") and not every_has_subject:
        return (
            "subject",
            "The subject is required. You can get around this requirement if you use a "
            "template with a subject defined or if every personalization has a subject "
            "defined.",
        )
    content = body.get("content")
    if not templated and (not isinstance(content, list) or not content):
        return (
            "content",
            "Unless a valid template_id is provided, the content parameter is required. "
            "There must be at least one defined content block.",
        )
    for c, block in enumerate(content or []):
        if not isinstance(block, dict) or not block.get("type"):
            return f"content.{c}.type", "The content type must be provided."
        if not isinstance(block.get("value"), str) or not block["value"]:
            return (
                f"content.{c}.value",
                "The content value must be a string at least one character in length.",
            )
    types = [block["type"] for block in content or []]
    if "text/plain" in types and types[0] != "text/plain":
        return (
            "content",
            "If present, text/plain content must be first, followed by text/html, "
            "followed by any other content.",
        )
    headers = body.get("headers", {})
    if not isinstance(headers, dict):
        return "headers", "Invalid type. Expected: object."
    for name, value in headers.items():
        if name.lower() in SENDGRID_RESERVED_HEADERS:
            return "headers", f"The header {name} is reserved and cannot be set."
        if not isinstance(value, str):
            return f"headers.{name}", "Invalid type. Expected: string."
    custom_args = body.get("custom_args", {})
    if not isinstance(custom_args, dict):
        return "custom_args", "Invalid type. Expected: object."
    for name, value in custom_args.items():
        if not isinstance(value, str):
            return f"custom_args.{name}", "Invalid type. Expected: string."
    categories = body.get("categories", [])
    if (
        not isinstance(categories, list)
        or len(categories) > 10
        or not all(isinstance(c, str) and 0 < len(c) <= 255 for c in categories)
    ):
        return "categories", "Categories must be up to 10 strings of at most 255 characters."
    return None


# --- Twilio -------------------------------------------------------------------------


class TwilioStandIn(StandIn):
    """Twilio's `POST /2010-04-01/Accounts/{sid}/Messages.json`."""

    def __init__(
        self,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "stand-in-token",
    ) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        # WhatsApp: numbers that wrote to the sender, and when (time.time()): free-form
        # text reaches them for 24 hours, as WhatsApp allows; others only a template.
        self.whatsapp_windows: dict[str, float] = {}

    def customer_wrote_on_whatsapp(self, number: str) -> None:
        """Open `number`'s 24-hour window (the customer messaged the business)."""
        self.whatsapp_windows[number] = time.time()

    def answer(self, request: Received) -> Answer:
        match = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/Messages\.json", request.path)
        if request.method != "POST" or match is None:
            return self.error(20404, f"The requested resource {request.path} was not found", 404)
        if not self._authenticated(request) or match.group(1) != self.account_sid:
            return self.error(20003, "Authenticate", 401)
        form = request.body if isinstance(request.body, dict) else {}
        problem = _twilio_problem(form) or self._whatsapp_problem(form)
        if problem is not None:
            return self.error(*problem, 400)
        return self.scripted() or Answer(201, self._message(form))

    def _whatsapp_problem(self, form: dict[str, str]) -> tuple[int, str] | None:
        on_whatsapp = [form.get(k, "").startswith("whatsapp:") for k in ("To", "From")]
        if not any(on_whatsapp):
            return None
        if not all(on_whatsapp):
            return 63007, "Twilio could not find a Channel with the specified From address"
        if form.get("ContentSid"):
            if not re.fullmatch(r"HX[0-9a-fA-F]{32}", form["ContentSid"]):
                return 21655, "The ContentSid is Invalid"
            try:
                json.loads(form.get("ContentVariables") or "{}")
            except json.JSONDecodeError:
                return 21656, "The ContentVariables Parameter is invalid"
            return None
        wrote = self.whatsapp_windows.get(form["To"].removeprefix("whatsapp:"))
        if wrote is None or time.time() - wrote > 24 * 3600:
            return 63016, (
                "Failed to send freeform message because you are outside the allowed window."
            )
        return None

    @staticmethod
    def error(
        code: int, message: str, status: int = 400, headers: Mapping[str, str] | None = None
    ) -> Answer:
        """Twilio's error shape."""
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return Answer(status, body, headers or {})

    def _authenticated(self, request: Received) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return scheme == "Basic" and credentials == expected

    def _message(self, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if form.get("From") else "accepted",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
            },
            "to": form["To"],
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }


def _twilio_problem(form: dict[str, str]) -> tuple[int, str] | None:
    """(code, message) of the first thing Twilio would refuse, or None."""
    if not form.get("To"):
        return 21604, "A 'To' phone number is required."
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return 21603, "A 'From' phone number is required."
    if not form.get("Body") and not form.get("MediaUrl") and not form.get("ContentSid"):
        return 21602, "Message body is required."
    if not _E164.match(form["To"].removeprefix("whatsapp:")):
        return 21211, f"Invalid 'To' Phone Number: {form['To']}"
    callback = form.get("StatusCallback")
    if callback is not None and urlsplit(callback).scheme not in ("http", "https"):
        return 21609, "Invalid StatusCallback url"
    return None


# --- Firebase Cloud Messaging --------------------------------------------------------

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# google-auth always signs for this audience, whatever the key's token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_FCM_MESSAGE_FIELDS = frozenset(
    {"name", "data", "notification", "android", "webpush", "apns", "fcm_options"}
    | {"token", "topic", "condition"}
)
_FCM_RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})


@dataclass(frozen=True)
class ServiceAccountKey:
    """A Google service account's key pair, as Google would issue it."""

    project_id: str
    client_email: str
    private_key_id: str
    private_key_pem: str
    public_key: rsa.RSAPublicKey


def make_service_account_key(project_id: str = "stand-in-project") -> ServiceAccountKey:
    """A fresh RSA key pair for a made-up service account (takes a few tens of ms)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return ServiceAccountKey(
        project_id=project_id,
        client_email=f"journeyman@{project_id}.iam.gserviceaccount.com",
        private_key_id=secrets.token_hex(20),
        private_key_pem=pem,
        public_key=private_key.public_key(),
    )


def write_service_account_file(path: Path, key: ServiceAccountKey, token_uri: str) -> Path:
    """The JSON key file `GOOGLE_APPLICATION_CREDENTIALS` names, for `key`."""
    info = {
        "type": "service_account",
        "project_id": key.project_id,
        "private_key_id": key.private_key_id,
        "private_key": key.private_key_pem,
        "client_email": key.client_email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }
    path.write_text(json.dumps(info, indent=2))
    return path


class FcmStandIn(StandIn):
    """Google's OAuth 2.0 token endpoint (`POST /token`) and FCM's
    `POST /v1/projects/{project}/messages:send`.

    `script` scripts message sends; `script_token` scripts the token endpoint.
    """

    def __init__(self, key: ServiceAccountKey) -> None:
        super().__init__()
        self.key = key
        self.issued_tokens: list[str] = []
        self._token_script: deque[Answer] = deque()

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def token_requests(self) -> list[Received]:
        return [r for r in self.received if r.path == "/token"]

    @property
    def sends(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("/messages:send")]

    def script_token(self, *answers: Answer) -> None:
        with self._lock:
            self._token_script.extend(answers)

    def answer(self, request: Received) -> Answer:
        if request.method == "POST" and request.path == "/token":
            return self._token(request)
        match = re.fullmatch(r"/v1/projects/([^/]+)/messages:send", request.path)
        if request.method != "POST" or match is None:
            return self.error(404, "NOT_FOUND", "Requested entity was not found.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self.issued_tokens:
            return self.error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if match.group(1) != self.key.project_id:
            return self.error(
                403,
                "PERMISSION_DENIED",
                "Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{match.group(1)}'",
            )
        problem = _fcm_problem(request.body)
        if problem is not None:
            return self.error(
                400,
                "INVALID_ARGUMENT",
                problem[1],
                "INVALID_ARGUMENT",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": problem[0], "description": problem[1]}],
                    }
                ],
            )
        name = f"projects/{self.key.project_id}/messages/{secrets.randbelow(10**16)}"
        return self.scripted() or Answer(200, {"name": name})

    @staticmethod
    def error(
        status: int,
        status_name: str,
        message: str,
        error_code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Google's error shape, with an FcmError detail when `error_code` is given."""
        all_details = list(details or [])
        if error_code is not None:
            all_details.insert(
                0,
                {
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": error_code,
                },
            )
        error: dict[str, Any] = {"code": status, "message": message, "status": status_name}
        if all_details:
            error["details"] = all_details
        return Answer(status, {"error": error}, headers or {})

    @classmethod
    def unregistered(cls) -> Answer:
        """What FCM says for a token whose app was uninstalled."""
        return cls.error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")

    @classmethod
    def invalid_token(cls) -> Answer:
        """What FCM says for a string that is no registration token."""
        return cls.error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            "INVALID_ARGUMENT",
        )

    def _token(self, request: Received) -> Answer:
        form = request.body if isinstance(request.body, dict) else {}
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return Answer(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Invalid grant_type: {form.get('grant_type')}",
                },
            )
        problem = _assertion_problem(str(form.get("assertion", "")), self.key)
        if problem is not None:
            return Answer(400, {"error": "invalid_grant", "error_description": problem})
        with self._lock:
            scripted = self._token_script.popleft() if self._token_script else None
        if scripted is not None:
            return scripted
        token = "ya29.stand-in-" + secrets.token_urlsafe(24)
        self.issued_tokens.append(token)
        return Answer(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})


def _fcm_problem(body: Any) -> tuple[str, str] | None:
    """(field, message) of the first thing FCM would refuse, or None."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        return "message", "Request contains an invalid argument."
    unknown = set(message) - _FCM_MESSAGE_FIELDS
    if unknown:
        return (
            "message",
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" '
            "at 'message': Cannot find field.",
        )
    targets = [name for name in ("token", "topic", "condition") if message.get(name)]
    if len(targets) != 1:
        return "message", "Exactly one of token, topic or condition must be specified."
    for name, value in (message.get("data") or {}).items():
        if not isinstance(value, str):
            return (
                f"message.data[{name}]",
                f"Invalid value at 'message.data[0].value' (TYPE_STRING), {json.dumps(value)}",
            )
        if name in _FCM_RESERVED_DATA_KEYS or name.startswith(("google", "gcm")):
            return f"message.data[{name}]", f"Invalid data payload key: {name}"
    for name, value in (message.get("notification") or {}).items():
        if name not in ("title", "body", "image") or not isinstance(value, str):
            return f"message.notification.{name}", f"Invalid value at 'message.notification.{name}'"
    return None


def _assertion_problem(assertion: str, key: ServiceAccountKey) -> str | None:
    """What is wrong with a service account's signed JWT, or None when it is good."""
    try:
        header_b64, payload_b64, signature_b64 = assertion.split(".")
        header = json.loads(_unb64(header_b64))
        claims = json.loads(_unb64(payload_b64))
        key.public_key.verify(
            _unb64(signature_b64),
            f"{header_b64}.{payload_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (ValueError, InvalidSignature):
        return "Invalid JWT Signature."
    if header.get("alg") != "RS256" or header.get("kid") != key.private_key_id:
        return "Invalid JWT: unknown key."
    if claims.get("iss") != key.client_email:
        return "Invalid JWT: iss is not the service account."
    if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
        return "Invalid JWT: Failed audience check."
    if FCM_SCOPE not in str(claims.get("scope", "")).split():
        return "Invalid JWT: the scope does not include firebase.messaging."
    issued, expires, now = claims.get("iat"), claims.get("exp"), time.time()
    timely = isinstance(issued, int) and isinstance(expires, int)
    if not timely or not issued - 300 <= now < expires or expires - issued > 3600:
        return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
    return None


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
