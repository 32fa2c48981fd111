"""One request-size limit for every route, enforced before any handler reads the body.

A request declaring a `Content-Length` over the limit is answered 413 at once, its body
never read; a body sent without a length (chunked) is counted as it streams and cut off
with the same 413 when it passes the limit. The limit is JOURNEYMAN_MAX_BODY_BYTES, the
one event intake already applies (it also bounds gzip-decoded bodies, deps.IntakeRequest),
except on the Temporal UI's codec endpoints (`/codec/`, admin only), which take a whole
history's payloads at once: up to CODEC_LIMIT (Temporal's own 2 MB a payload, and more).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from journeyman.api.errors import ApiError, error_body


def too_large(limit: int) -> tuple[str, list[dict[str, Any]]]:
    return (
        f"body larger than {limit} bytes",
        [{"field": "body", "message": f"at most {limit} bytes", "type": "too_large"}],
    )


CODEC_LIMIT = 8 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: 413 for any body over `limit` bytes, before it is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        if str(scope.get("path", "")).startswith("/codec/"):
            limit = max(limit, CODEC_LIMIT)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer_413(send, limit)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    error, detail = too_large(limit)
                    raise ApiError(413, error, detail)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _answer_413(send: Send, limit: int) -> None:
    error, detail = too_large(limit)
    body = json.dumps(error_body(error, detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
