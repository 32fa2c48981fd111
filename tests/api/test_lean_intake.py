"""The Segment endpoints' own request handling (`deps.LeanSegmentRoute`) answers exactly
as FastAPI's did (`deps.SegmentRoute`, the same endpoints through FastAPI's handler).

Two apps, each on a database of its own so that neither sees what the other stored:
the product's, and a reference app whose `/reference/v1/...` routes are the same
endpoint functions run by FastAPI. Every request goes to both; the status, the body and
the headers a client reads must be the same. The requests are drawn around valid
Segment messages: fields dropped, set to any JSON value or to values just past a
limit, bodies that are no JSON, gzip, too deep or too large, every way of
authenticating and of failing to.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from journeyman.api import limits
from journeyman.api.deps import LeanSegmentRoute, SegmentRoute
from journeyman.api.routes import events
from journeyman.storage.db import Database
from tests.api.support import SERVER_KEY, WEBHOOK_SECRET, WRITE_KEY, Api, OfflineHarness
from tests.conftest import POSTGRES, _postgres_database

IDENTITY_SECRET = "identity-secret-for-tests"
MAX_BODY = 40_000  # small enough to pass with a few long strings


def reference_router() -> APIRouter:
    """The Segment endpoints through FastAPI's own request handling."""
    reference = APIRouter(prefix="/reference", route_class=SegmentRoute)
    for route in events.router.routes:
        assert isinstance(route, APIRoute)
        reference.add_api_route(
            route.path,
            route.endpoint,
            methods=sorted(route.methods or ()),
            response_model=route.response_model,
        )
    return reference


@pytest.fixture
def reference_db(tmp_path: Path) -> Iterator[Database]:
    if POSTGRES:
        yield from _postgres_database()
        return
    database = Database(f"sqlite:///{tmp_path}/reference.db")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
async def both(
    api: Api, reference_db: Database, tmp_path: Path, task_queue: str
) -> AsyncIterator[tuple[Api, Api]]:
    options: dict[str, Any] = {"identity_secret": IDENTITY_SECRET, "max_body_bytes": MAX_BODY}
    await api.start(**options)
    root = tmp_path / "reference"
    root.mkdir()
    harness = await OfflineHarness.create(reference_db, root, task_queue)
    reference = Api(harness)
    try:
        app = await reference.start(**options)
        app.include_router(reference_router())
        yield api, reference
    finally:
        await reference.close()


def test_the_segment_endpoints_are_lean_routes() -> None:
    assert {type(route) for route in events.router.routes} == {LeanSegmentRoute}
    assert {route.path for route in events.router.routes if isinstance(route, APIRoute)} == {
        f"/v1/{name}" for name in ("track", "identify", "alias", "page", "screen", "group", "batch")
    }


def test_a_route_of_another_shape_is_refused_when_built() -> None:
    async def plain(message: dict[str, Any]) -> None:
        return None

    with pytest.raises(TypeError, match="LeanSegmentRoute endpoint"):
        APIRouter(route_class=LeanSegmentRoute).add_api_route("/x", plain, methods=["POST"])


# -- requests -------------------------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "track": {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {}},
    "identify": {"type": "identify", "userId": "u2", "traits": {"email": "a@example.com"}},
    "alias": {"type": "alias", "userId": "u3", "previousId": "anon-3"},
    "page": {"type": "page", "anonymousId": "anon-4", "name": "Home", "category": "Docs"},
    "screen": {"type": "screen", "userId": "u5", "name": "Cart"},
    "group": {"type": "group", "userId": "u6", "groupId": "g1", "traits": {"plan": "pro"}},
}
FIELDS = sorted(
    {field for message in VALID.values() for field in message}
    | {"messageId", "timestamp", "originalTimestamp", "sentAt", "context", "integrations"}
)
EDGES = [
    "",
    " ",
    "x" * 201,
    "2026-05-04T10:00:00Z",
    "2026-05-04T10:00:00",
    "not a time",
    "Europe/Paris",
    "Mars/Olympus",
    "+33 6 12 34 56 78",
    "12",
    "trait_changed",
    "track",
    "identify",
    "batch",
    "\u0000",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(EDGES)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
# Values whose shape passes a limit (depth, keys, items, key length).
too_big = st.sampled_from(
    [
        json.loads("[" * (limits.MAX_DEPTH + 1) + "]" * (limits.MAX_DEPTH + 1)),
        {str(i): i for i in range(limits.MAX_KEYS + 1)},
        list(range(limits.MAX_ITEMS + 1)),
        {"k" * (limits.MAX_KEY_CHARS + 1): 1},
        "x" * (limits.MAX_STRING_CHARS + 1),
    ]
)
TRAIT_FIELDS = [
    "email",
    "phone",
    "timezone",
    "locale",
    "push_tokens",
    "push_token",
    "whatsapp_opt_in",
]


@st.composite
def messages(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(sorted(VALID)))
    message = dict(VALID[kind])
    if draw(st.sampled_from([False, False, False, True])):
        del message[draw(st.sampled_from(sorted(message)))]
    changes = {}
    if draw(st.sampled_from([False, True])):
        changes = draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=2))
    if draw(st.sampled_from([False] * 19 + [True])):
        changes[draw(st.sampled_from(FIELDS))] = draw(too_big)
    message.update(changes)
    if draw(st.sampled_from([False, False, True])):
        traits = draw(st.dictionaries(st.sampled_from(TRAIT_FIELDS), values, max_size=2))
        message["traits"] = traits
    if draw(st.booleans()):
        message["messageId"] = draw(st.sampled_from(["m1", "m2", "m3"]))
    if draw(st.sampled_from([False] * 9 + [True])):
        return draw(values)  # not a message at all
    return message


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """(path, body as sent, headers besides authentication)."""
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        path = "/v1/batch"
        payload: Any = {"batch": draw(st.lists(messages(), max_size=3))}
        if draw(st.booleans()):
            payload.update(
                draw(
                    st.dictionaries(
                        st.sampled_from(["context", "sentAt", "writeKey"]), values, max_size=2
                    )
                )
            )
        if draw(st.sampled_from([False] * 9 + [True])):
            payload = draw(values)
    else:
        payload = draw(messages())
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind not in VALID or draw(st.sampled_from([False] * 4 + [True])):
            kind = draw(st.sampled_from(sorted(VALID)))
        path = f"/v1/{kind}"
    body = json.dumps(payload).encode()
    wire = ["binary", "cut", "empty", "gzip", "latin", "encoding", "large", "content type"]
    match draw(st.sampled_from(wire + ["as is"] * 12)):
        case "binary":
            body = draw(st.binary(max_size=20))
        case "cut":
            body = body[: draw(st.integers(1, max(1, len(body) - 1)))]
        case "empty":
            body = b""
        case "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        case "latin":
            body = b"\xff" + body  # not UTF-8
        case "encoding":
            headers["Content-Encoding"] = draw(st.sampled_from(["br", "gzip"]))  # gzip: not gzip
        case "large":
            body = json.dumps({"batch": [], "pad": "x" * MAX_BODY}).encode()
        case "content type":
            headers["Content-Type"] = draw(
                st.sampled_from(["text/plain", "application/x-www-form-urlencoded"])
            )
        case _:
            pass
    return path, body, headers


@st.composite
def credentials(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    def basic(user: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:".encode()).decode()

    match draw(
        st.sampled_from(["server"] * 6 + ["client", "none", "unknown", "bearer", "bad", "webhook"])
    ):
        case "none":
            return {}
        case "unknown":
            return {"Authorization": basic("wk_unknown")}
        case "bearer":
            return {"Authorization": "Bearer " + SERVER_KEY}
        case "bad":
            return {"Authorization": "Basic !!!"}
        case "webhook":
            at = datetime.now(UTC)
            signed = {
                "webhook-id": "msg_" + draw(st.sampled_from(["1", "2"])),
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": Webhook(WEBHOOK_SECRET).sign(
                    "msg_1", at, body.decode("latin-1")
                ),
            }
            for name in draw(st.lists(st.sampled_from(sorted(signed)), max_size=1)):
                del signed[name]
            return signed
        case "client":
            return {"Authorization": basic(WRITE_KEY)}
        case _:
            return {"Authorization": basic(SERVER_KEY)}


def answer(response: httpx.Response) -> tuple[int, Any, dict[str, str | None]]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    headers = {
        name: response.headers.get(name)
        for name in ("content-type", "content-length", "www-authenticate", "connection")
    }
    return response.status_code, body, headers


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_lean_answers_are_fastapis(both: tuple[Api, Api], data: st.DataObject) -> None:
    lean, reference = both
    assert lean.client is not None and reference.client is not None
    path, body, headers = data.draw(bodies(), label="request")
    headers = {**headers, **data.draw(credentials(body), label="credentials")}
    got = await lean.client.post(path, content=body, headers=headers)
    expected = await reference.client.post("/reference" + path, content=body, headers=headers)
    assert answer(got) == answer(expected), (path, body[:300], headers)
    assert got.status_code < 500


async def test_both_store_what_they_accept(both: tuple[Api, Api]) -> None:
    """The same message through each: both stored it, the same way."""
    lean, reference = both
    assert lean.client is not None and reference.client is not None
    message = {
        "userId": "u1",
        "event": "Order Completed",
        "messageId": "m-same",
        "properties": {"total": 9.5},
    }
    auth = httpx.BasicAuth(SERVER_KEY, "")
    for _ in range(2):  # the second is a duplicate, acknowledged the same
        got = await lean.client.post("/v1/track", json=message, auth=auth)
        expected = await reference.client.post("/reference/v1/track", json=message, auth=auth)
        assert answer(got) == answer(expected)
        assert got.json() == {"success": True}
    stored = [(e.message_id, e.customer_id, e.name, e.properties) for e in lean.events()]
    assert stored == [
        (e.message_id, e.customer_id, e.name, e.properties) for e in reference.events()
    ]
    assert stored == [("m-same", "u1", "Order Completed", {"total": 9.5})]
