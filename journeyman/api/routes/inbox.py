"""The inbox of the `inbox` channel: what an app or site shows a customer.

`GET /v1/inbox/{userId}` lists the customer's messages newest first with the unread
count; `POST /v1/inbox/{userId}/{id}/read` marks one read. Who may call
(`inbox_caller`, a dependency meant to grow):

- the admin token (`Authorization: Bearer …`), for support tools;
- a write key (HTTP Basic user name, or `writeKey` in the query, so that a page needs
  no preflight) with `userHash`, the hex HMAC-SHA256 of the user id under
  `JOURNEYMAN_IDENTITY_SECRET`: write keys ship inside apps, so the hash, computed by
  the retailer's server, is what proves the caller may read this customer's inbox;
- a server key (HTTP Basic, key as user name), which may read any customer's inbox.

Answers carry `Access-Control-Allow-Origin: *`: the embeddable script
(`/v1/inbox.js`) runs on the retailer's pages; no cookie is ever involved.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from journeyman.api.auth import (
    basic_credentials,
    bearer_token,
    check_admin,
    matches_any,
    unauthorized,
)
from journeyman.api.deps import SessionDep, SettingsDep
from journeyman.api.errors import ApiError
from journeyman.messaging import inbox_reading as inbox
from journeyman.settings import Settings

router = APIRouter(prefix="/v1/inbox", tags=["inbox"])

SCRIPT = Path(__file__).resolve().parent.parent / "static" / "inbox.js"
CORS = {"Access-Control-Allow-Origin": "*"}
UserId = Annotated[str, PathParam(min_length=1, max_length=200)]

# Each check answers for a request: True (allowed), False (not its kind of caller),
# or raises a 401 (its kind, but wrong). The first True wins.
CallerCheck = Callable[[Request, Settings, str], bool]


def _admin(request: Request, settings: Settings, user_id: str) -> bool:
    authorization = request.headers.get("authorization")
    if bearer_token(authorization) is None:
        return False
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    check_admin(authorization, token)
    return True


def _server_key(request: Request, settings: Settings, user_id: str) -> bool:
    """A server key (secret, held by the retailer's own servers) reads any inbox."""
    credentials = basic_credentials(request.headers.get("authorization"))
    return bool(credentials and matches_any(credentials[0], settings.server_key_list))


def _write_key_with_user_hash(request: Request, settings: Settings, user_id: str) -> bool:
    credentials = basic_credentials(request.headers.get("authorization"))
    key = credentials[0] if credentials else request.query_params.get("writeKey")
    if not key:
        return False
    if not matches_any(key, settings.write_key_list):
        raise unauthorized("unknown write key")
    if settings.identity_secret is None:
        raise unauthorized(
            "identity verification is not configured (JOURNEYMAN_IDENTITY_SECRET): "
            "a write key cannot read an inbox"
        )
    given = request.query_params.get("userHash", "")
    if not given:
        raise unauthorized("userHash required with a write key: hex HMAC-SHA256 of the user id")
    if not inbox.verify_user_hash(settings.identity_secret.get_secret_value(), user_id, given):
        raise unauthorized("userHash does not match this user id")
    return True


CALLER_CHECKS: list[CallerCheck] = [_admin, _server_key, _write_key_with_user_hash]


def inbox_caller(request: Request, settings: SettingsDep, user_id: UserId) -> None:
    """Allow the request when one of `CALLER_CHECKS` does; else 401, readable by the
    page that asked (CORS), so the embedded script can say why."""
    try:
        for check in CALLER_CHECKS:
            if check(request, settings, user_id):
                return
        raise unauthorized(
            "the admin token, a server key, or a write key with userHash, is required to "
            "read an inbox"
        )
    except ApiError as exc:
        exc.headers = {**(exc.headers or {}), **CORS}
        raise


class InboxItem(BaseModel):
    id: int
    title: str
    body: str
    link: str | None = None
    image: str | None = None
    journey_id: str
    step_id: str
    created_at: datetime
    read_at: datetime | None = None
    expires_at: datetime | None = None


class InboxList(BaseModel):
    user_id: str
    unread: int = Field(description="live messages not yet read")
    messages: list[InboxItem] = Field(description="newest first")


@router.get("/{user_id}", response_model=InboxList, dependencies=[Depends(inbox_caller)])
def list_inbox(
    user_id: UserId,
    session: SessionDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> InboxList:
    """The customer's inbox, newest first, with the unread count."""
    response.headers.update(CORS)
    rows, unread = inbox.list_messages(session, user_id, datetime.now(UTC), limit)
    items = [InboxItem.model_validate(row, from_attributes=True) for row in rows]
    return InboxList(user_id=user_id, unread=unread, messages=items)


@router.post(
    "/{user_id}/{message_id}/read",
    response_model=InboxItem,
    dependencies=[Depends(inbox_caller)],
)
def read_message(
    user_id: UserId,
    message_id: Annotated[int, PathParam(ge=1, le=2**62)],
    session: SessionDep,
    response: Response,
) -> InboxItem:
    """Mark one message read (once; the first read counts as the message opened)."""
    response.headers.update(CORS)
    row = inbox.mark_read(session, user_id, message_id, datetime.now(UTC))
    if row is None:
        raise ApiError(404, f"no message {message_id} in the inbox of {user_id!r}", headers=CORS)
    return InboxItem.model_validate(row, from_attributes=True)


script_router = APIRouter(tags=["inbox"])


@script_router.get("/v1/inbox.js", response_class=Response)
def inbox_script() -> Response:
    """The embeddable inbox: `<script src=".../v1/inbox.js" data-user-id=…
    data-user-hash=… data-write-key=…></script>` (docs/channels.md)."""
    return Response(
        SCRIPT.read_text(encoding="utf-8"),
        media_type="text/javascript; charset=utf-8",
        headers={**CORS, "Cache-Control": "public, max-age=300"},
    )
