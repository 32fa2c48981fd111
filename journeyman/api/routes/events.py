"""Event intake in the Segment HTTP Tracking API format.

Each request is validated whole, then stored in one transaction (journeyman/intake.py)
and answered `{"success": true}`; journeys run later, from the dispatcher. A message
id already stored is acknowledged the same way and not applied again.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from journeyman import metrics
from journeyman.api.deps import DatabaseDep, DispatcherDep, IntakeRoute, SenderDep
from journeyman.api.schemas import (
    Ack,
    AliasMessage,
    AnyMessage,
    BatchRequest,
    GroupMessage,
    IdentifyMessage,
    PageMessage,
    TrackMessage,
)
from journeyman.dispatcher import Dispatcher
from journeyman.intake import Incoming, accept
from journeyman.storage.db import Database
from journeyman.storage.models import utcnow

router = APIRouter(prefix="/v1", tags=["events"], route_class=IntakeRoute)


@router.post("/track", response_model=Ack)
def track(
    message: TrackMessage, sender: SenderDep, db: DatabaseDep, dispatcher: DispatcherDep
) -> Ack:
    """The customer did something: journeys whose entry is this event start, and runs
    waiting for it hear it."""
    return _take(db, dispatcher, [_incoming(message, _default_id(sender.webhook_id))])


@router.post("/identify", response_model=Ack)
def identify(
    message: IdentifyMessage, sender: SenderDep, db: DatabaseDep, dispatcher: DispatcherDep
) -> Ack:
    """Who the customer is: traits are upserted; with both ids, the anonymous visitor is
    merged into the known customer."""
    return _take(db, dispatcher, [_incoming(message, _default_id(sender.webhook_id))])


@router.post("/alias", response_model=Ack)
def alias(
    message: AliasMessage, sender: SenderDep, db: DatabaseDep, dispatcher: DispatcherDep
) -> Ack:
    """`previousId` is `userId`: the previous id's history joins the customer's."""
    return _take(db, dispatcher, [_incoming(message, _default_id(sender.webhook_id))])


@router.post("/batch", response_model=Ack)
def batch(
    request: BatchRequest, sender: SenderDep, db: DatabaseDep, dispatcher: DispatcherDep
) -> Ack:
    """Several messages of any type, applied in order, all or nothing."""
    messages = [
        _incoming(
            message,
            _default_id(sender.webhook_id, index),
            shared_context=request.context,
        )
        for index, message in enumerate(request.batch)
    ]
    return _take(db, dispatcher, messages)


def _take(db: Database, dispatcher: Dispatcher, messages: list[Incoming]) -> Ack:
    accepted = accept(db, messages)
    for message_type, count in accepted.types.items():
        metrics.events_accepted.labels(type=message_type).inc(count)
    if accepted.to_dispatch:
        dispatcher.wake()
    return Ack()


def _default_id(webhook_id: str | None, index: int | None = None) -> str:
    """For a message sent without `messageId`: a signed webhook's id makes its retries
    harmless too; otherwise a fresh id (SDKs always send one)."""
    if webhook_id is not None:
        return webhook_id if index is None else f"{webhook_id}/{index}"
    return str(uuid.uuid4())


def _incoming(
    message: AnyMessage, default_id: str, shared_context: dict[str, Any] | None = None
) -> Incoming:
    incoming = Incoming(
        type=message.type,
        message_id=message.message_id or default_id,
        timestamp=message.timestamp or message.original_timestamp or utcnow(),
        user_id=message.user_id,
        anonymous_id=message.anonymous_id,
        context={**(shared_context or {}), **message.context},
    )
    match message:
        case TrackMessage():
            incoming.name = message.event
            incoming.properties = message.properties
        case IdentifyMessage():
            incoming.traits = message.traits.given()
        case AliasMessage():
            incoming.previous_id = message.previous_id
        case PageMessage():
            incoming.name = message.name
            incoming.properties = message.properties
        case GroupMessage():
            incoming.group_id = message.group_id
            incoming.traits = message.traits
    return incoming
