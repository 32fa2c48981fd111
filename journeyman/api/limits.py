"""Size and shape limits of what the public intake endpoints accept.

Public means hostile: a body that passes these limits can be stored, read back, encoded
for Temporal and exported without hitting a recursion limit or a payload size limit
anywhere downstream. Each refusal is a 4xx whose JSON body names the limit, its value
and where in the body it was passed (`{"type": "limit_depth", "field": "properties.a"}`).

The anchors are Segment's own limits: 32 KB per message and 500 KB per batch
(Segment's libraries split batches themselves so that they stay under both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from journeyman.api.errors import ApiError

# Nesting of objects and arrays in one body (the Segment message's own object counts 1,
# a batch's list 2): deep enough for any real payload, far below every recursion limit.
MAX_DEPTH = 32
# Keys in one object (properties, traits, context ...).
MAX_KEYS = 1000
# Items in one array (other than a batch's list of messages).
MAX_ITEMS = 10_000
# Characters in one string, and in one object key.
MAX_STRING_CHARS = 32 * 1024
MAX_KEY_CHARS = 256
# Segment's per-message limit: one message encoded as compact JSON, in bytes.
MAX_EVENT_BYTES = 32 * 1024
# Messages in one batch.
MAX_BATCH_EVENTS = 2500


@dataclass(frozen=True)
class Limit:
    name: str  # the `type` of the problem: limit_depth, limit_keys ...
    value: int
    what: str  # the limit in words, for the error message


DEPTH = Limit("limit_depth", MAX_DEPTH, "levels of nesting")
KEYS = Limit("limit_keys", MAX_KEYS, "keys in one object")
ITEMS = Limit("limit_items", MAX_ITEMS, "items in one array")
STRING = Limit("limit_string", MAX_STRING_CHARS, "characters in one string")
KEY = Limit("limit_key", MAX_KEY_CHARS, "characters in one key")
EVENT = Limit("limit_event_bytes", MAX_EVENT_BYTES, "bytes in one message (as JSON)")
BATCH = Limit("limit_batch_events", MAX_BATCH_EVENTS, "messages in one batch")


def exceeded(limit: Limit, field: str, status: int = 400) -> ApiError:
    message = f"at most {limit.value} {limit.what}"
    return ApiError(
        status,
        f"limit exceeded at {field}: {message}",
        [{"field": field, "message": message, "type": limit.name, "limit": limit.value}],
    )


def loads(body: bytes) -> Any:
    """The body parsed as JSON; a nesting so deep that the parser itself gives up is a
    400 naming the depth limit (json.JSONDecodeError is left to the caller).

    orjson parses what it can (UTF-8 JSON, numbers of 64 bits, nesting below 1024), at a
    fraction of the cost; anything it refuses goes to the standard parser, which then
    accepts or refuses it exactly as it always did."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise exceeded(DEPTH, "body") from None


def check_shape(value: Any) -> None:
    """Raise a 4xx naming the first limit `value` passes. Iterative: the walk itself
    cannot hit a recursion limit, whatever the input."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if len(path) >= MAX_DEPTH:
                raise exceeded(DEPTH, _field(path))
            if len(node) > MAX_KEYS:
                raise exceeded(KEYS, _field(path))
            for key, child in node.items():
                if len(key) > MAX_KEY_CHARS:
                    raise exceeded(KEY, _field(path))
                if isinstance(child, dict | list | str):
                    stack.append((child, (*path, key)))
        elif isinstance(node, list):
            if len(path) >= MAX_DEPTH:
                raise exceeded(DEPTH, _field(path))
            if len(node) > MAX_ITEMS and path != ("batch",):
                raise exceeded(ITEMS, _field(path))
            for index, child in enumerate(node):
                if isinstance(child, dict | list | str):
                    stack.append((child, (*path, index)))
        elif isinstance(node, str) and len(node) > MAX_STRING_CHARS:
            raise exceeded(STRING, _field(path))


def check_segment(payload: Any) -> None:
    """Segment's message and batch limits, on a body that passed `check_shape`."""
    if not isinstance(payload, dict):
        return  # the schema answers that
    messages = payload.get("batch")
    if isinstance(messages, list):
        if len(messages) > MAX_BATCH_EVENTS:
            raise exceeded(BATCH, "batch", status=413)
        for index, message in enumerate(messages):
            _check_size(message, f"batch.{index}")
    else:
        _check_size(payload, "body")


def _check_size(message: Any, field: str) -> None:
    if _fast_size(message) < MAX_EVENT_BYTES * 0.9:
        return
    size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_EVENT_BYTES:
        raise exceeded(EVENT, field, status=413)


def _fast_size(message: Any) -> float:
    """The size of `message` as compact JSON by orjson: within a few bytes of the
    standard encoder's (numbers are written differently), so it settles every message
    well below the limit; infinite when orjson cannot encode it."""
    try:
        return len(orjson.dumps(message))
    except orjson.JSONEncodeError:
        return float("inf")


def _field(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path) or "body"


TOO_DEEP = "(nested deeper than the intake limit: not shown)"


def clip(value: Any, depth: int = MAX_DEPTH) -> Any:
    """`value` with whatever is nested deeper than `depth` replaced by a note: what the
    reads (a customer's recent events, the export) answer for data stored before the
    intake limits, so that no old row can make them fail."""
    if isinstance(value, dict):
        if depth <= 0:
            return TOO_DEEP
        return {key: clip(child, depth - 1) for key, child in value.items()}
    if isinstance(value, list):
        if depth <= 0:
            return TOO_DEEP
        return [clip(child, depth - 1) for child in value]
    return value
