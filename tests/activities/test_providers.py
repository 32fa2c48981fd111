"""The SendGrid, Twilio and FCM providers, through their official clients, against the
local stand-ins of `tests.standins`; and which providers the settings configure."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from activities.email_sendgrid import SendGridProvider
from activities.provider_config import build_providers, describe_providers
from activities.push_fcm import FcmProvider
from activities.sms_twilio import BaseUrlHttpClient, TwilioProvider
from activities.whatsapp_twilio import WhatsAppProvider
from journeyman.messaging.providers import (
    OutgoingMessage,
    PermanentFailure,
    Provider,
    TransientFailure,
    UncertainDelivery,
)
from journeyman.settings import Settings
from tests.standins import (
    Answer,
    FcmStandIn,
    SendGridStandIn,
    ServiceAccountKey,
    TwilioStandIn,
    closed_port_url,
    make_service_account_key,
    write_service_account_file,
)

# Providers wait this long in the tests of late answers, which the stand-in holds far
# longer; other tests keep the providers' default timeout.
TIMEOUT = 0.5
HELD = Answer(200, delay=30)
DROPPED = Answer(200, drop=True)
SENDER = "+15005550006"
STATUS_CALLBACK = "https://journeyman.example.com/webhooks/twilio/status"


def email(**changes: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "delivery_id": 42,
        "idempotency_key": "wf-1/welcome_email/1",
        "customer_id": "c1",
        "journey_id": "welcome",
        "channel": "email",
        "to": "ana@example.com",
        "subject": "Welcome, Ana",
        "body": "Hello Ana",
        "html": "<p>Hello Ana</p>",
        "headers": {
            "List-Unsubscribe": "<https://journeyman.example.com/unsubscribe/t0k>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "step_id": "welcome_email",
    }
    return OutgoingMessage(**{**fields, **changes})


def sms(**changes: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {"channel": "sms", "to": "+33612345678", "subject": None}
    return email(**{**fields, "html": None, "headers": {}, **changes})


def push(**changes: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "channel": "push",
        "to": "fcm-device-token-1",
        "html": None,
        "headers": {},
        "data": {"deep_link": "shop://cart", "items": 3, "gift": True},
    }
    return email(**{**fields, **changes})


# --- SendGrid -----------------------------------------------------------------------


@pytest.fixture
def sendgrid() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def sendgrid_provider(sendgrid: SendGridStandIn) -> SendGridProvider:
    return SendGridProvider(sendgrid.api_key, "Shop <noreply@shop.com>", base_url=sendgrid.base_url)


def test_sendgrid_sends_both_parts_headers_and_webhook_args(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid_provider.send(email(), None)

    [request] = sendgrid.received
    assert request.headers["authorization"] == f"Bearer {sendgrid.api_key}"
    assert request.body["personalizations"] == [{"to": [{"email": "ana@example.com"}]}]
    assert request.body["from"] == {"email": "noreply@shop.com", "name": "Shop"}
    assert request.body["subject"] == "Welcome, Ana"
    assert request.body["content"] == [
        {"type": "text/plain", "value": "Hello Ana"},
        {"type": "text/html", "value": "<p>Hello Ana</p>"},
    ]
    assert request.body["headers"] == {
        "List-Unsubscribe": "<https://journeyman.example.com/unsubscribe/t0k>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert request.body["custom_args"] == {
        "delivery_id": "42",
        "journey_id": "welcome",
        "step_id": "welcome_email",
    }
    assert request.body["categories"] == ["welcome"]


def test_sendgrid_returns_the_x_message_id(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(Answer(202, headers={"X-Message-Id": "14c5d75ce93.dfd.64b469"}))

    assert sendgrid_provider.send(email(), None) == "14c5d75ce93.dfd.64b469"


def test_sendgrid_without_x_message_id_falls_back_to_the_delivery(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(Answer(202))

    assert sendgrid_provider.send(email(), None) == "sendgrid-42"


def test_sendgrid_text_only_message_has_one_part_and_a_bare_sender(
    sendgrid: SendGridStandIn,
) -> None:
    provider = SendGridProvider(sendgrid.api_key, "noreply@shop.com", base_url=sendgrid.base_url)

    provider.send(email(html=None, headers={}), None)

    [request] = sendgrid.received
    assert request.body["from"] == {"email": "noreply@shop.com"}
    assert request.body["content"] == [{"type": "text/plain", "value": "Hello Ana"}]
    assert "headers" not in request.body


def test_sendgrid_refusing_the_recipient_is_an_invalid_address(
    sendgrid_provider: SendGridProvider,
) -> None:
    with pytest.raises(PermanentFailure) as failure:
        sendgrid_provider.send(email(to="ana-at-example.com"), None)

    assert failure.value.kind == "invalid_address"


def test_sendgrid_scripted_invalid_address_is_an_invalid_address(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(SendGridStandIn.invalid_address())

    with pytest.raises(PermanentFailure) as failure:
        sendgrid_provider.send(email(), None)

    assert failure.value.kind == "invalid_address"


def test_sendgrid_other_bad_request_is_rejected_with_the_reason(
    sendgrid_provider: SendGridProvider,
) -> None:
    with pytest.raises(PermanentFailure) as failure:
        sendgrid_provider.send(email(subject=""), None)

    assert failure.value.kind == "rejected"
    assert "subject is required" in str(failure.value)


def test_sendgrid_refusing_the_sender_is_not_about_the_recipient(
    sendgrid: SendGridStandIn,
) -> None:
    provider = SendGridProvider(sendgrid.api_key, "Shop <noreply@shop>", base_url=sendgrid.base_url)

    with pytest.raises(PermanentFailure) as failure:
        provider.send(email(), None)

    assert failure.value.kind == "rejected"
    assert "from email" in str(failure.value)


def test_sendgrid_wrong_api_key_is_rejected_naming_the_setting(
    sendgrid: SendGridStandIn,
) -> None:
    provider = SendGridProvider("SG.wrong", "noreply@shop.com", base_url=sendgrid.base_url)

    with pytest.raises(PermanentFailure) as failure:
        provider.send(email(), None)

    assert failure.value.kind == "rejected"
    assert "SENDGRID_API_KEY" in str(failure.value)
    assert "401" in str(failure.value)


def test_sendgrid_forbidden_is_rejected_with_sendgrids_reason(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(
        SendGridStandIn.error(
            403, "The from address does not match a verified Sender Identity.", "from"
        )
    )

    with pytest.raises(PermanentFailure) as failure:
        sendgrid_provider.send(email(), None)

    assert failure.value.kind == "rejected"
    assert "verified Sender Identity" in str(failure.value)


def test_sendgrid_rate_limit_surfaces_retry_after(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(SendGridStandIn.rate_limited(retry_after=7))

    with pytest.raises(TransientFailure) as failure:
        sendgrid_provider.send(email(), None)

    assert failure.value.retry_after == 7.0


def test_sendgrid_rate_limit_without_retry_after_waits_for_the_reset(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(SendGridStandIn.rate_limited(reset=time.time() + 30))

    with pytest.raises(TransientFailure) as failure:
        sendgrid_provider.send(email(), None)

    assert failure.value.retry_after is not None
    assert 0 < failure.value.retry_after <= 30


def test_sendgrid_sends_once_the_rate_limit_passes(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(*[SendGridStandIn.rate_limited(retry_after=1)] * 2)

    for _ in range(2):
        with pytest.raises(TransientFailure):
            sendgrid_provider.send(email(), None)
    assert sendgrid_provider.send(email(), None)
    assert len(sendgrid.received) == 3


def test_sendgrid_server_error_is_transient(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(SendGridStandIn.error(500, "internal error"))

    with pytest.raises(TransientFailure):
        sendgrid_provider.send(email(), None)


def test_sendgrid_refused_connection_is_transient() -> None:
    provider = SendGridProvider("SG.key", "noreply@shop.com", base_url=closed_port_url())

    with pytest.raises(TransientFailure):
        provider.send(email(), None)


def test_sendgrid_answer_too_late_is_uncertain(sendgrid: SendGridStandIn) -> None:
    provider = SendGridProvider(
        sendgrid.api_key, "noreply@shop.com", base_url=sendgrid.base_url, timeout=TIMEOUT
    )
    sendgrid.script(HELD)

    with pytest.raises(UncertainDelivery):
        provider.send(email(), None)


def test_sendgrid_connection_dropped_after_sending_is_uncertain(
    sendgrid: SendGridStandIn, sendgrid_provider: SendGridProvider
) -> None:
    sendgrid.script(DROPPED)

    with pytest.raises(UncertainDelivery):
        sendgrid_provider.send(email(), None)


def test_sendgrid_needs_a_sender_address() -> None:
    with pytest.raises(ValueError, match="EMAIL_FROM"):
        SendGridProvider("SG.key", "Shop")


# --- Twilio -------------------------------------------------------------------------


@pytest.fixture
def twilio() -> Iterator[TwilioStandIn]:
    with TwilioStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def twilio_provider(twilio: TwilioStandIn) -> Iterator[TwilioProvider]:
    provider = TwilioProvider(
        twilio.account_sid,
        twilio.auth_token,
        from_=SENDER,
        base_url=twilio.base_url,
        status_callback_url=STATUS_CALLBACK,
    )
    yield provider
    provider.close()


def test_twilio_creates_the_message_with_its_status_callback(
    twilio: TwilioStandIn, twilio_provider: TwilioProvider
) -> None:
    sid = twilio_provider.send(sms(), None)

    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    [request] = twilio.received
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    assert request.headers["authorization"].startswith("Basic ")
    assert request.body == {
        "To": "+33612345678",
        "Body": "Hello Ana",
        "From": SENDER,
        "StatusCallback": STATUS_CALLBACK,
    }


def test_twilio_sends_through_a_messaging_service(twilio: TwilioStandIn) -> None:
    provider = TwilioProvider(
        twilio.account_sid,
        twilio.auth_token,
        messaging_service_sid="MG" + "1" * 32,
        base_url=twilio.base_url,
    )
    try:
        provider.send(sms(), None)
    finally:
        provider.close()

    [request] = twilio.received
    assert request.body["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in request.body
    assert "StatusCallback" not in request.body


def test_twilio_refusing_a_malformed_number_is_an_invalid_address(
    twilio_provider: TwilioProvider,
) -> None:
    with pytest.raises(PermanentFailure) as failure:
        twilio_provider.send(sms(to="0612345678"), None)

    assert failure.value.kind == "invalid_address"
    assert "21211" in str(failure.value)


@pytest.mark.parametrize("code", [21211, 21217, 21401, 21407, 21614])
def test_twilio_number_errors_are_invalid_addresses(
    twilio: TwilioStandIn, twilio_provider: TwilioProvider, code: int
) -> None:
    twilio.script(TwilioStandIn.error(code, "The number cannot receive SMS"))

    with pytest.raises(PermanentFailure) as failure:
        twilio_provider.send(sms(), None)

    assert failure.value.kind == "invalid_address"


def test_twilio_stop_reply_is_unsubscribed(
    twilio: TwilioStandIn, twilio_provider: TwilioProvider
) -> None:
    twilio.script(TwilioStandIn.error(21610, "Attempt to send to unsubscribed recipient"))

    with pytest.raises(PermanentFailure) as failure:
        twilio_provider.send(sms(), None)

    assert failure.value.kind == "unsubscribed"


def test_twilio_other_bad_request_is_rejected(
    twilio: TwilioStandIn, twilio_provider: TwilioProvider
) -> None:
    twilio.script(
        TwilioStandIn.error(21408, "Permission to send an SMS has not been enabled for the region")
    )

    with pytest.raises(PermanentFailure) as failure:
        twilio_provider.send(sms(), None)

    assert failure.value.kind == "rejected"
    assert "21408" in str(failure.value)


def test_twilio_wrong_credentials_are_rejected_naming_the_settings(
    twilio: TwilioStandIn,
) -> None:
    provider = TwilioProvider(twilio.account_sid, "wrong", from_=SENDER, base_url=twilio.base_url)
    try:
        with pytest.raises(PermanentFailure) as failure:
            provider.send(sms(), None)
    finally:
        provider.close()

    assert failure.value.kind == "rejected"
    assert "TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN" in str(failure.value)


def test_twilio_rate_limit_surfaces_retry_after(
    twilio: TwilioStandIn, twilio_provider: TwilioProvider
) -> None:
    twilio.script(TwilioStandIn.error(20429, "Too Many Requests", 429, {"Retry-After": "3"}))

    with pytest.raises(TransientFailure) as failure:
        twilio_provider.send(sms(), None)

    assert failure.value.retry_after == 3.0


def test_twilio_server_error_is_transient(
    twilio: TwilioStandIn, twilio_provider: TwilioProvider
) -> None:
    twilio.script(TwilioStandIn.error(20500, "Internal Server Error", 500))

    with pytest.raises(TransientFailure) as failure:
        twilio_provider.send(sms(), None)

    assert failure.value.retry_after is None


def test_twilio_refused_connection_is_transient() -> None:
    provider = TwilioProvider("AC" + "0" * 32, "token", from_=SENDER, base_url=closed_port_url())
    try:
        with pytest.raises(TransientFailure):
            provider.send(sms(), None)
    finally:
        provider.close()


def test_twilio_answer_too_late_is_uncertain(twilio: TwilioStandIn) -> None:
    provider = TwilioProvider(
        twilio.account_sid,
        twilio.auth_token,
        from_=SENDER,
        base_url=twilio.base_url,
        timeout=TIMEOUT,
    )
    twilio.script(HELD)
    try:
        with pytest.raises(UncertainDelivery):
            provider.send(sms(), None)
    finally:
        provider.close()


def test_twilio_connection_dropped_after_sending_is_uncertain(
    twilio: TwilioStandIn, twilio_provider: TwilioProvider
) -> None:
    twilio.script(DROPPED)

    with pytest.raises(UncertainDelivery):
        twilio_provider.send(sms(), None)


def test_twilio_needs_a_sender() -> None:
    with pytest.raises(ValueError, match="TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID"):
        TwilioProvider("AC" + "0" * 32, "token")


def test_twilio_base_url_replaces_only_twilio_origins() -> None:
    client = BaseUrlHttpClient("http://127.0.0.1:9999/twilio/")
    try:
        assert (
            client.rewrite("https://api.twilio.com/2010-04-01/Accounts.json?x=1")
            == "http://127.0.0.1:9999/twilio/2010-04-01/Accounts.json?x=1"
        )
        assert (
            client.rewrite("https://messaging.twilio.com/v1/Services")
            == "http://127.0.0.1:9999/twilio/v1/Services"
        )
        assert client.rewrite("https://example.com/a") == "https://example.com/a"
    finally:
        client.close()


# --- FCM ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service_key() -> ServiceAccountKey:
    return make_service_account_key("shop-app")


@pytest.fixture
def fcm(service_key: ServiceAccountKey) -> Iterator[FcmStandIn]:
    with FcmStandIn(service_key) as stand_in:
        yield stand_in


@pytest.fixture
def credentials_file(tmp_path: Path, service_key: ServiceAccountKey, fcm: FcmStandIn) -> Path:
    return write_service_account_file(tmp_path / "service-account.json", service_key, fcm.token_uri)


@pytest.fixture
def fcm_provider(fcm: FcmStandIn, credentials_file: Path) -> Iterator[FcmProvider]:
    provider = FcmProvider("shop-app", credentials_file, base_url=fcm.base_url)
    yield provider
    provider.close()


def test_fcm_sends_notification_and_string_data(fcm: FcmStandIn, fcm_provider: FcmProvider) -> None:
    name = fcm_provider.send(push(), None)

    assert re.fullmatch(r"projects/shop-app/messages/\d+", name)
    [request] = fcm.sends
    assert request.path == "/v1/projects/shop-app/messages:send"
    assert request.body == {
        "message": {
            "token": "fcm-device-token-1",
            "notification": {"title": "Welcome, Ana", "body": "Hello Ana"},
            "data": {"deep_link": "shop://cart", "items": "3", "gift": "true"},
        }
    }


def test_fcm_gets_a_token_from_the_service_account_and_reuses_it(
    fcm: FcmStandIn, fcm_provider: FcmProvider
) -> None:
    fcm_provider.send(push(), None)
    fcm_provider.send(push(), None)

    [token_request] = fcm.token_requests
    assert token_request.body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    [token] = fcm.issued_tokens
    assert [r.headers["authorization"] for r in fcm.sends] == [f"Bearer {token}"] * 2


def test_fcm_concurrent_sends_share_one_token(fcm: FcmStandIn, fcm_provider: FcmProvider) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        names = list(pool.map(lambda _: fcm_provider.send(push(), None), range(8)))

    assert len(set(names)) == 8
    assert len(fcm.token_requests) == 1


def test_fcm_unregistered_token_is_dropped(fcm: FcmStandIn, fcm_provider: FcmProvider) -> None:
    fcm.script(FcmStandIn.unregistered())

    with pytest.raises(PermanentFailure) as failure:
        fcm_provider.send(push(), None)

    assert failure.value.kind == "unregistered_token"


def test_fcm_malformed_token_is_dropped(fcm: FcmStandIn, fcm_provider: FcmProvider) -> None:
    fcm.script(FcmStandIn.invalid_token())

    with pytest.raises(PermanentFailure) as failure:
        fcm_provider.send(push(), None)

    assert failure.value.kind == "unregistered_token"


def test_fcm_other_bad_request_is_rejected(fcm_provider: FcmProvider) -> None:
    with pytest.raises(PermanentFailure) as failure:
        fcm_provider.send(push(data={"from": "journeyman"}), None)

    assert failure.value.kind == "rejected"
    assert "INVALID_ARGUMENT" in str(failure.value)


def test_fcm_refused_access_token_is_rejected_naming_the_setting(
    fcm: FcmStandIn, fcm_provider: FcmProvider
) -> None:
    fcm.script(FcmStandIn.error(401, "UNAUTHENTICATED", "Request had invalid credentials."))

    with pytest.raises(PermanentFailure) as failure:
        fcm_provider.send(push(), None)

    assert failure.value.kind == "rejected"
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(failure.value)


def test_fcm_refused_access_token_is_replaced_for_the_next_send(
    fcm: FcmStandIn, fcm_provider: FcmProvider
) -> None:
    fcm.script(FcmStandIn.error(401, "UNAUTHENTICATED", "Request had invalid credentials."))
    with pytest.raises(PermanentFailure):
        fcm_provider.send(push(), None)

    fcm_provider.send(push(), None)

    first, second = fcm.issued_tokens
    assert [r.headers["authorization"] for r in fcm.sends] == [
        f"Bearer {first}",
        f"Bearer {second}",
    ]


def test_fcm_key_google_does_not_know_is_rejected_naming_the_setting(
    fcm: FcmStandIn, tmp_path: Path
) -> None:
    stranger = make_service_account_key("shop-app")
    path = write_service_account_file(tmp_path / "other.json", stranger, fcm.token_uri)
    provider = FcmProvider("shop-app", path, base_url=fcm.base_url)
    try:
        with pytest.raises(PermanentFailure) as failure:
            provider.send(push(), None)
    finally:
        provider.close()

    assert failure.value.kind == "rejected"
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(failure.value)
    assert fcm.sends == []


def test_fcm_other_project_is_rejected(fcm: FcmStandIn, credentials_file: Path) -> None:
    provider = FcmProvider("someone-else", credentials_file, base_url=fcm.base_url)
    try:
        with pytest.raises(PermanentFailure) as failure:
            provider.send(push(), None)
    finally:
        provider.close()

    assert failure.value.kind == "rejected"
    assert "FCM_PROJECT_ID" in str(failure.value)


def test_fcm_quota_exceeded_surfaces_retry_after(
    fcm: FcmStandIn, fcm_provider: FcmProvider
) -> None:
    fcm.script(
        FcmStandIn.error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded.",
            "QUOTA_EXCEEDED",
            headers={"Retry-After": "5"},
        )
    )

    with pytest.raises(TransientFailure) as failure:
        fcm_provider.send(push(), None)

    assert failure.value.retry_after == 5.0


def test_fcm_unavailable_is_transient(fcm: FcmStandIn, fcm_provider: FcmProvider) -> None:
    fcm.script(FcmStandIn.error(503, "UNAVAILABLE", "The service is unavailable.", "UNAVAILABLE"))

    with pytest.raises(TransientFailure):
        fcm_provider.send(push(), None)


def test_fcm_refused_connection_is_transient(credentials_file: Path) -> None:
    provider = FcmProvider("shop-app", credentials_file, base_url=closed_port_url())
    try:
        with pytest.raises(TransientFailure):
            provider.send(push(), None)
    finally:
        provider.close()


def test_fcm_unreachable_token_endpoint_is_transient(
    tmp_path: Path, service_key: ServiceAccountKey
) -> None:
    path = write_service_account_file(
        tmp_path / "sa.json", service_key, closed_port_url() + "/token"
    )
    provider = FcmProvider("shop-app", path, base_url=closed_port_url())
    try:
        with pytest.raises(TransientFailure):
            provider.send(push(), None)
    finally:
        provider.close()


def test_fcm_answer_too_late_is_uncertain(fcm: FcmStandIn, credentials_file: Path) -> None:
    provider = FcmProvider("shop-app", credentials_file, base_url=fcm.base_url, timeout=TIMEOUT)
    fcm.script(HELD)
    try:
        with pytest.raises(UncertainDelivery):
            provider.send(push(), None)
    finally:
        provider.close()


def test_fcm_connection_dropped_after_sending_is_uncertain(
    fcm: FcmStandIn, fcm_provider: FcmProvider
) -> None:
    fcm.script(DROPPED)

    with pytest.raises(UncertainDelivery):
        fcm_provider.send(push(), None)


# --- configuration ------------------------------------------------------------------


def settings(**overrides: Any) -> Settings:
    """Settings from these values only: no `.env`, no provider variables from the shell."""
    fields: dict[str, Any] = {
        "email_from": "Shop <noreply@shop.com>",
        "public_base_url": "https://journeyman.example.com/",
        "sendgrid_api_key": None,
        "sendgrid_base_url": None,
        "twilio_account_sid": None,
        "twilio_auth_token": None,
        "twilio_from": None,
        "twilio_messaging_service_sid": None,
        "twilio_base_url": None,
        "fcm_project_id": None,
        "google_application_credentials": None,
        "fcm_base_url": None,
        "sendgrid_rate_limit": None,
        "twilio_rate_limit": None,
        "fcm_rate_limit": None,
    }
    return Settings(_env_file=None, **{**fields, **overrides})


def close_all(providers: dict[str, Provider]) -> None:
    for provider in providers.values():
        provider.close()  # type: ignore[attr-defined]


def test_no_provider_settings_means_every_channel_uses_the_outbox() -> None:
    assert build_providers(settings()) == {}
    assert describe_providers(settings()) == {
        "email": "outbox (no SENDGRID_API_KEY)",
        "sms": "outbox (no TWILIO_ACCOUNT_SID)",
        "push": "outbox (no FCM_PROJECT_ID)",
        "whatsapp": "outbox (no TWILIO_WHATSAPP_FROM)",
    }


def test_configured_providers_send_where_the_settings_say(
    sendgrid: SendGridStandIn,
    twilio: TwilioStandIn,
    fcm: FcmStandIn,
    credentials_file: Path,
) -> None:
    configured = settings(
        sendgrid_api_key=sendgrid.api_key,
        sendgrid_base_url=sendgrid.base_url,
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_from=SENDER,
        twilio_whatsapp_from="whatsapp:+15550007777",
        twilio_base_url=twilio.base_url,
        fcm_project_id="shop-app",
        google_application_credentials=credentials_file,
        fcm_base_url=fcm.base_url,
    )
    providers = build_providers(configured)
    try:
        assert sorted(providers) == ["email", "push", "sms", "whatsapp"]
        assert all(not provider.transactional for provider in providers.values())
        providers["email"].send(email(), None)
        providers["sms"].send(sms(), None)
        providers["push"].send(push(), None)
        twilio.customer_wrote_on_whatsapp(sms().to)
        providers["whatsapp"].send(replace(sms(), channel="whatsapp"), None)
    finally:
        close_all(providers)
    text, chat = (r.body for r in twilio.received)
    assert (text["To"], text["From"]) == (sms().to, SENDER)
    assert (chat["To"], chat["From"]) == (f"whatsapp:{sms().to}", "whatsapp:+15550007777")
    assert chat["StatusCallback"] == STATUS_CALLBACK

    assert sendgrid.received[0].body["from"]["email"] == "noreply@shop.com"
    assert twilio.received[0].body["StatusCallback"] == STATUS_CALLBACK
    assert len(fcm.sends) == 1
    assert describe_providers(configured) == {
        "email": f"SendGrid ({sendgrid.base_url})",
        "sms": f"Twilio ({twilio.base_url}, from {SENDER})",
        "push": f"FCM (project shop-app, {fcm.base_url})",
        "whatsapp": f"Twilio WhatsApp ({twilio.base_url}, from whatsapp:+15550007777)",
    }


def test_real_apis_are_the_default_origins(tmp_path: Path, service_key: ServiceAccountKey) -> None:
    path = write_service_account_file(tmp_path / "sa.json", service_key, "https://unused/token")
    configured = settings(
        sendgrid_api_key="SG.key",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_messaging_service_sid="MG" + "1" * 32,
        fcm_project_id="shop-app",
        google_application_credentials=path,
    )
    close_all(build_providers(configured))

    assert describe_providers(configured) == {
        "email": "SendGrid (https://api.sendgrid.com)",
        "sms": f"Twilio (https://api.twilio.com, messaging service MG{'1' * 32})",
        "push": "FCM (project shop-app, https://fcm.googleapis.com)",
        "whatsapp": "outbox (no TWILIO_WHATSAPP_FROM)",
    }


@pytest.mark.parametrize(
    ("twilio_settings", "missing"),
    [
        ({"twilio_account_sid": "AC1"}, "TWILIO_AUTH_TOKEN and TWILIO_FROM or"),
        (
            {"twilio_account_sid": "AC1", "twilio_auth_token": "t"},
            "set TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID",
        ),
        ({"twilio_from": SENDER}, "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"),
        (
            {"twilio_account_sid": "AC1", "twilio_auth_token": "t", "twilio_from": ""},
            "set TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID",
        ),
    ],
)
def test_half_configured_twilio_names_what_to_set(
    twilio_settings: dict[str, str], missing: str
) -> None:
    with pytest.raises(ValueError, match=missing):
        build_providers(settings(**twilio_settings))
    assert missing in describe_providers(settings(**twilio_settings))["sms"]


def test_fcm_project_without_credentials_names_the_setting() -> None:
    with pytest.raises(ValueError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        build_providers(settings(fcm_project_id="shop-app"))
    assert "misconfigured" in describe_providers(settings(fcm_project_id="shop-app"))["push"]


def test_missing_credentials_file_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"

    with pytest.raises(ValueError, match=f"GOOGLE_APPLICATION_CREDENTIALS={missing}"):
        build_providers(settings(fcm_project_id="shop-app", google_application_credentials=missing))


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        json.dumps({"type": "service_account", "project_id": "shop-app"}),
        json.dumps(
            {
                "type": "service_account",
                "client_email": "journeyman@shop-app.iam.gserviceaccount.com",
                "token_uri": "https://oauth2.googleapis.com/token",
                "private_key": "not a key",
            }
        ),
    ],
)
def test_unusable_credentials_file_names_the_setting(tmp_path: Path, content: str) -> None:
    path = tmp_path / "sa.json"
    path.write_text(content)

    with pytest.raises(ValueError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        build_providers(settings(fcm_project_id="shop-app", google_application_credentials=path))


def test_credentials_without_fcm_project_leave_push_in_the_outbox(tmp_path: Path) -> None:
    configured = settings(google_application_credentials=tmp_path / "for-another-tool.json")

    assert build_providers(configured) == {}
    assert describe_providers(configured)["push"] == "outbox (no FCM_PROJECT_ID)"


def test_a_providers_rate_limit_shows_next_to_it_and_the_outbox_has_none() -> None:
    configured = settings(
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from=SENDER,
        twilio_rate_limit="600/m",
        sendgrid_rate_limit="10",
    )
    close_all(build_providers(configured))

    assert describe_providers(configured) == {
        "email": "outbox (no SENDGRID_API_KEY)",
        "sms": f"Twilio (https://api.twilio.com, from {SENDER}), limit 600/m",
        "push": "outbox (no FCM_PROJECT_ID)",
        "whatsapp": "outbox (no TWILIO_WHATSAPP_FROM)",
    }


@pytest.mark.parametrize("setting", ["sendgrid_rate_limit", "twilio_rate_limit", "fcm_rate_limit"])
def test_a_rate_limit_that_is_not_a_rate_names_the_setting(setting: str) -> None:
    with pytest.raises(ValueError, match=f"{setting.upper()}=fast: a rate limit is messages"):
        build_providers(settings(**{setting: "fast"}))


def test_a_malformed_limit_of_a_configured_provider_is_described_as_such() -> None:
    configured = settings(sendgrid_api_key="SG.key", sendgrid_rate_limit="10/day")
    assert describe_providers(configured)["email"].startswith(
        "SendGrid (https://api.sendgrid.com); misconfigured: SENDGRID_RATE_LIMIT=10/day"
    )


def test_unusable_email_from_names_the_setting() -> None:
    with pytest.raises(ValueError, match="EMAIL_FROM"):
        build_providers(settings(sendgrid_api_key="SG.key", email_from="Shop"))


# --- WhatsApp through Twilio ----------------------------------------------------------


WHATSAPP_SENDER = "whatsapp:+15550007777"


@pytest.fixture
def whatsapp_provider(twilio: TwilioStandIn) -> Iterator[WhatsAppProvider]:
    provider = WhatsAppProvider(
        twilio.account_sid,
        twilio.auth_token,
        from_=WHATSAPP_SENDER,
        base_url=twilio.base_url,
        status_callback_url=STATUS_CALLBACK,
    )
    yield provider
    provider.close()


def chat(**changes: Any) -> OutgoingMessage:
    return sms(**{"channel": "whatsapp", "to": "whatsapp:+33612345678", **changes})


def test_whatsapp_sends_the_approved_template_with_its_variables(
    twilio: TwilioStandIn, whatsapp_provider: WhatsAppProvider
) -> None:
    sid = whatsapp_provider.send(
        chat(data={"content_sid": "HX" + "a" * 32, "content_variables": '{"1": "Ana"}'}), None
    )
    assert sid.startswith("SM")
    [request] = twilio.received
    assert request.body["To"] == "whatsapp:+33612345678"
    assert request.body["From"] == WHATSAPP_SENDER
    assert request.body["ContentSid"] == "HX" + "a" * 32
    assert json.loads(request.body["ContentVariables"]) == {"1": "Ana"}
    assert "Body" not in request.body


def test_whatsapp_free_form_outside_the_window_is_refused_for_the_next_channel(
    twilio: TwilioStandIn, whatsapp_provider: WhatsAppProvider
) -> None:
    # The stand-in refuses as Twilio does (63016): the customer never wrote.
    with pytest.raises(PermanentFailure) as refused:
        whatsapp_provider.send(chat(), None)
    assert refused.value.kind == "rejected"
    assert "63016" in str(refused.value)


@pytest.mark.parametrize("code", [63003, 63024])
def test_a_number_not_on_whatsapp_is_an_invalid_address(
    twilio: TwilioStandIn, whatsapp_provider: WhatsAppProvider, code: int
) -> None:
    twilio.customer_wrote_on_whatsapp("+33612345678")
    twilio.script(TwilioStandIn.error(code, "Channel could not find To address"))
    with pytest.raises(PermanentFailure) as refused:
        whatsapp_provider.send(chat(), None)
    assert refused.value.kind == "invalid_address"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"twilio_whatsapp_from": WHATSAPP_SENDER}, "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"),
        (
            {
                "twilio_account_sid": "AC" + "0" * 32,
                "twilio_auth_token": "token",
                "twilio_whatsapp_from": "shop",
            },
            "TWILIO_WHATSAPP_FROM must be a number",
        ),
    ],
)
def test_a_half_configured_whatsapp_sender_stops_the_worker(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_providers(settings(**changes))
    assert message in describe_providers(settings(**changes))["whatsapp"]


def test_a_whatsapp_only_account_texts_through_the_outbox() -> None:
    configured = settings(
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_whatsapp_from="+15550007777",
    )
    providers = build_providers(configured)
    close_all(providers)
    assert sorted(providers) == ["whatsapp"]
    assert describe_providers(configured)["sms"] == "outbox (no TWILIO_FROM)"
