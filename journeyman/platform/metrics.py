"""Prometheus metrics of the API and the worker, in prometheus_client's default registry.

Contract:
- The metrics are defined here, once per process, and incremented where things happen:
  intake (`events_accepted`), the dispatcher (`events_dispatched`, `dispatch_failures`),
  the router (`runs_started`), the send activity (`messages`, `provider_latency`) and
  the provider webhooks (`webhook_events`).
- Labels carry ids and names only: journey ids, channels, statuses, provider and event
  names. Never customer ids (unbounded) nor any personal data.
- The API serves the registry at `GET /metrics`; the worker on
  JOURNEYMAN_WORKER_METRICS_PORT (`serve_worker_metrics`). Temporal's own SDK metrics
  come from the SDK's Runtime on JOURNEYMAN_TEMPORAL_METRICS_PORT (journeyman/platform/temporal.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

MESSAGE_STATUSES = ("sent", "skipped", "failed", "deferred", "unknown")

events_accepted = Counter(
    "journeyman_events_accepted",
    "Customer events stored by intake (duplicates not counted), by message type.",
    ["type"],
)
events_dispatched = Counter(
    "journeyman_events_dispatched",
    "Stored events handed to Temporal by the dispatcher.",
)
dispatch_failures = Counter(
    "journeyman_dispatch_failures",
    "Hand-offs to Temporal that failed and will be tried again.",
)
events_parked = Gauge(
    "journeyman_events_parked",
    "Events parked after too many failed hand-offs to Temporal, waiting for "
    "`journeyman events retry` (read from the database when the API is scraped).",
)
intake_refused = Counter(
    "journeyman_intake_refused",
    "Intake calls refused with a 403 because a client key may not do what they ask, by "
    "reason (contact_change, identified_merge, identity_unverified).",
    ["reason"],
)
runs_started = Counter(
    "journeyman_runs_started",
    "Journey runs started (or joined, when one with the same id already runs), by journey.",
    ["journey"],
)
entry_errors = Counter(
    "journeyman_entry_errors",
    "Events not entered because the journey's entry condition or key failed to evaluate.",
    ["journey"],
)
messages = Counter(
    "journeyman_messages",
    "Outcomes of send steps, by journey, channel and status.",
    ["journey", "channel", "status"],
)
provider_latency = Histogram(
    "journeyman_provider_latency_seconds",
    "Time of one call to an external message provider, by provider and outcome.",
    ["provider", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
webhook_events = Counter(
    "journeyman_webhook_events",
    "Events received on the provider webhooks, by provider and event.",
    ["provider", "event"],
)

# Event names each provider documents; anything else is counted as `other`.
WEBHOOK_EVENTS = {
    "sendgrid": frozenset(
        [
            "processed",
            "dropped",
            "delivered",
            "deferred",
            "bounce",
            "open",
            "click",
            "spamreport",
            "unsubscribe",
            "group_unsubscribe",
            "group_resubscribe",
        ]
    ),
    "twilio": frozenset(
        [
            "accepted",
            "scheduled",
            "canceled",
            "queued",
            "sending",
            "sent",
            "failed",
            "delivered",
            "undelivered",
            "receiving",
            "received",
            "read",
        ]
    ),
    "twilio-inbound": frozenset({"stop", "start", "help", "message"}),
}

# Provider exceptions (journeyman/messaging/providers.py) -> the latency outcome label. By name,
# so that this module imports nothing of the activities.
_PROVIDER_OUTCOMES = {
    "PermanentFailure": "rejected",
    "TransientFailure": "unavailable",
    "UncertainDelivery": "uncertain",
}


def message(journey: str, channel: str | None, status: str) -> None:
    """Count one send step's outcome; a status outside MESSAGE_STATUSES counts as
    `unknown` so that the label stays bounded."""
    label = status if status in MESSAGE_STATUSES else "unknown"
    messages.labels(journey=journey, channel=channel or "none", status=label).inc()


def webhook_event(provider: str, event: object) -> None:
    """Count one event received on a provider webhook."""
    name = event if isinstance(event, str) and event in WEBHOOK_EVENTS[provider] else "other"
    webhook_events.labels(provider=provider, event=name).inc()


@contextlib.contextmanager
def provider_call(provider: str) -> Iterator[None]:
    """Time the block as one provider call; its outcome is `ok` or named by the
    provider exception that left it."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except Exception as exc:
        outcome = _PROVIDER_OUTCOMES.get(type(exc).__name__, "error")
        raise
    finally:
        provider_latency.labels(provider=provider, outcome=outcome).observe(
            time.perf_counter() - started
        )


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, with its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> WSGIServer:
    """Serve the registry on `host:port` from a daemon thread, for a worker with no HTTP
    API; the server is returned for callers that stop it (`shutdown`, `server_close`)."""
    server, _thread = start_http_server(port, addr=host)
    return server
