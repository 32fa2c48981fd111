"""Errors as JSON: `{"error": "what is wrong", "detail": [...]}` with a 4xx (or 503).

`detail` lists the problems; for bad input each names the `field` (a dotted path into
the body, `batch.0.event`), so a client can tell exactly what to fix.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from journeyman.events.intake import MESSAGE_TYPES

# Error types that mean "this is not a Segment message at all" rather than "this field
# has the wrong value": answered with 400, like Segment's own API.
BAD_REQUEST_TYPES = frozenset({"json_invalid", "missing_identity"})


class ApiError(HTTPException):
    """An error answer with our JSON body."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=error, headers=headers)
        self.error = error
        self.problems = detail or []


def body_error(status_code: int, error: str, message: str, kind: str) -> ApiError:
    """An error in the body as a whole, not in one of its fields: `detail` names `body`."""
    return ApiError(status_code, error, [{"field": "body", "message": message, "type": kind}])


def error_body(error: str, detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": error, "detail": detail or []}


# The body every error has, as OpenAPI documents it: FastAPI documents its own 422 body
# (`{"detail": [{"loc", "msg", "type"}]}`) under these two names, which ours replaces.
ERROR_SCHEMAS: dict[str, Any] = {
    "HTTPValidationError": {
        "title": "Error",
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "what is wrong"},
            "detail": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ValidationError"},
            },
        },
    },
    "ValidationError": {
        "title": "Problem",
        "type": "object",
        "required": ["field", "message", "type"],
        "properties": {
            "field": {"type": "string", "description": "a dotted path into the body"},
            "message": {"type": "string"},
            "type": {"type": "string"},
        },
    },
}


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DataError, _data_error)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            schemas = schema.get("components", {}).get("schemas", {})
            schemas.update({k: v for k, v in ERROR_SCHEMAS.items() if k in schemas})
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


async def _data_error(_request: Request, exc: Exception) -> JSONResponse:
    """A value the database cannot store (PostgreSQL refuses NUL characters in text):
    the request is at fault, and its transaction was rolled back."""
    reason = str(getattr(exc, "orig", exc)).splitlines()[0]
    if "NUL" in reason:
        reason = "text may not contain NUL (\\u0000) characters"
    return JSONResponse(error_body(f"a value cannot be stored: {reason}", []), status_code=400)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(
        error_body(exc.error, exc.problems), status_code=exc.status_code, headers=exc.headers
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse(error_body(message), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(error) for error in exc.errors()]
    bad_request = [p for p in problems if p["type"] in BAD_REQUEST_TYPES]
    if bad_request:
        first = bad_request[0]
        error = "malformed JSON" if first["type"] == "json_invalid" else first["message"]
        return JSONResponse(error_body(error, bad_request), status_code=400)
    first = problems[0]
    return JSONResponse(
        error_body(f"invalid field {first['field']}: {first['message']}", problems),
        status_code=422,
    )


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    loc = list(error.get("loc", ()))
    if loc and loc[0] == "body":
        loc = loc[1:]
    # A message in a batch is a union tagged by `type`; pydantic puts the tag in the
    # path (batch.0.track.event), which no client wrote.
    loc = [
        part
        for i, part in enumerate(loc)
        if not (part in MESSAGE_TYPES and i > 0 and isinstance(loc[i - 1], int))
    ]
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("type")
    if error["type"] == "missing_identity":
        loc.append("userId")
    if error["type"] == "json_invalid":
        field = "body"
        reason = error.get("ctx", {}).get("error", "invalid JSON")
        message = f"{reason} at position {loc[0]}" if loc else reason
    else:
        field = ".".join(str(part) for part in loc) or "body"
        message = error.get("msg", "invalid")
    return {"field": field, "message": message, "type": error["type"]}
