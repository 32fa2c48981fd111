"""Liveness and readiness, public by design (load balancers and orchestrators)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from journeyman.api.deps import ServicesDep
from journeyman.api.errors import ApiError
from journeyman.api.schemas import Health
from journeyman.storage.db import Database

CHECK_TIMEOUT = timedelta(seconds=3)
log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {}})
async def readyz(services: ServicesDep) -> Health:
    """The database and Temporal answer: the API can accept and hand off events."""
    problems = []
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping, services.db), CHECK_TIMEOUT.total_seconds())
    except Exception as exc:
        problems.append(
            {"field": "database", "message": _describe("database", exc), "type": "unavailable"}
        )
    try:
        await services.router.client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=CHECK_TIMEOUT
        )
    except Exception as exc:
        problems.append(
            {"field": "temporal", "message": _describe("temporal", exc), "type": "unavailable"}
        )
    if problems:
        raise ApiError(503, "not ready", problems)
    return Health(status="ready", checks={"database": "ok", "temporal": "ok"})


def _ping(db: Database) -> None:
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _describe(what: str, exc: Exception) -> str:
    """What the public answer says: no exception text (it can hold hosts, user names,
    SQL); the log of the API has the whole exception."""
    log.warning("readiness check of %s failed: %s: %s", what, type(exc).__name__, exc)
    return "timed out" if isinstance(exc, TimeoutError) else "not reachable"
