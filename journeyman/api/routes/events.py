"""Event intake in the Segment HTTP Tracking API format.

Each request is validated whole, then stored in one transaction (journeyman/events/intake.py;
requests arriving together share one, each still all or nothing) and answered
`{"success": true}` once committed; journeys run later, from the dispatcher. A message
id already stored is acknowledged the same way and not applied again. An event that no
journey hears (`Catalog.hears`: no entry, goal window, or wait of any version) is
stored already handed over: the dispatcher never reads it.

The endpoints are declared as for FastAPI (which documents them), and each request is
handled by `deps.LeanSegmentRoute` without FastAPI's general machinery, with the same
answers and errors. They are coroutines: the one blocking step, the transaction, goes to
a thread with the other requests waiting at that moment (`accept_soon`: one trip for the
lot, journeyman/events/group_commit.py `LoopGroup`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from fastapi import APIRouter, Request
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from journeyman.api.auth import Sender, verify_user_hash
from journeyman.api.deps import IntakeSender, LeanSegmentRoute, get_services
from journeyman.api.errors import ApiError
from journeyman.api.schemas import (
    Ack,
    AliasMessage,
    AnyMessage,
    BatchRequest,
    GroupMessage,
    IdentifyMessage,
    PageMessage,
    ScreenMessage,
    TrackMessage,
)
from journeyman.customers import phones
from journeyman.customers.traits import TRAIT_CHANGED
from journeyman.events.dispatcher import Dispatcher
from journeyman.events.intake import Accepted, Incoming, Refused, accept_soon
from journeyman.platform import metrics
from journeyman.privacy import contacts
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import utcnow

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["events"], route_class=LeanSegmentRoute)

# The answer of every call (the route encodes it once: deps.ACK_BODY).
ACK = Ack()


@router.post("/track", response_model=Ack)
async def track(message: TrackMessage, sender: IntakeSender, request: Request) -> Ack:
    """The customer did something: journeys whose entry is this event start, and runs
    waiting for it hear it."""
    return await _take(request, [_incoming(message, sender.webhook_id)], sender)


@router.post("/identify", response_model=Ack)
async def identify(message: IdentifyMessage, sender: IntakeSender, request: Request) -> Ack:
    """Who the customer is: traits are upserted; with both ids, the anonymous visitor is
    merged into the known customer."""
    region = get_services(request).settings.phone_region
    return await _take(request, [_incoming(message, sender.webhook_id, region)], sender)


@router.post("/alias", response_model=Ack)
async def alias(message: AliasMessage, sender: IntakeSender, request: Request) -> Ack:
    """`previousId` is `userId`: the previous id's history joins the customer's."""
    return await _take(request, [_incoming(message, sender.webhook_id)], sender)


@router.post("/page", response_model=Ack)
async def page(message: PageMessage, sender: IntakeSender, request: Request) -> Ack:
    """The customer viewed a web page: stored as the event `page_viewed`, with the
    page's `name` and `category` in its properties."""
    return await _take(request, [_incoming(message, sender.webhook_id)], sender)


@router.post("/screen", response_model=Ack)
async def screen(message: ScreenMessage, sender: IntakeSender, request: Request) -> Ack:
    """The customer viewed an app screen: stored as the event `screen_viewed`."""
    return await _take(request, [_incoming(message, sender.webhook_id)], sender)


@router.post("/group", response_model=Ack)
async def group(message: GroupMessage, sender: IntakeSender, request: Request) -> Ack:
    """The customer belongs to a group (an account, a company): stored in the history."""
    return await _take(request, [_incoming(message, sender.webhook_id)], sender)


@router.post("/batch", response_model=Ack)
async def batch(body: BatchRequest, sender: IntakeSender, request: Request) -> Ack:
    """Several messages of any type, applied in order, all or nothing."""
    region = get_services(request).settings.phone_region
    messages = [
        _incoming(
            message,
            sender.webhook_id,
            region,
            index=index,
            shared_context=body.context,
            field=f"batch.{index}.",
            sent_at=body.sent_at,
        )
        for index, message in enumerate(body.batch)
    ]
    return await _take(request, messages, sender, batch=True)


async def _take(
    request: Request, messages: list[Incoming], sender: Sender, batch: bool = False
) -> Ack:
    services = get_services(request)
    # An event no journey hears is stored handed over (journeyman/events/catalog.py):
    # the catalog the dispatcher would route it with.
    catalog = services.router.catalog
    for index, message in enumerate(messages):
        message.source = sender.source
        message.heard = catalog.hears(message.name)
        if sender.kind == "client":
            field = f"batch.{index}." if batch else ""
            _verify_identity(services.settings.identity_secret, message, field)
    try:
        accepted = await accept_soon(services.db, messages)
    except Refused as exc:
        raise _refused(exc.code, exc.reason, "body") from None
    _accepted(services.dispatcher, accepted)
    if services.settings.client_contacts == "confirm" and _sets_contacts(messages):
        await run_in_threadpool(_confirmations, services.settings, services.db)
    return ACK


def _sets_contacts(messages: list[Incoming]) -> bool:
    return any(
        m.source == "client"
        and m.type == "identify"
        and (m.traits.get("email") or m.traits.get("phone"))
        for m in messages
    )


_PROVIDERS: dict[int, tuple[Settings, dict[str, Any], Any]] = {}


def _confirmations(settings: Settings, db: Database) -> None:
    """Double opt-in: the confirmation messages of contact points a client key just set
    (journeyman/privacy/contacts.py), through the channel's provider, else the outbox."""
    from activities.provider_config import build_providers
    from journeyman.messaging.providers import OutboxProvider

    cached = _PROVIDERS.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = _PROVIDERS[id(settings)] = (settings, build_providers(settings), OutboxProvider())
    _settings, providers, outbox = cached
    sender = parseaddr(settings.email_from)[0] or settings.public_base_url
    try:
        contacts.send_confirmations(
            db, providers, outbox, settings.public_base_url, settings.signing_key(), sender
        )
    except Exception:  # the events are stored: the messages go after a later call
        log.exception("sending confirmation messages failed")


def _verify_identity(secret: SecretStr | None, message: Incoming, field: str) -> None:
    """Identity verification (JOURNEYMAN_IDENTITY_SECRET): a client key's message that
    names a userId proves it with `context.userHash`, the HMAC the operator's server
    gave the app for that user."""
    if secret is None or not message.user_id:
        return
    if verify_user_hash(
        secret.get_secret_value(), message.user_id, message.context.get("userHash")
    ):
        return
    raise _refused(
        "identity_unverified",
        "identity verification is on: context.userHash must be the hex HMAC-SHA256 of the "
        "userId with JOURNEYMAN_IDENTITY_SECRET",
        f"{field}context.userHash",
    )


def _refused(code: str, reason: str, field: str) -> ApiError:
    metrics.intake_refused.labels(reason=code).inc()
    return ApiError(403, reason, [{"field": field, "message": reason, "type": code}])


def _accepted(dispatcher: Dispatcher, accepted: Accepted) -> None:
    """Count what was stored and wake the dispatcher: its wake-up is queued on the event
    loop before the answer goes, so it is busy (not idle) by the time the caller hears
    back."""
    for message_type, count in accepted.types.items():
        metrics.events_accepted.labels(type=message_type).inc(count)
    if accepted.to_dispatch:
        dispatcher.wake()


def _default_id(webhook_id: str | None, index: int | None = None) -> str:
    """For a message sent without `messageId`: a signed webhook's id makes its retries
    harmless too; otherwise a fresh id (SDKs always send one)."""
    if webhook_id is not None:
        return webhook_id if index is None else f"{webhook_id}/{index}"
    return str(uuid.uuid4())


def _incoming(
    message: AnyMessage,
    webhook_id: str | None,
    phone_region: str | None = None,
    shared_context: dict[str, Any] | None = None,
    field: str = "",
    sent_at: datetime | None = None,
    index: int | None = None,
) -> Incoming:
    incoming = Incoming(
        type=message.type,
        # A fresh id only when there is none: uuid4 reads the system's random source.
        message_id=message.message_id or _default_id(webhook_id, index),
        timestamp=event_time(message, sent_at, utcnow()),
        user_id=message.user_id,
        anonymous_id=message.anonymous_id,
        context={**(shared_context or {}), **message.context},
    )
    match message:
        case TrackMessage():
            if message.event == TRAIT_CHANGED:
                _refuse_built_in(f"{field}event")
            incoming.name = message.event
            incoming.properties = message.properties
        case IdentifyMessage():
            incoming.traits = message.traits.given()
            if incoming.traits.get("phone") is not None:
                incoming.traits["phone"] = _phone(
                    incoming.traits["phone"], phone_region, f"{field}traits.phone"
                )
        case AliasMessage():
            incoming.previous_id = message.previous_id
        case PageMessage():
            incoming.name = VIEWED[message.type]
            named = {"name": message.name, "category": message.category}
            incoming.properties = {
                **message.properties,
                **{k: v for k, v in named.items() if v is not None},
            }
        case GroupMessage():
            incoming.group_id = message.group_id
            incoming.traits = message.traits
    return incoming


def _refuse_built_in(field: str) -> None:
    """`trait_changed` comes only from real trait changes: a track of that name could
    enter journeys (a tier reward) for a change that never happened."""
    message = (
        f"{TRAIT_CHANGED} is a built-in event, sent when an identify changes a trait: "
        "send an identify with the new trait value instead"
    )
    problem = {"field": field, "message": message, "type": "built_in_event"}
    raise ApiError(422, f"invalid field {field}: {message}", [problem])


# The event a page or screen call is stored as.
VIEWED = {"page": "page_viewed", "screen": "screen_viewed"}


def event_time(
    message: AnyMessage, batch_sent_at: datetime | None, received_at: datetime
) -> datetime:
    """When the event happened, on our clock. As Segment does: the client's time
    (`timestamp`, else `originalTimestamp`) is moved by how far the client's clock is
    off, measured by when it says it sent the request (`sentAt`, of the message or of
    its batch) against when we received it: `receivedAt - (sentAt - timestamp)`. Never
    later than `received_at`. Without `sentAt` the client's time is taken as it is."""
    client_time = message.timestamp or message.original_timestamp
    if client_time is None:
        return received_at
    sent_at = message.sent_at or batch_sent_at
    if sent_at is None:
        return client_time
    try:
        corrected = received_at - (sent_at - client_time)
    except OverflowError:  # a clock off by millennia says nothing we can use
        return received_at
    return min(corrected, received_at)


def _phone(raw: str, region: str | None, field: str) -> str | None:
    """The number in E.164 (journeyman/customers/phones.py); an empty one clears the trait."""
    if not raw.strip():
        return None
    try:
        return phones.to_e164(raw, region)
    except ValueError as exc:
        problem = {"field": field, "message": str(exc), "type": "phone_invalid"}
        raise ApiError(422, f"invalid field {field}: {exc}", [problem]) from None
