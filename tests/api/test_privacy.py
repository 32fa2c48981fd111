"""Consent, one-click unsubscribe, erasure and export, through the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from journeyman.privacy.tokens import UnsubscribeToken, sign, sign_v1
from journeyman.storage.models import (
    AudienceTick,
    Base,
    ConsentChange,
    Delivery,
    EntryError,
    JourneyRun,
)
from tests.api.support import ADMIN_TOKEN, Api

SECRET = "harness-secret"  # the harness worker's JOURNEYMAN_SECRET_KEY
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

NEWS = """
id: news
name: News
topic: store_news
entry: {event: subscribed}
steps:
  - id: first
    send: {template: hello, channels: [email]}
  - id: later
    wait: 1d
  - id: second
    send: {template: hello, channels: [email]}
"""


async def start(api: Api) -> None:
    await api.start(NEWS, secret_key=SECRET)
    api.harness.customer(
        "c1", email="ana.lovelace@example.com", phone="+15550001234", first_name="Ana"
    )


async def track(api: Api, event: str, **properties: object) -> None:
    response = await api.post(
        "/v1/track", {"userId": "c1", "event": event, "properties": properties}
    )
    assert response.status_code == 200, response.text
    await api.dispatch()


# -- consents ---------------------------------------------------------------------------


async def test_put_consents_records_each_change_with_its_source(api):
    await start(api)
    assert api.client is not None
    response = await api.client.put(
        "/v1/customers/c1/consents",
        json={"channels": {"sms": False}, "topics": {"store_news": False}, "source": "prefs"},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["channels"]["sms"]["subscribed"] is False
    assert body["topics"]["store_news"]["source"] == "prefs"
    # The same choice again is not a change: the trail keeps one entry per change.
    await api.client.put(
        "/v1/customers/c1/consents", json={"channels": {"sms": False}}, headers=ADMIN
    )
    history = (await api.admin_get("/v1/customers/c1/consents")).json()["history"]
    assert [(h["scope"], h["name"], h["subscribed"]) for h in history] == [
        ("channel", "sms", False),
        ("topic", "store_news", False),
    ]
    profile = (await api.admin_get("/v1/customers/c1")).json()
    assert profile["consents"]["topics"]["store_news"]["subscribed"] is False


async def test_bad_consent_requests_say_what_is_wrong(api):
    await start(api)
    assert api.client is not None
    unknown = await api.client.put(
        "/v1/customers/c1/consents", json={"channels": {"fax": False}}, headers=ADMIN
    )
    assert unknown.status_code == 422
    assert "fax" in unknown.text
    empty = await api.client.put("/v1/customers/c1/consents", json={}, headers=ADMIN)
    assert empty.status_code == 422
    assert "at least one channel or topic" in empty.text
    nobody = await api.client.put(
        "/v1/customers/zz/consents", json={"channels": {"sms": True}}, headers=ADMIN
    )
    assert nobody.status_code == 404
    anonymous = await api.client.put("/v1/customers/c1/consents", json={"channels": {}})
    assert anonymous.status_code == 401


@pytest.mark.temporal
async def test_an_unsubscribe_stops_the_next_send_of_a_running_journey(api):
    await start(api)
    await track(api, "subscribed")
    await api.harness.sleep(timedelta(minutes=5))
    [first] = api.outbox()
    link = first.data["headers"]["List-Unsubscribe"].strip("<>")
    assert first.data["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert api.client is not None
    path = "/" + link.split("/", 3)[3]
    # A link scanner's GET changes nothing.
    page = await api.client.get(path)
    assert page.status_code == 200
    assert "Stop getting store news emails?" in page.text
    # The mail client's RFC 8058 POST unsubscribes at once.
    posted = await api.client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200
    result = await api.harness.result("news/c1")
    second = [p for p in result.path if p.step == "second"][-1]
    assert second.action == "skipped"
    assert "unsubscribed from topic store_news" in second.detail
    assert len(api.outbox()) == 1
    with api.db.session() as session:
        [change] = session.scalars(select(ConsentChange)).all()
    assert (change.scope, change.name, change.source) == ("topic", "store_news", "unsubscribe_link")


async def test_forged_or_altered_tokens_are_refused_and_change_nothing(api):
    await start(api)
    api.harness.customer("c2", email="bob@example.com")
    assert api.client is not None
    # Links of before (payload.mac) and of now (v2~sealed): forged, spliced, cut.
    genuine = sign_v1(SECRET.encode(), UnsubscribeToken("c1", "store_news", "email"))
    forged = sign_v1(b"not our key", UnsubscribeToken("c2", "store_news", "email"))
    payload, mac = genuine.split(".")
    other = sign_v1(SECRET.encode(), UnsubscribeToken("c2", "store_news", "email")).split(".")[0]
    sealed = sign(SECRET.encode(), UnsubscribeToken("c1", "store_news", "email"))
    forged_v2 = sign(b"not our key", UnsubscribeToken("c2", "store_news", "email"))
    bad = (forged, f"{other}.{mac}", "garbage", f"{payload}.{mac[:-2]}xx", forged_v2)
    for token in (*bad, sealed[:-4], sealed[:10] + "AAAA" + sealed[14:]):
        response = await api.client.post(f"/unsubscribe/{token}", content=b"")
        assert response.status_code == 400, token
        assert "not valid" in response.text
    with api.db.session() as session:
        assert session.scalars(select(ConsentChange)).all() == []


async def test_the_page_lets_a_customer_choose_topics_and_the_channel(api):
    await start(api)
    assert api.client is not None
    token = sign(SECRET.encode(), UnsubscribeToken("c1", "store_news", "email"))
    saved = await api.client.post(
        f"/unsubscribe/{token}",
        content=b"manage=1&channel=on",  # keep email, but no store news
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert saved.status_code == 200
    consents = (await api.admin_get("/v1/customers/c1/consents")).json()["consents"]
    assert consents["topics"]["store_news"]["subscribed"] is False
    assert consents["channels"]["email"]["subscribed"] is True


# -- erasure and export -------------------------------------------------------------------


@pytest.mark.temporal
async def test_export_gives_everything_held(api):
    await start(api)
    await track(api, "subscribed", source="footer form")
    await api.harness.sleep(timedelta(minutes=5))
    response = await api.admin_get("/v1/customers/c1/export")
    assert response.status_code == 200
    data = response.json()
    assert data["profile"]["email"] == "ana.lovelace@example.com"
    assert [e["event"] for e in data["events"]] == ["subscribed"]
    assert data["messages"][0]["to"] == "ana.lovelace@example.com"
    assert data["journeys"][0]["journey_id"] == "news"


@pytest.mark.temporal
async def test_erasure_ends_journeys_and_leaves_no_personal_data(api, tmp_path: Path):
    await start(api)
    await api.post(
        "/v1/identify",
        {"userId": "c1", "traits": {"name": "Ana Lovelace", "city": "London"}},
    )
    await api.post("/v1/alias", {"userId": "c1", "previousId": "anon-1"})
    await track(api, "subscribed", note="call Ana Lovelace on +15550001234")
    await api.harness.sleep(timedelta(minutes=5))
    assert len(api.outbox()) == 1
    assert api.client is not None
    response = await api.client.delete("/v1/customers/c1", headers=ADMIN)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["runs_terminated"] == ["news/c1"]
    # The time-skipping server cannot delete executions (the dev server can: see
    # tests/privacy/test_erasure.py); the report says so rather than pretend.
    assert report["identities"] == ["c1", "anon-1"]
    assert "cannot delete executions" in report["histories_note"]
    assert report["pseudonym"].startswith("erased-")
    assert (await api.admin_get("/v1/customers/c1")).status_code == 404
    assert (await api.client.delete("/v1/customers/c1", headers=ADMIN)).status_code == 404
    # Statistics survive under the pseudonym.
    with api.db.session() as session:
        [delivery] = session.scalars(select(Delivery)).all()
        [run] = session.scalars(select(JourneyRun)).all()
    assert delivery.customer_id == report["pseudonym"] == run.customer_id
    assert (run.status, run.outcome) == ("completed", "erased")
    secrets = ("ana.lovelace@example.com", "+15550001234", "Ana Lovelace", "London")
    # No row of any table mentions the address, the number, or the name...
    with api.db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = str(connection.execute(table.select()).all())
            for secret in secrets:
                assert secret not in rows, (table.name, secret)
    # ...and on SQLite nothing readable is left on disk either (secure_delete).
    if api.db.url.startswith("sqlite"):
        with api.db.engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        database = Path(api.db.url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        for secret in secrets:
            assert secret.encode() not in raw, secret


@pytest.mark.temporal
async def test_erasure_keeps_an_entry_error_for_the_stats_but_not_what_it_quoted(api):
    dated = """
id: dated
name: Dated
entry:
  event: booked
  when: "date(event.properties.day) == today"
steps:
  - {id: done, end: true}
"""
    await api.start(NEWS, dated, secret_key=SECRET)
    api.harness.customer("c1", email="ana.lovelace@example.com")
    await track(api, "booked", day="Ana Lovelace")
    export = (await api.admin_get("/v1/customers/c1/export")).json()
    [error] = export["entry_errors"]
    assert (error["journey_id"], error["error"]) == (
        "dated",
        "'Ana Lovelace' is not a date: write dates as 'YYYY-MM-DD'",
    )
    assert api.client is not None

    response = await api.client.delete("/v1/customers/c1", headers=ADMIN)

    assert response.json()["rows_pseudonymized"]["entry_errors"] == 1
    with api.db.session() as session:
        [kept] = session.scalars(select(EntryError)).all()
    assert (kept.journey_id, kept.customer_id, kept.error) == (
        "dated",
        response.json()["pseudonym"],
        "(erased)",
    )
    assert (await api.admin_get("/v1/journeys/dated")).json()["stats"]["overall"][
        "entry_errors"
    ] == 1


@pytest.mark.temporal
async def test_erasure_drops_the_customers_examples_from_segment_check_errors(api):
    await start(api)
    api.harness.customer("c2", email="sam@example.com")
    with api.db.session() as session:
        session.add(
            AudienceTick(
                tick_id="audience/birthday-t1",
                journey_id="birthday",
                version="v1",
                kind="schedule",
                at=datetime(2026, 11, 30, tzinfo=UTC),
                status="done",
                evaluated=2,
                matched=0,
                entered=0,
                errors=2,
                skipped={},
                error_samples=[
                    "c1: '1990-13-45' is not a date: write dates as 'YYYY-MM-DD'",
                    "c2: profile.birthday is not defined",
                ],
            )
        )
    assert api.client is not None

    response = await api.client.delete("/v1/customers/c1", headers=ADMIN)

    assert response.status_code == 200, response.text
    assert response.json()["rows_pseudonymized"]["audience_ticks"] == 1
    with api.db.session() as session:
        tick = session.get(AudienceTick, "audience/birthday-t1")
        assert tick is not None
        assert (tick.errors, tick.error_samples) == (2, ["c2: profile.birthday is not defined"])
