"""Prometheus metrics: counters move where things happen, and `/metrics` serves them.

prometheus_client's default registry is global to the process and other tests move
the same counters, so every assertion compares before and after.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from journeyman.messaging.providers import OutgoingMessage, TransientFailure
from journeyman.platform import metrics
from tests.api.support import CART_JOURNEY, Api
from tests.harness import Harness, actions

NEWS = """
id: news
name: News
entry: {event: go_news}
steps:
  - id: hello
    send: {template: hello, channels: [email]}
"""


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def delta(name: str, **labels: str) -> Callable[[], float]:
    """How much the sample moved since this call."""
    before = sample(name, **labels)
    return lambda: sample(name, **labels) - before


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[Api]:
    test_api = Api(harness)
    try:
        yield test_api
    finally:
        await test_api.close()


def track(message_id: str) -> dict[str, Any]:
    return {
        "userId": "u1",
        "event": "cart_abandoned",
        "properties": {"cart_id": "cart_9"},
        "messageId": message_id,
    }


async def test_an_accepted_event_is_counted_once_by_type(api: Api) -> None:
    await api.start(CART_JOURNEY)
    accepted = delta("journeyman_events_accepted_total", type="track")
    await api.post("/v1/track", track("m1"))
    await api.post("/v1/track", track("m1"))  # a retry: a duplicate, not counted
    assert accepted() == 1


async def test_a_dispatched_event_counts_the_hand_off_and_the_run(api: Api) -> None:
    await api.start(CART_JOURNEY)
    dispatched = delta("journeyman_events_dispatched_total")
    started = delta("journeyman_runs_started_total", journey="cart")
    await api.post("/v1/track", track("m1"))
    await api.dispatch()
    assert (dispatched(), started()) == (1, 1)


async def test_a_send_counts_the_message_by_channel_and_status(harness: Harness) -> None:
    await harness.journey(NEWS)
    harness.customer("c1", email="ana@example.com")
    sent = delta("journeyman_messages_total", journey="news", channel="email", status="sent")
    await harness.event("go_news")
    result = await harness.result("news/c1")
    assert ("hello", "sent") in actions(result)
    assert sent() == 1


class Flaky:
    """Fails once with a 503, then accepts."""

    name = "flaky"
    transactional = False

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def send(self, message: OutgoingMessage, session: Any) -> str:
        with self.lock:
            self.calls += 1
            if self.calls == 1:
                raise TransientFailure("503")
            return "flaky-1"


async def test_provider_calls_are_timed_by_outcome(harness: Harness) -> None:
    harness.providers["email"] = Flaky()
    await harness.journey(NEWS)
    harness.customer("c1", email="ana@example.com")
    name = "journeyman_provider_latency_seconds_count"
    ok = delta(name, provider="flaky", outcome="ok")
    unavailable = delta(name, provider="flaky", outcome="unavailable")
    await harness.event("go_news")
    await harness.result("news/c1")
    assert (ok(), unavailable()) == (1, 1)


def test_webhook_event_names_outside_the_provider_list_count_as_other() -> None:
    other = delta("journeyman_webhook_events_total", provider="sendgrid", event="other")
    opened = delta("journeyman_webhook_events_total", provider="sendgrid", event="open")
    metrics.webhook_event("sendgrid", "open")
    metrics.webhook_event("sendgrid", "made-up")
    metrics.webhook_event("sendgrid", None)
    assert (opened(), other()) == (1, 2)


async def test_metrics_endpoint_serves_the_text_exposition_format(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await api.post("/v1/track", track("m1"))
    assert api.client is not None
    response = await api.client.get("/metrics")  # no token: for the operator's network
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"journeyman_events_accepted", "journeyman_messages"} <= families


def test_the_worker_serves_its_metrics_on_its_port() -> None:
    port = unused_port()
    server = metrics.serve_worker_metrics(port, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "# TYPE journeyman_messages_total counter" in text


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
