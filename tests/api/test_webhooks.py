"""Standard Webhooks: signed requests are events; anything unsigned, altered or old is 401.

Requests are signed with the `standardwebhooks` reference library, not with our code.
"""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from journeyman.api.auth import WebhookHeaders, verify_webhook, webhook_keys
from journeyman.api.errors import ApiError
from tests.api.support import CART_JOURNEY, WEBHOOK_SECRET, Api

BODY = json.dumps(
    {"userId": "u1", "event": "cart_abandoned", "properties": {"cart_id": "c1"}}
).encode()


def signed(
    body: bytes = BODY,
    *,
    secret: str = WEBHOOK_SECRET,
    msg_id: str = "msg_1",
    at: datetime | None = None,
) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "Content-Type": "application/json",
    }


def other_secret() -> str:
    return "whsec_" + base64.b64encode(b"another key, another sender....").decode()


# BODY as stored: the webhook id is its message id (the body has none).
STORED = ("msg_1", "track", "u1", "cart_abandoned", {"cart_id": "c1"})


def stored(api: Api) -> list[tuple[object, ...]]:
    """Every stored event as (message id, type, customer, name, properties), in order."""
    return [(e.message_id, e.type, e.customer_id, e.name, e.properties) for e in api.events()]


async def test_signed_request_is_accepted(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/track", content=BODY, headers=signed(), write_key=None)
    assert response.status_code == 200, response.text
    # No messageId in the body: the webhook id makes the sender's retries harmless.
    assert stored(api) == [STORED]


async def test_a_retried_webhook_is_stored_once(api: Api) -> None:
    await api.start(CART_JOURNEY)
    for _ in range(2):
        response = await api.post("/v1/track", content=BODY, headers=signed(), write_key=None)
        assert response.status_code == 200
    assert stored(api) == [STORED]


async def test_any_of_several_signatures_passes_during_key_rotation(api: Api) -> None:
    await api.start(CART_JOURNEY)
    headers = signed()
    stale = signed(secret=other_secret())["webhook-signature"]
    headers["webhook-signature"] = f"{stale} {headers['webhook-signature']}"
    response = await api.post("/v1/track", content=BODY, headers=headers, write_key=None)
    assert response.status_code == 200, response.text
    assert stored(api) == [STORED]


async def test_any_of_several_configured_secrets_passes(api: Api) -> None:
    await api.start(CART_JOURNEY, webhook_secret=f"{WEBHOOK_SECRET} {other_secret()}")
    headers = signed(secret=other_secret())
    response = await api.post("/v1/track", content=BODY, headers=headers, write_key=None)
    assert response.status_code == 200, response.text
    assert stored(api) == [STORED]


async def test_a_signed_gzip_body_is_accepted(api: Api) -> None:
    await api.start(CART_JOURNEY)
    headers = {**signed(), "Content-Encoding": "gzip"}
    response = await api.post(
        "/v1/track", content=gzip.compress(BODY), headers=headers, write_key=None
    )
    assert response.status_code == 200, response.text
    assert stored(api) == [STORED]


def tampered() -> tuple[bytes, dict[str, str]]:
    return BODY.replace(b"u1", b"u2"), signed()


def wrong_secret() -> tuple[bytes, dict[str, str]]:
    return BODY, signed(secret=other_secret())


def stale() -> tuple[bytes, dict[str, str]]:
    return BODY, signed(at=datetime.now(UTC) - timedelta(minutes=6))


def from_the_future() -> tuple[bytes, dict[str, str]]:
    return BODY, signed(at=datetime.now(UTC) + timedelta(minutes=6))


def missing_signature() -> tuple[bytes, dict[str, str]]:
    headers = signed()
    del headers["webhook-signature"]
    return BODY, headers


def other_id() -> tuple[bytes, dict[str, str]]:
    headers = signed()
    headers["webhook-id"] = "msg_2"
    return BODY, headers


def unknown_version() -> tuple[bytes, dict[str, str]]:
    headers = signed()
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    return BODY, headers


@pytest.mark.parametrize(
    "request_",
    [tampered, wrong_secret, stale, from_the_future, missing_signature, other_id, unknown_version],
)
async def test_bad_signatures_are_401_and_store_nothing(api: Api, request_) -> None:  # type: ignore[no-untyped-def]
    await api.start(CART_JOURNEY)
    body, headers = request_()
    response = await api.post("/v1/track", content=body, headers=headers, write_key=None)
    assert response.status_code == 401
    assert response.json()["error"]
    assert api.events() == []


async def test_the_tolerance_for_a_webhooks_age_is_the_setting(api: Api) -> None:
    """JOURNEYMAN_WEBHOOK_TOLERANCE: a sender whose retries come late may be given more."""
    await api.start(CART_JOURNEY, webhook_tolerance_seconds=900)
    ten_minutes_old = signed(at=datetime.now(UTC) - timedelta(minutes=10))
    response = await api.post("/v1/track", content=BODY, headers=ten_minutes_old, write_key=None)
    assert response.status_code == 200, response.text
    late = signed(msg_id="msg_2", at=datetime.now(UTC) - timedelta(minutes=16))
    response = await api.post("/v1/track", content=BODY, headers=late, write_key=None)
    assert response.status_code == 401


async def test_webhooks_are_refused_when_no_secret_is_configured(api: Api) -> None:
    await api.start(CART_JOURNEY, webhook_secret=None)
    response = await api.post("/v1/track", content=BODY, headers=signed(), write_key=None)
    assert response.status_code == 401
    assert api.events() == []


# The Standard Webhooks specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_HEADERS = WebhookHeaders(
    id="msg_p5jXN8AQM9LWM0D4loKWxJek",
    timestamp="1614265330",
    signature="v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
)
VECTOR_BODY = b'{"test": 2432232314}'


def test_the_published_test_vector_verifies() -> None:
    keys = webhook_keys(VECTOR_SECRET)
    verify_webhook(keys, VECTOR_HEADERS, [VECTOR_BODY], now=1614265330 + 10)
    with pytest.raises(ApiError) as refused:
        verify_webhook(keys, VECTOR_HEADERS, [VECTOR_BODY.replace(b"2", b"3")], now=1614265330)
    assert refused.value.status_code == 401
    with pytest.raises(ApiError):  # the same request, an hour later: a replay
        verify_webhook(keys, VECTOR_HEADERS, [VECTOR_BODY], now=1614265330 + 3600)


def test_malformed_signature_lists_are_401_not_500() -> None:
    keys = webhook_keys(VECTOR_SECRET)
    for signature in ("v1", "v1,", "v1,@@@", "nonsense", "v1,g0hM v2", ","):
        headers = WebhookHeaders(VECTOR_HEADERS.id, VECTOR_HEADERS.timestamp, signature)
        with pytest.raises(ApiError) as refused:
            verify_webhook(keys, headers, [VECTOR_BODY], now=1614265330)
        assert refused.value.status_code == 401
    # A valid signature after malformed ones still passes.
    headers = WebhookHeaders(
        VECTOR_HEADERS.id, VECTOR_HEADERS.timestamp, f"v1,@@@ v2,x {VECTOR_HEADERS.signature}"
    )
    verify_webhook(keys, headers, [VECTOR_BODY], now=1614265330)
