"""Catalogs: `PUT`/`POST /v1/catalogs/{catalog}/items` upsert a batch of items (at most
10,000, one transaction, all or nothing), `GET` and `DELETE
/v1/catalogs/{catalog}/items/{id}` read and remove one.

Who may write: the admin token, or a Standard Webhooks signed request with the intake's
secret (JOURNEYMAN_WEBHOOK_SECRET), so an inventory or order system keeps a catalog
current without a shell (`catalog_writer`; one dependency, so other kinds of keys are
added in one place). Reads and deletes take the admin token.

A body is a JSON list of items (objects with an `id`), an object `{"items": [...]}`, or
one item; gzip is accepted. Limits: JOURNEYMAN_MAX_CATALOG_BODY_BYTES (as sent and as
decoded), 10,000 items, 64 KiB an item.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from journeyman.api.auth import (
    WebhookHeaders,
    basic_credentials,
    matches_any,
    unauthorized,
)
from journeyman.api.deps import get_services, read_body, require_admin, verify_signed
from journeyman.api.errors import ApiError, body_error
from journeyman.messaging import catalogs

router = APIRouter(prefix="/v1/catalogs", tags=["catalogs"])

CatalogName = Annotated[str, Path(min_length=1, max_length=100)]
ItemId = Annotated[str, Path(min_length=1, max_length=catalogs.MAX_ID_LENGTH)]


async def catalog_writer(request: Request) -> tuple[str, bytes]:
    """Who writes, and the body they sent (read here: a signature covers it).

    A request with `webhook-*` headers must carry a valid Standard Webhooks signature;
    any other needs a server key (HTTP Basic, the key as user name: the order and
    inventory systems' own servers) or the admin token, checked before the body is read.
    Client (write) keys ship in apps: they never write a catalog."""
    settings = get_services(request).settings
    found = WebhookHeaders.find(request.headers)
    if isinstance(found, str):
        raise unauthorized(f"missing {found} header", scheme="Webhook")
    if found is None:
        if _server_key(request):
            _, body = await read_body(request, settings.max_catalog_body_bytes)
            return "server key", body
        require_admin(request, settings)
        _, body = await read_body(request, settings.max_catalog_body_bytes)
        return "admin", body
    if settings.webhook_secret is None:
        raise unauthorized("signed webhooks are not configured (JOURNEYMAN_WEBHOOK_SECRET)")
    wire, body = await read_body(request, settings.max_catalog_body_bytes)
    verify_signed(settings, found, wire, body)
    return "webhook", body


def _server_key(request: Request) -> bool:
    credentials = basic_credentials(request.headers.get("authorization"))
    settings = get_services(request).settings
    return bool(credentials and matches_any(credentials[0], settings.server_key_list))


def catalog_reader(request: Request) -> None:
    """GET and DELETE of one item: a server key or the admin token."""
    if not _server_key(request):
        require_admin(request, get_services(request).settings)


Writer = Annotated[tuple[str, bytes], Depends(catalog_writer)]

UPSERT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "not JSON"},
    401: {"description": "no server key, admin token or valid signature"},
    413: {"description": "body too large"},
    422: {"description": "bad items; nothing was stored"},
}


@router.put("/{catalog}/items", responses=UPSERT_RESPONSES)
async def put_items(catalog: CatalogName, writer: Writer, request: Request) -> dict[str, Any]:
    """Insert or replace the items of the body (each an object with an `id`) in one
    transaction: all are stored, or none (with 422 naming each bad item)."""
    return await _upsert(request, catalog, writer)


@router.post("/{catalog}/items", responses=UPSERT_RESPONSES)
async def post_items(catalog: CatalogName, writer: Writer, request: Request) -> dict[str, Any]:
    """The same as PUT, for webhook senders that only POST (Standard Webhooks signed)."""
    return await _upsert(request, catalog, writer)


@router.patch("/{catalog}/items", responses=UPSERT_RESPONSES)
async def patch_items(catalog: CatalogName, writer: Writer, request: Request) -> dict[str, Any]:
    """Change only the fields given (`[{"id": "sku_1", "stock": 0}]`) on items that
    exist, keeping the others: what an inventory system sends. An id the catalog does
    not have is a 422 naming it, and nothing changes."""
    try:
        name, changed = await _write(request, catalog, writer, catalogs.merge)
    except catalogs.CatalogError as exc:
        raise _unprocessable(exc) from None
    return {"catalog": name, "updated": changed}


async def _upsert(request: Request, catalog: str, writer: tuple[str, bytes]) -> dict[str, Any]:
    name, stored = await _write(request, catalog, writer, catalogs.upsert)
    return {"catalog": name, "upserted": stored}


async def _write(
    request: Request,
    catalog: str,
    writer: tuple[str, bytes],
    write: Callable[[Session, str, list[catalogs.Item]], int],
) -> tuple[str, int]:
    """The writer's items written to the catalog by `write`, in a worker thread: the
    catalog's name and how many items `write` changed."""
    _, body = writer
    name = _name(catalog)
    items = _items(body)
    db = get_services(request).db

    def store() -> int:
        with db.session() as session:
            return write(session, name, items)

    return name, await run_in_threadpool(store)


@router.get("/{catalog}/items/{item_id}", dependencies=[Depends(catalog_reader)])
def get_item(catalog: CatalogName, item_id: ItemId, request: Request) -> dict[str, Any]:
    """The item as last upserted; 404 if the catalog has no such item."""
    name = _name(catalog)
    with get_services(request).db.session() as session:
        item = catalogs.get(session, name, item_id)
    if item is None:
        raise _not_found(name, item_id)
    return item


@router.delete("/{catalog}/items/{item_id}", dependencies=[Depends(catalog_reader)])
def delete_item(catalog: CatalogName, item_id: ItemId, request: Request) -> dict[str, Any]:
    """Remove the item; 404 if there was none. Lookups find nothing from now on."""
    name = _name(catalog)
    with get_services(request).db.session() as session:
        removed = catalogs.remove(session, name, item_id)
    if not removed:
        raise _not_found(name, item_id)
    return {"catalog": name, "deleted": item_id}


def _name(catalog: str) -> str:
    try:
        return catalogs.check_name(catalog)
    except catalogs.CatalogError as exc:
        raise ApiError(
            422, str(exc), [{"field": "catalog", "message": str(exc), "type": "value_error"}]
        ) from None


def _items(body: bytes) -> list[catalogs.Item]:
    if not body.strip():
        raise ApiError(400, "the body is empty: send a JSON list of items, each with an id")
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError too
        raise body_error(400, "malformed JSON", str(exc), "json_invalid") from None
    if isinstance(payload, dict) and "items" in payload:
        payload = payload["items"]
    elif isinstance(payload, dict):
        payload = [payload]
    try:
        return catalogs.check_items(payload)
    except catalogs.CatalogError as exc:
        raise _unprocessable(exc) from None


def _unprocessable(exc: catalogs.CatalogError) -> ApiError:
    return ApiError(
        422,
        str(exc),
        [
            {"field": field, "message": message, "type": "value_error"}
            for field, message in exc.problems
        ],
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _not_found(catalog: str, item_id: str) -> ApiError:
    return ApiError(
        404,
        f"catalog {catalog} has no item {item_id!r}",
        [{"field": "id", "message": "not found", "type": "not_found"}],
    )
