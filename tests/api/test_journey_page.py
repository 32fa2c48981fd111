"""The journey page (`GET /journeys/{id}`): its HTML, and the page in a real browser.

The browser tests run Debian's Chromium headless against the app served by uvicorn:
`make test` installs it (scripts/ensure-chromium); without it they skip and say so.
Where customers are now comes from Temporal's visibility, which the time-skipping
server does not have: most tests stand in for `running_steps`; one runs real journeys on
the dev server and reads the counts from its visibility.
"""

from __future__ import annotations

import asyncio
import html
import re
import struct
import uuid
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from journeyman.api.routes import journeys as journey_routes
from journeyman.dsl.graph import mermaid
from journeyman.storage.db import Database
from journeyman.storage.models import (
    Delivery,
    EntryError,
    JourneyRun,
    JourneyVersion,
    StepLog,
)
from tests.api.support import ADMIN_TOKEN, Api, served
from tests.harness import Harness
from tests.waiting import eventually

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 2000

CART_JOURNEY = """
id: cart
name: Cart reminder
description: Bring shoppers back to the cart they left.
entry:
  event: cart_abandoned
  key: "event.properties.cart_id"
  holdout: 10%
goal: {event: order_placed}
steps:
  - id: pause
    wait: 1h
  - id: remind
    send: {template: cart_reminder, channels: [email]}
  - id: wait_open
    wait_for: {event: email_opened, timeout: 1d, on_timeout: nudge}
    goto: done
  - id: nudge
    send: {template: cart_nudge, channels: [sms]}
  - id: done
    end: true
"""

NOW_AT_STEP = {"pause": 4, "wait_open": 7}
T0 = datetime.now(UTC) - timedelta(days=3)


def seed(api: Api) -> None:
    """60 treated customers: 45 got the reminder and 20 opened it, 12 more got the SMS
    nudge, 24 converted, 11 are still running; 30 held out, 2 of whom converted."""
    with api.db.session() as session:
        version = session.scalars(
            select(JourneyVersion.version).where(JourneyVersion.journey_id == "cart")
        ).one()

        def run(n: int, *, holdout: bool = False, outcome: str | None = None) -> str:
            workflow_id = f"cart/c{n}/cart_{n}"
            session.add(
                JourneyRun(
                    run_id=f"run-{n}",
                    workflow_id=workflow_id,
                    journey_id="cart",
                    version=version,
                    customer_id=f"c{n}",
                    holdout=holdout,
                    status="running" if outcome is None else "completed",
                    outcome=outcome,
                    started_at=T0,
                    ended_at=None if outcome is None else T0 + timedelta(days=1),
                )
            )
            return workflow_id

        def send(workflow_id: str, step: str, channel: str, **fields: Any) -> None:
            session.add(
                Delivery(
                    idempotency_key=f"{workflow_id}/{step}/1",
                    workflow_id=workflow_id,
                    journey_id="cart",
                    version=version,
                    step_id=step,
                    customer_id=workflow_id.split("/")[1],
                    template=step,
                    channel=channel,
                    status="sent",
                    decided_at=T0 + timedelta(hours=1),
                    sent_at=T0 + timedelta(hours=1),
                    **fields,
                )
            )

        for n in range(60):
            outcome = "converted" if n < 24 else None if n < 35 else "ended"
            workflow_id = run(n, outcome=outcome)
            if n < 45:
                opened = T0 + timedelta(hours=2) if n < 20 else None
                send(workflow_id, "remind", "email", opened_at=opened)
            if 45 <= n < 57:
                send(workflow_id, "nudge", "sms")
        for n in range(100, 130):
            run(n, holdout=True, outcome="converted" if n < 102 else "ended")


@pytest.fixture
async def page_api(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    async def running_steps(_client: Any, journey_id: str, *_: Any, **__: Any) -> dict[str, int]:
        assert journey_id == "cart"
        return dict(NOW_AT_STEP)

    monkeypatch.setattr(journey_routes, "running_steps", running_steps)
    app = await api.start(CART_JOURNEY)
    app.state.temporal_ui_url = "http://temporal.test:8233/"
    seed(api)
    return api


async def get(api: Api, path: str, auth: Any = None) -> httpx.Response:
    assert api.client is not None
    return await api.client.get(path, auth=auth)


def chart(page: str) -> str:
    """The Mermaid source in the page, as Mermaid reads it."""
    found = re.search(r'<pre class="mermaid">(.*?)</pre>', page, re.S)
    assert found, "no chart in the page"
    return html.unescape(found[1])


def section(page: str, section_id: str) -> str:
    """The text of one section of the page, tags dropped, spaces collapsed."""
    found = re.search(rf'<section[^>]*id="{section_id}".*?</section>', page, re.S)
    assert found, f"no section {section_id}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found[0])).split())


# -- the HTML -------------------------------------------------------------------------------


async def test_without_credentials_the_browser_is_asked_for_them(page_api: Api) -> None:
    response = await get(page_api, "/journeys/cart")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="Journeyman"'
    assert response.headers["content-type"].startswith("text/html")
    assert "admin token" in response.text


async def test_a_wrong_token_is_refused_like_none(page_api: Api) -> None:
    response = await get(page_api, "/journeys/cart", auth=("anyone", "not-the-token"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="Journeyman"'


async def test_the_token_opens_the_page_as_basic_password_or_bearer(page_api: Api) -> None:
    basic = await get(page_api, "/journeys/cart", auth=("anyone", ADMIN_TOKEN))
    assert basic.status_code == 200
    assert basic.headers["content-type"].startswith("text/html")
    assert "<h1>Cart reminder</h1>" in basic.text
    bearer = await page_api.admin_get("/journeys/cart")
    assert bearer.status_code == 200


async def test_each_step_of_the_flow_shows_runs_there_now_and_messages_sent(
    page_api: Api,
) -> None:
    page = (await page_api.admin_get("/journeys/cart")).text
    source = chart(page)
    assert source.startswith("flowchart TD\n")
    assert 'step_pause[/"pause<br/>wait 1h<br/>▶ 4 here now"/]' in source
    assert (
        'step_remind["remind<br/>send cart_reminder via email<br/>▶ 0 here now · ✉ 45 sent"]'
        in (source)
    )
    assert "▶ 7 here now" in source
    assert "✉ 12 sent" in source  # the SMS nudges
    assert "class step_pause,step_wait_open busy" in source  # where customers are


async def test_funnel_counts_treated_customers_at_each_stage(page_api: Api) -> None:
    page = (await page_api.admin_get("/journeys/cart")).text
    assert section(page, "funnel").startswith(
        "Conversion funnel Entered 60 100.0% Got a message 57 95.0% "
        "Opened or clicked 20 33.3% Converted 24 40.0%"
    )


async def test_holdout_verdict_and_versions_are_shown(page_api: Api) -> None:
    page = (await page_api.admin_get("/journeys/cart")).text
    lift = section(page, "lift")
    # 40.0% against 6.7%, with 30 held out: enough to say so.
    assert "The journey lifts conversion by 33.3 points (95% CI 14.7 to" in lift
    assert "control (held out, sent nothing) 2 of 30 (6.7%)" in lift
    with page_api.db.session() as session:
        version = session.scalars(select(JourneyVersion.version)).one()
    assert f"{version} in force" in section(page, "versions")


async def test_events_an_entry_condition_failed_on_are_shown(page_api: Api) -> None:
    page = (await page_api.admin_get("/journeys/cart")).text
    assert 'id="entry-errors"' not in page  # none yet
    with page_api.db.session() as session:
        version = session.scalars(select(JourneyVersion.version)).one()
        session.add(
            EntryError(
                journey_id="cart",
                version=version,
                message_id="m-1",
                customer_id="c-7",
                error="event.properties.cart_id is not defined",
                at=T0,
            )
        )

    page = (await page_api.admin_get("/journeys/cart")).text

    errors = section(page, "entry-errors")
    assert "1 event would have entered this journey" in errors
    assert "c-7 event.properties.cart_id is not defined" in errors


async def test_expressions_that_failed_in_runs_are_shown_by_step(page_api: Api) -> None:
    page = (await page_api.admin_get("/journeys/cart")).text
    assert 'id="condition-errors"' not in page  # none yet
    with page_api.db.session() as session:
        version = session.scalars(select(JourneyVersion.version)).one()
        session.add(
            StepLog(
                run_id="r-err",
                seq=1,
                journey_id="cart",
                version=version,
                customer_id="c-8",
                step_id="nudge",
                action="error",
                detail={"text": "profile.tier == 'gold': profile.tier is not defined"},
                at=T0,
            )
        )

    page = (await page_api.admin_get("/journeys/cart")).text

    errors = section(page, "condition-errors")
    assert "never taken as false" in errors
    assert "nudge 1" in errors


async def test_temporal_ui_links_filter_on_the_journey(page_api: Api) -> None:
    page = (await page_api.admin_get("/journeys/cart")).text
    base = "http://temporal.test:8233/namespaces/default/workflows?query="
    assert f'id="temporal-runs" href="{base}JourneyId%3D%22cart%22"' in page
    assert (
        f'href="{base}JourneyId%3D%22cart%22%20AND%20JourneyStep%3D%22nudge%22'
        '%20AND%20ExecutionStatus%3D%22Running%22"'
    ) in page


async def test_the_temporal_ui_is_the_dev_servers_unless_the_app_says(api: Api) -> None:
    await api.start(CART_JOURNEY)
    page = (await api.admin_get("/journeys/cart")).text
    assert 'href="http://localhost:8233/namespaces/default/workflows?query=' in page
    # The time-skipping server has no visibility: the page says the counts are missing.
    assert "Temporal did not answer" in page
    assert "here now" not in chart(page)


LIVE_JOURNEY = """
id: {journey_id}
name: Live counts
entry: {{event: signed_up}}
steps:
  - id: welcome_wait
    wait_for: {{event: profile_completed, timeout: 7d}}
  - id: settle
    wait: 7d
  - id: done
    end: true
"""

# Another journey, entered by the same event, whose runs wait at a step of the same id:
# the page must not count them.
OTHER_JOURNEY = """
id: {journey_id}
name: Other
entry: {{event: signed_up}}
steps:
  - id: welcome_wait
    wait: 7d
"""


@pytest.mark.slow
async def test_the_counts_come_from_temporals_visibility(
    local_env: WorkflowEnvironment, db: Database, tmp_path: Path, task_queue: str
) -> None:
    """Six customers enter on the real dev server; two move on to `settle`, one run is
    terminated: the page shows 3 at `welcome_wait` and 2 at `settle`."""
    live = f"live_{uuid.uuid4().hex[:10]}"
    other = f"other_{uuid.uuid4().hex[:10]}"
    client = local_env.client
    async with Harness(local_env, db, tmp_path, task_queue) as harness:
        api = Api(harness)
        try:
            await api.start(
                LIVE_JOURNEY.format(journey_id=live), OTHER_JOURNEY.format(journey_id=other)
            )
            customers = [f"c{n}" for n in range(1, 7)]
            for customer in customers:
                harness.customer(customer)
                routed = await harness.event("signed_up", customer)
                assert sorted(routed.entered) == [f"{live}/{customer}", f"{other}/{customer}"]
            for customer in ("c1", "c2"):
                routed = await harness.event("profile_completed", customer)
                assert routed.delivered == [f"{live}/{customer}"]
            await client.get_workflow_handle(f"{live}/c6").terminate("test: not running")

            async def running(journey_id: str, step: str) -> int:
                query = (
                    f'JourneyId = "{journey_id}" AND JourneyStep = "{step}"'
                    ' AND ExecutionStatus = "Running"'
                )
                return (await client.count_workflows(query)).count

            seen: list[tuple[int, int, int]] = []

            async def visible() -> bool:
                seen.append(
                    (
                        await running(live, "welcome_wait"),
                        await running(live, "settle"),
                        await running(other, "welcome_wait"),
                    )
                )
                return seen[-1] == (3, 2, 6)

            await eventually(
                visible,
                what="3 runs at welcome_wait, 2 at settle, 6 of the other journey, in visibility",
                detail=lambda: f"last seen: {seen[-1]}",
            )

            page = (await api.admin_get(f"/journeys/{live}")).text
            view = (await api.admin_get(f"/v1/journeys/{live}")).json()
        finally:
            await api.close()

    assert view["stats"]["overall"]["now_at_step"] == {"welcome_wait": 3, "settle": 2, "done": 0}
    assert "Temporal did not answer" not in page
    source = chart(page)
    assert (
        'step_welcome_wait[/"welcome_wait<br/>wait_for profile_completed ≤1w<br/>▶ 3 here now"/]'
        in source
    )
    assert 'step_settle[/"settle<br/>wait 1w<br/>▶ 2 here now"/]' in source
    assert 'step_done(["done<br/>end"])' in source
    assert "class step_welcome_wait,step_settle busy" in source
    assert section(page, "steps") == (
        "Steps Step Here now Sent welcome_wait wait_for profile_completed ≤1w 3 runs here"
        " settle wait 1w 2 runs here done end 0 runs here"
    )


async def test_an_unknown_journey_gets_a_404_page(page_api: Api) -> None:
    response = await page_api.admin_get("/journeys/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "No journey <code>nope</code>" in response.text


async def test_the_index_links_each_journey_to_its_page(page_api: Api) -> None:
    assert (await get(page_api, "/journeys")).status_code == 401
    page = (await page_api.admin_get("/journeys")).text
    assert '<a href="/journeys/cart">Cart reminder</a>' in page


async def test_the_page_loads_nothing_from_elsewhere(page_api: Api) -> None:
    response = await page_api.admin_get("/journeys/cart")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self' 'nonce-" in policy
    assert not re.search(r'(src|href)="(https?:)?//(?!temporal\.test)', response.text)
    script = await get(page_api, "/static/mermaid.min.js")  # public, like any library
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert len(script.content) > 1_000_000


async def test_annotations_add_a_last_line_to_the_steps_they_name(page_api: Api) -> None:
    assert page_api.router is not None
    plan = page_api.router.catalog.compiled["cart"].plan
    plain, annotated = mermaid(plan), mermaid(plan, {"pause": "3 here"})
    assert mermaid(plan, {}) == plain
    assert annotated == plain.replace(
        'step_pause[/"pause<br/>wait 1h"/]', 'step_pause[/"pause<br/>wait 1h<br/>3 here"/]'
    )


# -- in a real browser ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.database_incidental
async def test_the_browser_draws_the_flow_with_its_counts(page_api: Api, tmp_path: Path) -> None:
    assert page_api.app is not None
    async with served(page_api.app) as base:
        url = base.replace("http://", f"http://admin:{ADMIN_TOKEN}@") + "/journeys/cart"
        dom = (await chromium(tmp_path, "--dump-dom", url)).decode()
        screenshot = tmp_path / "journey.png"
        await chromium(tmp_path, f"--screenshot={screenshot}", url)
    assert 'data-flow="drawn"' in dom, "Mermaid did not draw the flow"
    svg = re.search(r'<pre class="mermaid"[^>]*>\s*(<svg.*?</svg>)', dom, re.S)
    assert svg, "no SVG in the chart"
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", svg[1])).split())
    for label in ("pause", "remind", "wait_open", "nudge", "done", "entry: cart_abandoned"):
        assert label in text
    assert "▶ 4 here now" in text
    assert "▶ 7 here now" in text
    assert "✉ 45 sent" in text
    width, height, distinct_rows = png_summary(screenshot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    assert distinct_rows > HEIGHT // 4, "the screenshot is mostly blank"


async def chromium(profile: Path, *args: str) -> bytes:
    """Run headless Chromium once; its stdout. The event loop keeps serving meanwhile."""
    if not CHROMIUM.exists():
        pytest.skip(
            "Chromium is missing: `make test` installs it (scripts/ensure-chromium, as root), "
            "or run `apt-get install chromium`"
        )
    process = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--hide-scrollbars",
        f"--user-data-dir={profile / 'chromium'}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--virtual-time-budget=10000",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout


def png_summary(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct scanlines) of a PNG: its rows are compared still filtered,
    which is enough to tell a page from a blank one (a blank page's rows are all alike)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks: Mapping[bytes, list[bytes]] = {b"IHDR": [], b"IDAT": []}
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind in chunks:
            chunks[kind].append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    stride = 1 + width * channels * depth // 8
    pixels = zlib.decompress(b"".join(chunks[b"IDAT"]))
    assert len(pixels) == stride * height, "truncated PNG"
    rows = {pixels[i : i + stride] for i in range(0, len(pixels), stride)}
    return width, height, len(rows)


def test_png_summary_tells_a_blank_image_from_a_busy_one() -> None:
    def png(rows: list[bytes], width: int) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            crc = zlib.crc32(kind + body)
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

        header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
        raw = b"".join(b"\x00" + row for row in rows)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))

    blank = png([b"\xff" * 12] * 8, 4)
    busy = png([bytes([i] * 12) for i in range(8)], 4)
    assert png_summary(blank) == (4, 8, 1)
    assert png_summary(busy) == (4, 8, 8)
