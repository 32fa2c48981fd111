"""Which message providers the settings configure, built for the worker.

A channel gets its real provider only when every setting it needs is there:

- email: `SENDGRID_API_KEY` (SendGrid);
- sms: `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN` and `TWILIO_FROM` or
  `TWILIO_MESSAGING_SERVICE_SID` (Twilio);
- push: `FCM_PROJECT_ID` and `GOOGLE_APPLICATION_CREDENTIALS` (Firebase Cloud Messaging);
- whatsapp: `TWILIO_WHATSAPP_FROM` with the Twilio account's `TWILIO_ACCOUNT_SID` and
  `TWILIO_AUTH_TOKEN` (the same client as SMS; `TWILIO_FROM` is not needed);
- inbox: nothing, it is kept in the database (journeyman/messaging/inbox.py).

A channel with none of its settings goes to the outbox (the caller's default). A
channel with only some of them is a mistake worth stopping for: `build_providers`
raises `ValueError` naming what to set. `GOOGLE_APPLICATION_CREDENTIALS` alone is
not one, since other Google tools read it too.

`SENDGRID_RATE_LIMIT`, `TWILIO_RATE_LIMIT` and `FCM_RATE_LIMIT` pace a provider
(journeyman/messaging/ratelimit.py). A limit that is not a rate stops `build_providers` too; the
limit of a provider that is not configured paces nothing: the outbox is never limited.
"""

from __future__ import annotations

import re

from pydantic import SecretStr

from activities.email_sendgrid import SENDGRID_API, SendGridProvider, parse_sender
from activities.push_fcm import FCM_API, FcmProvider
from activities.sms_twilio import TWILIO_API, TwilioProvider
from activities.whatsapp_twilio import WhatsAppProvider
from journeyman.messaging import ratelimit
from journeyman.messaging.providers import Provider
from journeyman.settings import Settings

TWILIO_STATUS_PATH = "/webhooks/twilio/status"


def build_providers(settings: Settings) -> dict[str, Provider]:
    """The configured providers by channel (`email`, `sms`, `push`); no I/O but
    reading the service account file.

    Raises:
        ValueError: a provider is half-configured, or its settings (a rate limit among
            them) are unusable.
    """
    _check(settings)
    providers: dict[str, Provider] = {}
    if _secret(settings.sendgrid_api_key):
        providers["email"] = SendGridProvider(
            _secret(settings.sendgrid_api_key),
            settings.email_from,
            base_url=settings.sendgrid_base_url or None,
        )
    if settings.twilio_account_sid and (
        settings.twilio_from or settings.twilio_messaging_service_sid
    ):
        providers["sms"] = TwilioProvider(
            settings.twilio_account_sid,
            _secret(settings.twilio_auth_token),
            from_=settings.twilio_from or None,
            messaging_service_sid=settings.twilio_messaging_service_sid or None,
            base_url=settings.twilio_base_url or None,
            status_callback_url=settings.public_base_url.rstrip("/") + TWILIO_STATUS_PATH,
        )
    if settings.twilio_account_sid and settings.twilio_whatsapp_from:
        providers["whatsapp"] = WhatsAppProvider(
            settings.twilio_account_sid,
            _secret(settings.twilio_auth_token),
            from_=settings.twilio_whatsapp_from,
            base_url=settings.twilio_base_url or None,
            status_callback_url=settings.public_base_url.rstrip("/") + TWILIO_STATUS_PATH,
        )
    if settings.fcm_project_id and settings.google_application_credentials:
        providers["push"] = _fcm(settings)
    return providers


def describe_providers(settings: Settings) -> dict[str, str]:
    """One line per channel for the startup banner, e.g. `SendGrid (https://...)`,
    `Twilio (https://..., from +1...), limit 10/s` or `outbox (no SENDGRID_API_KEY)`.
    Never raises: a half-configured provider or a malformed limit is described as such."""
    return {
        "email": _with_limit(settings, "sendgrid", _describe_email(settings)),
        "sms": _with_limit(settings, "twilio", _describe_sms(settings)),
        "push": _with_limit(settings, "fcm", _describe_push(settings)),
        "whatsapp": _describe_whatsapp(settings),
    }


def _check(settings: Settings) -> None:
    problems = [
        problem
        for problem in (
            _twilio_problem(settings),
            _whatsapp_problem(settings),
            _fcm_problem(settings),
            *(_limit_problem(settings, provider) for provider in ratelimit.SETTINGS),
        )
        if problem is not None
    ]
    if _secret(settings.sendgrid_api_key):
        try:
            sender = parse_sender(settings.email_from)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if "." not in sender["email"].rsplit("@", 1)[1]:
                # The default, `noreply@localhost`, is the outbox's: SendGrid refuses
                # a sender without a real domain, and would do so for every send.
                problems.append(
                    f"EMAIL_FROM {settings.email_from!r} has no domain SendGrid can send"
                    " from: set EMAIL_FROM to a verified sender, e.g. 'Shop <hello@shop.com>'"
                )
    if problems:
        raise ValueError("; ".join(problems))


def _twilio_problem(settings: Settings) -> str | None:
    """What is missing for SMS when some of its settings are set, else None."""
    has_sender = bool(settings.twilio_from or settings.twilio_messaging_service_sid)
    given = [settings.twilio_account_sid, _secret(settings.twilio_auth_token), has_sender]
    if not any(given) or all(given):
        return None
    if not has_sender and settings.twilio_whatsapp_from:
        return None  # the account sends WhatsApp only; SMS goes to the outbox
    missing = [
        name
        for name, value in (
            ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
            ("TWILIO_AUTH_TOKEN", _secret(settings.twilio_auth_token)),
            ("TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID", has_sender),
        )
        if not value
    ]
    return f"SMS through Twilio is half-configured: set {' and '.join(missing)}"


def _fcm_problem(settings: Settings) -> str | None:
    if settings.fcm_project_id and not settings.google_application_credentials:
        return (
            "push through FCM is half-configured: FCM_PROJECT_ID is set, so set "
            "GOOGLE_APPLICATION_CREDENTIALS to the service account's JSON key file"
        )
    return None


def _fcm(settings: Settings) -> FcmProvider:
    assert settings.fcm_project_id and settings.google_application_credentials
    path = settings.google_application_credentials
    try:
        return FcmProvider(settings.fcm_project_id, path, base_url=settings.fcm_base_url or None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # google-auth's ways of saying: no such file, not JSON, not a service account
        # key, or a private key it cannot load.
        raise ValueError(
            f"GOOGLE_APPLICATION_CREDENTIALS={path} is not a readable service account "
            f"key file: {exc}"
        ) from exc


def _unused(problem: str | None, *needed: tuple[str, object]) -> str | None:
    """The line of a channel that does not get its provider: misconfigured, or the
    outbox for want of the first of its (setting, value) `needed`; None when it does."""
    if problem is not None:
        return f"misconfigured: {problem}"
    missing = next((name for name, value in needed if not value), None)
    return None if missing is None else f"outbox (no {missing})"


def _origin(base_url: str | None, default: str) -> str:
    return (base_url or default).rstrip("/")


def _describe_email(settings: Settings) -> str:
    unused = _unused(None, ("SENDGRID_API_KEY", _secret(settings.sendgrid_api_key)))
    return unused or f"SendGrid ({_origin(settings.sendgrid_base_url, SENDGRID_API)})"


def _describe_sms(settings: Settings) -> str:
    unused = _unused(
        _twilio_problem(settings),
        ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
        ("TWILIO_FROM", settings.twilio_from or settings.twilio_messaging_service_sid),
    )
    if unused is not None:
        return unused
    sender = (
        f"from {settings.twilio_from}"
        if settings.twilio_from
        else f"messaging service {settings.twilio_messaging_service_sid}"
    )
    return f"Twilio ({_origin(settings.twilio_base_url, TWILIO_API)}, {sender})"


def _whatsapp_problem(settings: Settings) -> str | None:
    """What is wrong with the WhatsApp sender when one is set, else None."""
    sender = settings.twilio_whatsapp_from
    if not sender:
        return None
    if not (settings.twilio_account_sid and _secret(settings.twilio_auth_token)):
        return (
            "WhatsApp through Twilio is half-configured: TWILIO_WHATSAPP_FROM is set, so set "
            "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        )
    if not re.fullmatch(r"(whatsapp:)?\+[1-9][0-9]{6,14}", "".join(sender.split())):
        return (
            f"TWILIO_WHATSAPP_FROM must be a number such as whatsapp:+14155238886, got {sender!r}"
        )
    return None


def _describe_whatsapp(settings: Settings) -> str:
    sender = settings.twilio_whatsapp_from
    unused = _unused(_whatsapp_problem(settings), ("TWILIO_WHATSAPP_FROM", sender))
    origin = _origin(settings.twilio_base_url, TWILIO_API)
    return unused or f"Twilio WhatsApp ({origin}, from {sender})"


def _describe_push(settings: Settings) -> str:
    project = settings.fcm_project_id
    unused = _unused(_fcm_problem(settings), ("FCM_PROJECT_ID", project))
    return unused or f"FCM (project {project}, {_origin(settings.fcm_base_url, FCM_API)})"


def _limit_problem(settings: Settings, provider: str) -> str | None:
    try:
        ratelimit.limit_for(settings, provider)
    except ValueError as exc:
        return str(exc)
    return None


def _with_limit(settings: Settings, provider: str, description: str) -> str:
    """The channel's line with its provider's limit; the outbox is never limited."""
    if description.startswith("outbox"):
        return description
    try:
        limit = ratelimit.limit_for(settings, provider)
    except ValueError as exc:
        return f"{description}; misconfigured: {exc}"
    return description if limit is None else f"{description}, limit {limit}"


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""
