"""Public means hostile: one body limit on every route, tokens checked before they are
decoded, opaque dated unsubscribe links (the old ones still work), a /readyz that
tells nothing about the infrastructure."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from journeyman.events.routing import Router
from journeyman.privacy.tokens import BadToken, UnsubscribeToken, sign, sign_v1, verify
from journeyman.storage.models import ConsentChange
from tests.api.support import ADMIN_TOKEN, CART_JOURNEY, Api
from tests.api.test_privacy import NEWS, SECRET, start

LIMIT = 64 * 1024
ROUTES = [
    ("POST", "/v1/track"),
    ("POST", "/v1/batch"),
    ("POST", "/unsubscribe/anything"),
    ("POST", "/webhooks/sendgrid"),
    ("POST", "/webhooks/twilio/status"),
    ("PUT", "/v1/customers/c1/consents"),
    ("POST", "/v1/journeys/news/pause"),
    ("GET", "/healthz"),
]


async def start_with(api: Api, **settings: Any) -> None:
    await api.start(NEWS, secret_key=SECRET, **settings)
    api.harness.customer("c1", email="ana.lovelace@example.com")


class Body:
    """A request body streamed in 64 KB chunks, counting how many the server pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.total:
            self.pulled += 1
            chunk = b"x" * min(64 * 1024, self.total - sent)
            sent += len(chunk)
            yield chunk


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_refuses_a_declared_oversize_body_without_reading_it(api, method, path):
    await start_with(api, max_body_bytes=LIMIT)
    assert api.client is not None
    body = Body(200 * 1024 * 1024)
    request = api.client.build_request(
        method,
        path,
        content=body,
        headers={"Content-Length": str(body.total), "Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    response = await api.client.send(request)
    assert response.status_code == 413, response.text
    assert response.json()["detail"][0]["type"] == "too_large"
    assert body.pulled <= 1  # at most the transport's first chunk: nothing was read


async def test_a_chunked_body_is_cut_off_at_the_limit(api):
    await start_with(api, max_body_bytes=LIMIT)
    token = sign(SECRET.encode(), UnsubscribeToken("c1", "store_news", "email"))
    assert api.client is not None
    body = Body(200 * 1024 * 1024)  # no Content-Length: sent chunked
    response = await api.client.post(f"/unsubscribe/{token}", content=body)
    assert response.status_code == 413, response.text
    assert body.pulled <= 3  # 200 MB was offered; the app stopped reading past 64 KB
    with api.db.session() as session:
        assert session.scalars(select(ConsentChange)).all() == []


@pytest.mark.parametrize(
    "token",
    [
        "é.abc",  # non-ASCII: was a 500 (UnicodeEncodeError)
        "v2~%C3%A9%C3%A9",
        "%00%01.%02",
        "v2~" + "A" * 40,
        "v2~!!!!",
        "a" * 5000,
        "abc.def.ghi",
        ".",
        "v2~",
    ],
)
async def test_odd_tokens_are_a_400_page_never_a_500(api, token):
    await start(api)
    assert api.client is not None
    for method in ("GET", "POST"):
        response = await api.client.request(method, f"/unsubscribe/{token}", content=b"")
        assert response.status_code in (400, 404), (method, token, response.text)
    with api.db.session() as session:
        assert session.scalars(select(ConsentChange)).all() == []


def test_new_tokens_are_opaque_and_dated():
    key = b"k" * 32
    token = sign(key, UnsubscribeToken("cust_4711@example.com", "store_news", "email"))
    assert token.startswith("v2~")
    raw = base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4))
    assert b"cust_4711" not in raw and b"store_news" not in raw and b'"c"' not in raw
    parsed = verify(key, token)
    assert parsed.customer_id == "cust_4711@example.com"
    assert parsed.issued == date.today() or parsed.issued is not None
    # Every byte matters; another key cannot read or make one.
    with pytest.raises(BadToken):
        verify(b"other" * 8, token)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    with pytest.raises(BadToken):
        verify(key, flipped)
    # Two links to the same thing do not look alike (no correlation across messages).
    assert sign(key, UnsubscribeToken("c1", None, "email")) != sign(
        key, UnsubscribeToken("c1", None, "email")
    )


def test_a_token_past_its_age_is_refused_as_expired():
    key = b"k" * 32
    old = sign(key, UnsubscribeToken("c1", None, "email"), today=date(2024, 1, 1))
    with pytest.raises(BadToken, match="expired"):
        verify(key, old, max_age=timedelta(days=730), today=date(2026, 12, 7))
    assert verify(key, old, max_age=timedelta(days=730), today=date(2025, 6, 1)).issued == date(
        2024, 1, 1
    )
    assert verify(key, old, today=date(2040, 1, 1)).customer_id == "c1"  # no limit set


async def test_links_sent_before_keep_working(api):
    """RFC 8058: a List-Unsubscribe URL already in a mailbox must keep working."""
    await start(api)
    assert api.client is not None
    old = sign_v1(SECRET.encode(), UnsubscribeToken("c1", "store_news", "email"))
    assert "." in old and not old.startswith("v2~")
    response = await api.client.post(f"/unsubscribe/{old}", content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 200, response.text
    with api.db.session() as session:
        [change] = session.scalars(select(ConsentChange)).all()
    assert (change.scope, change.name, change.subscribed) == ("topic", "store_news", False)


async def test_an_expired_link_changes_nothing(api):
    await start_with(api, unsubscribe_link_days=30)
    assert api.client is not None
    token = sign(
        SECRET.encode(),
        UnsubscribeToken("c1", "store_news", "email"),
        today=date.today() - timedelta(days=31),
    )
    response = await api.client.post(f"/unsubscribe/{token}", content=b"")
    assert response.status_code == 400
    assert "expired" in response.text
    with api.db.session() as session:
        assert session.scalars(select(ConsentChange)).all() == []


async def test_readyz_names_what_failed_but_not_the_exception(api: Api) -> None:
    unreachable = await Client.connect(
        "127.0.0.1:1", data_converter=pydantic_data_converter, lazy=True
    )

    def elsewhere(router: Router) -> Router:
        return Router(unreachable, router.db, router.catalog, router.task_queue)

    await api.start(CART_JOURNEY, router=elsewhere)
    assert api.client is not None
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    [problem] = response.json()["detail"]
    assert problem == {"field": "temporal", "message": "not reachable", "type": "unavailable"}
    assert "127.0.0.1" not in response.text and "Error" not in response.text
