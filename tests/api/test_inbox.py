"""The inbox API (`/v1/inbox/{userId}`), its callers, retention and erasure, and the
embeddable script in a real browser (Debian's Chromium, as the journey page test)."""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from journeyman.messaging import whatsapp
from journeyman.messaging.inbox_reading import user_hash
from journeyman.storage.models import Delivery, InboxMessage
from tests.api.support import ADMIN_TOKEN, SERVER_KEY, WRITE_KEY, Api, served
from tests.api.test_journey_page import chromium
from tests.waiting import eventually

IDENTITY_SECRET = "identity-secret-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

NOTE_JOURNEY = """
id: note
name: Note
entry: {event: noted}
steps:
  - id: leave_note
    send: {template: note, channels: [inbox], expires_after: 30d}
"""
NOTE_TEMPLATE = {
    "inbox.txt": (
        "{% block title %}Hello {{ profile.first_name }}{% endblock %}"
        "{% block body %}Your order {{ event.properties.order }} is on its way{% endblock %}"
    )
}


async def start(api: Api) -> None:
    api.harness.template("note", NOTE_TEMPLATE)
    await api.start(NOTE_JOURNEY, identity_secret=IDENTITY_SECRET)
    api.harness.customer("c1", first_name="Ana")
    api.harness.customer("c2", first_name="Bo")


async def note(api: Api, customer_id: str, order: str) -> None:
    await api.harness.event("noted", customer_id=customer_id, order=order)
    await api.harness.result(f"note/{customer_id}")


def as_app(user_id: str, hash_of: str | None = None) -> dict[str, str]:
    """Query parameters an app sends with the write key."""
    return {"writeKey": WRITE_KEY, "userHash": user_hash(IDENTITY_SECRET, hash_of or user_id)}


@pytest.mark.temporal
async def test_a_message_is_listed_for_its_customer_only_and_marked_read(api: Api) -> None:
    await start(api)
    await note(api, "c1", "A-1")
    assert api.client is not None
    listed = await api.client.get("/v1/inbox/c1", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["unread"] == 1
    [message] = body["messages"]
    assert (message["title"], message["body"]) == ("Hello Ana", "Your order A-1 is on its way")
    assert (message["journey_id"], message["step_id"], message["read_at"]) == (
        "note",
        "leave_note",
        None,
    )
    created = datetime.fromisoformat(message["created_at"])
    assert datetime.fromisoformat(message["expires_at"]) - created == timedelta(days=30)
    # Another customer's inbox does not have it, and cannot mark it read.
    other = await api.client.get("/v1/inbox/c2", headers=ADMIN)
    assert other.json() == {"user_id": "c2", "unread": 0, "messages": []}
    refused = await api.client.post(f"/v1/inbox/c2/{message['id']}/read", headers=ADMIN)
    assert refused.status_code == 404
    # The app marks it read with its write key and the user's hash.
    read = await api.client.post(f"/v1/inbox/c1/{message['id']}/read", params=as_app("c1"))
    assert read.status_code == 200, read.text
    assert read.json()["read_at"] is not None
    assert read.headers["access-control-allow-origin"] == "*"
    again = await api.client.get("/v1/inbox/c1", params=as_app("c1"))
    assert again.json()["unread"] == 0
    assert again.json()["messages"][0]["read_at"] == read.json()["read_at"]
    # Read counts as opened, as an email open does.
    [delivery] = api.deliveries()
    assert (delivery.channel, delivery.status) == ("inbox", "sent")
    assert delivery.opened_at is not None


@pytest.mark.temporal
async def test_newest_first_and_expired_messages_are_gone(api: Api) -> None:
    await start(api)
    await note(api, "c1", "A-1")
    await api.harness.sleep(timedelta(minutes=5))
    with api.db.session() as session:
        first = session.scalars(select(InboxMessage)).one()
        session.add(
            InboxMessage(
                delivery_id=first.delivery_id + 1000,
                customer_id="c1",
                journey_id="note",
                step_id="leave_note",
                title="Old news",
                body="expired",
                created_at=datetime.now(UTC) - timedelta(days=40),
                expires_at=datetime.now(UTC) - timedelta(days=10),
            )
        )
        session.add(
            InboxMessage(
                delivery_id=first.delivery_id + 1001,
                customer_id="c1",
                journey_id="note",
                step_id="leave_note",
                title="Newest",
                body="kept",
                created_at=datetime.now(UTC) + timedelta(days=1),
            )
        )
    assert api.client is not None
    body = (await api.client.get("/v1/inbox/c1", headers=ADMIN)).json()
    assert [m["title"] for m in body["messages"]] == ["Newest", "Hello Ana"]
    assert body["unread"] == 2
    with api.db.session() as session:
        titles = session.scalars(select(InboxMessage.title)).all()
    assert "Old news" not in titles  # deleted as the inbox was read


@pytest.mark.temporal
async def test_who_may_read_an_inbox(api: Api) -> None:
    await start(api)
    await note(api, "c1", "A-1")
    assert api.client is not None

    async def status(params: dict[str, str] | None = None, **kwargs: object) -> int:
        response = await api.client.get("/v1/inbox/c1", params=params, **kwargs)  # type: ignore[union-attr,arg-type]
        if response.status_code >= 400:
            assert response.json()["error"], response.text
        return response.status_code

    assert await status() == 401
    assert await status(headers={"Authorization": "Bearer wrong"}) == 401
    assert await status({"writeKey": WRITE_KEY}) == 401  # no userHash
    assert await status(as_app("c1", hash_of="c2")) == 401  # c2's hash
    assert await status({**as_app("c1"), "writeKey": "wk_unknown"}) == 401
    assert await status({"writeKey": WRITE_KEY, "userHash": "zz"}) == 401
    refused = await api.client.get("/v1/inbox/c1", params=as_app("c1", hash_of="c2"))
    assert refused.json()["error"] == "userHash does not match this user id"
    assert refused.headers["access-control-allow-origin"] == "*"  # the page can read why
    assert await status(as_app("c1")) == 200
    basic = httpx.BasicAuth(WRITE_KEY, "")
    assert await status({"userHash": as_app("c1")["userHash"]}, auth=basic) == 200
    assert await status(headers=ADMIN) == 200
    # A server key (secret, the retailer's own servers) reads any inbox, no hash needed.
    assert await status(auth=httpx.BasicAuth(SERVER_KEY, "")) == 200
    assert await status(auth=httpx.BasicAuth("sk_unknown", "")) == 401
    # Odd input is a 4xx, never a 500.
    assert (await api.client.get("/v1/inbox/" + "x" * 300, headers=ADMIN)).status_code == 422
    assert (await api.client.post("/v1/inbox/c1/abc/read", headers=ADMIN)).status_code == 422
    assert (await api.client.post("/v1/inbox/c1/0/read", headers=ADMIN)).status_code == 422
    assert (await api.client.get("/v1/inbox/c1?limit=5000", headers=ADMIN)).status_code == 422


async def test_without_an_identity_secret_a_write_key_reads_no_inbox(api: Api) -> None:
    api.harness.template("note", NOTE_TEMPLATE)
    await api.start(NOTE_JOURNEY)
    assert api.client is not None
    response = await api.client.get("/v1/inbox/c1", params=as_app("c1"))
    assert response.status_code == 401
    assert "JOURNEYMAN_IDENTITY_SECRET" in response.json()["error"]


@pytest.mark.temporal
async def test_erasure_empties_the_inbox_and_export_lists_it(api: Api) -> None:
    await start(api)
    api.harness.customer("c1", phone="+15550001")
    with api.db.session() as session:
        whatsapp.record_inbound(session, "+15550001", datetime.now(UTC))
    await note(api, "c1", "A-1")
    await note(api, "c2", "B-2")
    assert api.client is not None
    exported = (await api.client.get("/v1/customers/c1/export", headers=ADMIN)).json()
    [message] = exported["messages"]
    assert message["channel"] == "inbox"
    assert message["inbox"]["title"] == "Hello Ana"
    erased = await api.client.delete("/v1/customers/c1", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    assert erased.json()["rows_deleted"]["inbox_messages"] == 1
    assert erased.json()["rows_deleted"]["whatsapp_windows"] == 1
    listed = (await api.client.get("/v1/inbox/c1", headers=ADMIN)).json()
    assert listed["messages"] == []
    with api.db.session() as session:
        left = session.scalars(select(InboxMessage.customer_id)).all()
    assert left == ["c2"]


# -- the embeddable script in a real browser ---------------------------------------------


@contextlib.contextmanager
def static_site(root: Path) -> Iterator[str]:
    """A retailer's site: another origin than the API, serving `root`."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def shop_page(api_base: str, user_id: str, click_first: bool = False) -> str:
    clicker = (
        """<script>
        var timer = setInterval(function () {
          var item = document.querySelector('.jm-inbox-item.jm-unread');
          if (item) { clearInterval(timer); item.click(); }
        }, 50);
        </script>"""
        if click_first
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Shop</title></head>
<body><h1>My account</h1>
<div id="journeyman-inbox"></div>
<script src="{api_base}/v1/inbox.js" data-user-id="{user_id}"
  data-user-hash="{user_hash(IDENTITY_SECRET, user_id)}" data-write-key="{WRITE_KEY}"></script>
{clicker}
</body></html>"""


@pytest.mark.temporal
@pytest.mark.slow
@pytest.mark.database_incidental
async def test_the_script_shows_the_inbox_in_the_browser(api: Api, tmp_path: Path) -> None:
    await start(api)
    await note(api, "c1", "<b>A-1</b>")
    await note(api, "c2", "B-2")
    assert api.app is not None
    site = tmp_path / "site"
    site.mkdir()
    async with served(api.app) as api_base:
        (site / "account.html").write_text(shop_page(api_base, "c1"))
        (site / "read.html").write_text(shop_page(api_base, "c1", click_first=True))
        with static_site(site) as shop:
            dom = (await chromium(tmp_path, "--dump-dom", f"{shop}/account.html")).decode()
            assert 'class="jm-inbox"' in dom, dom[-3000:]
            assert "Hello Ana" in dom
            # Text stays text: the order number's markup is shown, not obeyed.
            assert "Your order &lt;b&gt;A-1&lt;/b&gt; is on its way" in dom
            assert "(1 unread)" in dom
            assert 'class="jm-inbox-item jm-unread"' in dom
            assert "B-2" not in dom  # c2's message is c2's
            # The page clicks the unread message, as the customer would.
            await chromium(
                tmp_path, "--virtual-time-budget=30000", "--dump-dom", f"{shop}/read.html"
            )

            def read() -> InboxMessage | None:
                with api.db.session() as session:
                    return session.scalars(
                        select(InboxMessage).where(
                            InboxMessage.customer_id == "c1", InboxMessage.read_at.is_not(None)
                        )
                    ).one_or_none()

            row = await eventually(read, what="the click marked the message read")
            again = (await chromium(tmp_path, "--dump-dom", f"{shop}/account.html")).decode()
    assert 'class="jm-inbox-item jm-unread"' not in again, again[-3000:]
    assert 'class="jm-inbox-item" data-id=' in again
    assert "unread)" not in again
    with api.db.session() as session:
        delivery = session.get(Delivery, row.delivery_id)
    assert delivery is not None and delivery.opened_at is not None


@pytest.mark.temporal
async def test_opens_and_clicks_from_the_app_count_in_stats(api: Api) -> None:
    await start(api)
    await note(api, "c1", "A-1")
    await note(api, "c2", "B-2")
    assert api.client is not None
    [mine] = (await api.client.get("/v1/inbox/c1", headers=ADMIN)).json()["messages"]
    [theirs] = (await api.client.get("/v1/inbox/c2", headers=ADMIN)).json()["messages"]
    for name, message_id in [
        ("inbox_opened", mine["id"]),
        ("inbox_clicked", mine["id"]),
        ("inbox_clicked", mine["id"]),  # a second click counts once
        ("inbox_opened", theirs["id"]),  # c1 cannot open c2's message
        ("inbox_opened", "not a number"),
    ]:
        # From the app, with the client key: identity verification is on, so it sends
        # the userHash its server computed.
        response = await api.post(
            "/v1/track",
            {
                "userId": "c1",
                "event": name,
                "properties": {"inbox_message_id": message_id},
                "context": {"userHash": user_hash(IDENTITY_SECRET, "c1")},
            },
        )
        assert response.status_code == 200, response.text
    listed = (await api.client.get("/v1/inbox/c1", headers=ADMIN)).json()
    assert listed["unread"] == 0  # opened in the app: read
    stats = (await api.admin_get("/v1/journeys/note")).json()["stats"]
    [inbox] = [m for m in stats["overall"]["messages"] if m["channel"] == "inbox"]
    assert (inbox["sent"], inbox["opened"], inbox["clicked"]) == (2, 1, 1)
    # The journey page counts them in its table of messages by channel.
    page = await api.admin_get("/journeys/note")
    assert page.status_code == 200
    row = page.text.split("<td>inbox</td>", 1)[1].split("</tr>", 1)[0]
    assert [int(n) for n in re.findall(r"<td class=\"n\">(\d+)</td>", row)][:4] == [2, 0, 1, 1]
