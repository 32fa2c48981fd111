"""Prometheus metrics of this API process (journeyman/platform/metrics.py).

Public, as the contract says, because scrapers carry no token: it is meant for the
operator's network and must not be exposed to the internet (docs/deploy.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from journeyman.api.deps import SessionDep
from journeyman.events import parked
from journeyman.platform import metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def prometheus_metrics(session: SessionDep) -> Response:
    """The process's metrics in Prometheus' text exposition format."""
    metrics.events_parked.set(parked.count(session))
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
