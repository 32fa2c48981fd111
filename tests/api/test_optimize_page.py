"""The journey page and API say which hour best-hour sends chose and why, and how an
optimized split's cases do (rate, interval, share now, probability of being best)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

from journeyman.storage.models import Event, StepLog
from tests.api.support import Api

OFFERS = """
id: offers
name: Offers
entry:
  event: lapsed
goal:
  event: order_placed
steps:
  - id: choose
    split:
      - {weight: 50, goto: offer_a}
      - {weight: 50, goto: offer_b}
    optimize: {event: order_placed, within: 7d}
  - id: offer_a
    send: {template: offer_a, channels: [email], timing: best}
    goto: done
  - id: offer_b
    send: {template: offer_b, channels: [email], timing: best, within: 12h}
  - id: done
    end: true
"""

T0 = datetime.now(UTC) - timedelta(days=30)


def _log(api: Api, n: int, step: str, action: str, detail: str, customer: str) -> None:
    with api.db.session() as session:
        session.add(
            StepLog(
                run_id=f"run-{n}",
                seq=n,
                journey_id="offers",
                version="v1",
                customer_id=customer,
                step_id=step,
                action=action,
                detail={"detail": detail, "channel": None, "template": None},
                at=T0,
            )
        )


def _text(page: str, section_id: str) -> str:
    found = re.search(rf'<section[^>]*id="{section_id}".*?</section>', page, re.S)
    assert found, f"no section {section_id}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found[0])).split())


async def test_page_and_api_show_best_hours_and_the_learning_split(api: Api) -> None:
    await api.start(OFFERS)
    reasons = [
        "best hour 19:00 America/New_York from 5 opens and clicks; send at 2036-06-10T23:00Z",
        "best hour 19:00 Europe/Paris from 4 opens and clicks; send at 2036-06-10T17:00:00+00:00",
        "audience's best hour 12:00 UTC (no opens or clicks of the customer, 40 of the "
        "journey's audience); send at 2036-06-10T12:00:00+00:00",
    ]
    for n, reason in enumerate(reasons):
        _log(api, n, "offer_a", "timing", reason, f"c{n}")
    for n in range(20):
        case = "offer_a" if n < 10 else "offer_b"
        _log(api, 100 + n, "choose", "split", f"-> {case}", f"s{n}")
        if n in (0, 10, 11, 12, 13):
            with api.db.session() as session:
                session.add(
                    Event(
                        message_id=f"order-{n}",
                        type="track",
                        customer_id=f"s{n}",
                        name="order_placed",
                        properties={},
                        timestamp=T0 + timedelta(days=1),
                    )
                )
    page = (await api.admin_get("/journeys/offers")).text
    steps = _text(page, "steps")
    assert (
        "latest 3 sends: 2 by their own opens, 1 by the audience's hour; hours 19:00 (2), "
        "12:00 (1); last: audience's best hour 12:00 UTC" in steps
    )
    assert "send offer_a via email at the best hour" in steps
    assert "split, learning from order_placed ≤1w" in steps
    assert "Split choose , learning" in steps
    assert "offer_a 10 1 of 10 10.0% (1.8% to 40.4%) 50.0%" in steps
    assert "offer_b 10 4 of 10 40.0% (16.8% to 68.7%) 50.0%" in steps
    body = (await api.admin_get("/v1/journeys/offers")).json()
    (split,) = body["stats"]["splits"]
    assert [c["conversions"] for c in split["cases"]] == [1, 4]
    a, b = (c["probability_best"] for c in split["cases"])
    assert b > 0.9 and abs(a + b - 1) < 1e-9
