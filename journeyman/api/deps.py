"""What route functions receive: the app's services, a session, the caller.

The services live on `app.state.services`, built by `create_app` from what the caller
passes in: nothing here reads the environment.
"""

from __future__ import annotations

import inspect
import json
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from journeyman.api import limits
from journeyman.api.auth import (
    Sender,
    WebhookHeaders,
    basic_credentials,
    check_admin,
    matches_any,
    unauthorized,
    verify_webhook,
    webhook_keys,
)
from journeyman.api.bodylimit import too_large
from journeyman.api.errors import ApiError, body_error
from journeyman.api.schemas import Ack
from journeyman.events.dispatcher import Dispatcher
from journeyman.events.routing import Router
from journeyman.settings import Settings
from journeyman.storage.db import Database

WIRE_BODY = "journeyman.wire_body"
GZIP_ENCODINGS = ("gzip", "x-gzip")


@dataclass
class Services:
    settings: Settings
    db: Database
    router: Router
    dispatcher: Dispatcher


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_database(services: ServicesDep) -> Database:
    return services.db


def get_router(services: ServicesDep) -> Router:
    return services.router


def get_dispatcher(services: ServicesDep) -> Dispatcher:
    return services.dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
RouterDep = Annotated[Router, Depends(get_router)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def get_session(db: DatabaseDep) -> Iterator[Session]:
    with db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def require_admin(request: Request, settings: SettingsDep) -> None:
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    check_admin(request.headers.get("authorization"), token)


# -- event intake ---------------------------------------------------------------------


class IntakeRequest(Request):
    """A request whose body is size-limited and un-gzipped before anything parses it.

    The limit (JOURNEYMAN_MAX_BODY_BYTES) applies to the body both as sent and as
    decoded, so a small gzip bomb gets the same 413 as a large body.
    """

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            wire, self._body = await read_body(self, get_services(self).settings.max_body_bytes)
            self.scope[WIRE_BODY] = wire
        return self._body

    async def json(self) -> Any:
        """The body as JSON, refused (journeyman/api/limits.py) when it is nested too
        deep, or has too many keys or too long strings, before anything else reads it."""
        if not hasattr(self, "_json"):
            payload = limits.loads(await self.body())
            limits.check_shape(payload)
            self._json = payload
        return self._json


class SegmentRequest(IntakeRequest):
    """An intake request in the Segment format: Segment's per-message and per-batch
    limits too."""

    async def json(self) -> Any:
        payload = await super().json()
        if not getattr(self, "_segment_checked", False):
            limits.check_segment(payload)
            self._segment_checked = True
        return payload


class IntakeRoute(APIRoute):
    """Route class of the intake endpoints: bodies are JSON whatever the Content-Type
    says (browsers' sendBeacon sends text/plain), limited and un-gzipped."""

    request_class: type[IntakeRequest] = IntakeRequest

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        request_class = self.request_class

        async def intake_handler(request: Request) -> Response:
            _assume_json(request.scope)
            return await handler(request_class(request.scope, request.receive))

        return intake_handler


class SegmentRoute(IntakeRoute):
    """The Segment endpoints (/v1/track ...), through FastAPI's request handling."""

    request_class = SegmentRequest


# What every Segment endpoint answers, as FastAPI encodes its `Ack` response model.
ACK_BODY = b'{"success":true}'


class LeanSegmentRoute(SegmentRoute):
    """The Segment endpoints, each request handled by hand: what FastAPI's handler does
    for them (read the body, parse it, solve the one dependency, validate the body,
    call the endpoint, encode its `Ack`) in that order and with the same errors, without
    its general machinery (dependency resolution, per-request introspection, response
    model serialisation), which cost more than the endpoint itself.

    The endpoint is declared as for FastAPI (`message: TrackMessage, sender:
    IntakeSender, request: Request`, response model `Ack`), so the OpenAPI document is
    what FastAPI makes of it; this class checks that shape once, when the route is
    built. Errors are raised as FastAPI raises them (ApiError, RequestValidationError,
    HTTPException), for the app's handlers (journeyman/api/errors.py) to answer.
    `SegmentRoute` runs the same endpoints through FastAPI (tests compare the two)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = _segment_endpoint(self)
        body_field = self.body_field
        assert body_field is not None

        async def lean_handler(request: Request) -> Response:
            request = SegmentRequest(request.scope, request.receive)
            payload = await _segment_payload(request)
            sender = await segment_sender(request)
            if payload is _NO_BODY:
                raise RequestValidationError([_MISSING_BODY], body=None)
            message, errors = body_field.validate(payload, {}, loc=("body",))
            if errors:
                raise RequestValidationError(errors, body=payload)
            answer = await endpoint(message, sender, request)
            assert isinstance(answer, Ack) and answer.success, "Segment endpoints answer Ack()"
            return Response(ACK_BODY, media_type="application/json")

        return lean_handler


_NO_BODY = object()
# FastAPI's error for a required body that was not sent.
_MISSING_BODY = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}


async def _segment_payload(request: SegmentRequest) -> Any:
    """The body parsed as FastAPI parses a JSON body: nothing when empty; a JSON syntax
    error is its `json_invalid` validation error, anything else unreadable its 400."""
    try:
        body = await request.body()
        if not body:
            return _NO_BODY
        return await request.json()
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error], body=exc.doc) from exc
    except HTTPException:
        raise
    except Exception as exc:
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


SegmentEndpoint = Callable[[Any, Sender, Request], Awaitable[Any]]


def _segment_endpoint(route: APIRoute) -> SegmentEndpoint:
    """The route's endpoint, checked to be a coroutine taking (body, sender, request)
    with `segment_sender` as its one dependency and `Ack`-shaped answers."""
    endpoint = route.endpoint
    dependant = route.dependant
    shape = (
        inspect.iscoroutinefunction(endpoint)
        and len(inspect.signature(endpoint).parameters) == 3
        and [p.name for p in dependant.body_params] == [_param(endpoint, 0)]
        and [d.call for d in dependant.dependencies] == [segment_sender]
        and [d.name for d in dependant.dependencies] == [_param(endpoint, 1)]
        and dependant.request_param_name == _param(endpoint, 2)
        and not (dependant.query_params or dependant.header_params or dependant.path_params)
    )
    if not shape:
        raise TypeError(
            f"{route.path}: a LeanSegmentRoute endpoint is `async def (message: <model>, "
            "sender: IntakeSender, request: Request)`"
        )
    return endpoint  # type: ignore[no-any-return]


def _param(endpoint: Callable[..., Any], index: int) -> str:
    return list(inspect.signature(endpoint).parameters)[index]


async def read_body(request: Request, limit: int) -> tuple[bytes, bytes]:
    """The body as sent and as decoded (gzip), each at most `limit` bytes, else 413."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    wire = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in GZIP_ENCODINGS:
        return wire, _gunzip(wire, limit)
    if encoding not in ("identity", ""):
        raise ApiError(
            415,
            f"unsupported Content-Encoding {encoding!r}: send gzip or nothing",
            [{"field": "Content-Encoding", "message": "unsupported", "type": "header"}],
        )
    return wire, wire


def _assume_json(scope: MutableMapping[str, Any]) -> None:
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    scope["headers"] = [*headers, (b"content-type", b"application/json")]


def _gunzip(data: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise body_error(400, "the body is not valid gzip", str(exc), "gzip_invalid") from None
    if len(body) > limit:
        raise _too_large(limit)
    if not decompressor.eof:
        raise body_error(
            400, "the gzip body is truncated", "unexpected end of gzip data", "gzip_invalid"
        )
    return body


def _too_large(limit: int) -> ApiError:
    return ApiError(413, *too_large(limit))


async def intake_sender(request: Request, settings: SettingsDep) -> Sender:
    """A signed webhook, or a write key (HTTP Basic user name, or `writeKey` in the body)."""
    found = WebhookHeaders.find(request.headers)
    if isinstance(found, str):
        raise unauthorized(f"missing {found} header", scheme="Webhook")
    if found is not None:
        if settings.webhook_secret is None:
            raise unauthorized("signed webhooks are not configured (JOURNEYMAN_WEBHOOK_SECRET)")
        body = await request.body()
        verify_signed(settings, found, request.scope.get(WIRE_BODY, body), body)
        return Sender("webhook", webhook_id=found.id)
    authorization = request.headers.get("authorization")
    credentials = basic_credentials(authorization)
    if credentials is not None:
        return _keyed(credentials[0], settings)
    if authorization:
        raise unauthorized("send the write key as the HTTP Basic user name")
    write_key = await _body_write_key(request)
    if write_key is not None:
        return _keyed(write_key, settings)
    raise unauthorized("write key required: HTTP Basic with the write key as user name")


def verify_signed(settings: Settings, found: WebhookHeaders, wire: bytes, body: bytes) -> None:
    """The Standard Webhooks signature checked over the body as sent (`wire`), or as
    decoded from gzip; the caller has checked that a webhook secret is configured."""
    assert settings.webhook_secret is not None
    verify_webhook(
        webhook_keys(settings.webhook_secret.get_secret_value()),
        found,
        [wire] if wire == body else [wire, body],
        tolerance=settings.webhook_tolerance_seconds,
    )


def _keyed(key: str, settings: Settings) -> Sender:
    """A server key (secret) or a client key (public); both lists are always compared
    in full, in constant time."""
    server = matches_any(key, settings.server_key_list)
    client = matches_any(key, settings.write_key_list)
    if server:
        return Sender("server")
    if client:
        return Sender("client")
    raise unauthorized("unknown write key")


async def _body_write_key(request: Request) -> str | None:
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    key = payload.get("writeKey") if isinstance(payload, dict) else None
    return key if isinstance(key, str) and key else None


SenderDep = Annotated[Sender, Depends(intake_sender)]


async def segment_sender(request: Request) -> Sender:
    """`intake_sender` with the app's settings, for the Segment endpoints: a coroutine
    with no dependency of its own (FastAPI runs a plain function in its thread pool)."""
    return await intake_sender(request, get_services(request).settings)


IntakeSender = Annotated[Sender, Depends(segment_sender)]
