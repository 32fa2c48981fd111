"""Temporal's remote codec protocol, so the Temporal UI and CLI show payloads as the
workflow code saw them: decrypted and decompressed.

`POST /codec/decode` and `POST /codec/encode` take and return `Payloads` as proto3
JSON (`{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}`),
with the codec of the settings (journeyman.platform.codec: compression, and encryption
with the payload key when JOURNEYMAN_PAYLOAD_KEY is set); 400 for a body that is not
such JSON, a payload no key opens or a compressed one that does not decompress.

Callers show the admin token (`Authorization: Bearer <token>`; the CLI sends it with
`--codec-auth`). The Temporal UI cannot send it, so `journeyman dev` opens the codec
(`allow_ui(app, open_on_loopback=True)`): clients on this machine then need no token,
as long as a browser's `Origin` is the UI's. The UI calls from the browser, across
origins: preflights are answered and answers carry CORS headers for the UI's origins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from journeyman.api.auth import check_admin
from journeyman.api.deps import SettingsDep
from journeyman.api.errors import ApiError, body_error
from journeyman.platform.codec import (
    PayloadDecompressionError,
    PayloadDecryptionError,
    payload_codec,
)

DEFAULT_UI_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
PREFLIGHT_MAX_AGE = 600  # seconds a browser may reuse a preflight answer
OPERATIONS = ("decode", "encode")
DECODED_LIMIT = 32 * 1024 * 1024  # bytes one decode answer may hold

router = APIRouter(prefix="/codec", tags=["codec"])


def allow_ui(
    app: FastAPI, origins: Sequence[str] = DEFAULT_UI_ORIGINS, *, open_on_loopback: bool = False
) -> None:
    """Let the Temporal UI at `origins` call the codec; with `open_on_loopback`, clients
    on this machine need no admin token (`journeyman dev` only: behind a proxy on the
    same host, every client would look local)."""
    app.state.codec_origins = tuple(origins)
    app.state.codec_open = open_on_loopback


def ui_origins(port: int) -> tuple[str, ...]:
    """The origins of a Temporal UI served on this machine at `port`."""
    return (f"http://localhost:{port}", f"http://127.0.0.1:{port}")


@router.options("/{operation}", status_code=204, include_in_schema=False)
async def preflight(operation: str, request: Request) -> Response:
    """CORS preflight of the UI: no credentials come with it, so none are asked."""
    if operation not in OPERATIONS:
        raise ApiError(404, f"no codec operation {operation!r}: use decode or encode")
    cors = _cors(request)
    if not cors:
        raise ApiError(403, f"origin {request.headers.get('origin')!r} may not call the codec")
    return Response(
        status_code=204,
        headers={
            **cors,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
        },
    )


@router.post("/decode", response_class=Response)
async def decode(request: Request, settings: SettingsDep) -> Response:
    """Payloads decrypted and decompressed: what the workflow code saw. Payloads that
    were never encrypted or compressed come back as they are."""
    return await _apply(request, settings, "decode")


@router.post("/encode", response_class=Response)
async def encode(request: Request, settings: SettingsDep) -> Response:
    """Payloads as the workers write them (the UI's signal and query inputs): compressed
    when large enough, encrypted with the current key when there is one."""
    return await _apply(request, settings, "encode")


async def _apply(request: Request, settings: SettingsDep, operation: str) -> Response:
    cors = _cors(request)
    try:
        _authorize(request, settings)
        codec = payload_codec(settings)
        payloads = _parse(await request.body())
        try:
            if operation == "decode":
                result = await _decode(codec, payloads.payloads)
            else:
                result = await codec.encode(payloads.payloads)
        except (PayloadDecryptionError, PayloadDecompressionError) as exc:
            raise ApiError(400, str(exc)) from None
    except ApiError as exc:
        # The UI reads errors only when they carry the CORS headers too.
        exc.headers = {**(exc.headers or {}), **cors}
        raise
    body = json_format.MessageToJson(Payloads(payloads=result), indent=None)
    return Response(body, media_type="application/json", headers=cors)


async def _decode(codec: PayloadCodec, payloads: Sequence[Payload]) -> list[Payload]:
    """Payload by payload, refusing a body whose payloads decompress to more than
    `DECODED_LIMIT` in all: each may grow to 8 MiB, and a body holds thousands."""
    decoded: list[Payload] = []
    size = 0
    for payload in payloads:
        [plain] = await codec.decode([payload])
        size += plain.ByteSize()
        if size > DECODED_LIMIT:
            raise ApiError(
                413, f"the payloads decode to more than {DECODED_LIMIT:,} bytes: send fewer"
            )
        decoded.append(plain)
    return decoded


def _authorize(request: Request, settings: SettingsDep) -> None:
    if getattr(request.app.state, "codec_open", False) and _local(request):
        origin = request.headers.get("origin")
        if origin is None or origin in _origins(request):
            return
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    check_admin(request.headers.get("authorization"), token)


def _parse(body: bytes) -> Payloads:
    try:
        return json_format.Parse(body, Payloads())
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        raise body_error(
            400, "the body is not Payloads as proto3 JSON", str(exc), "payloads_invalid"
        ) from None


def _origins(request: Request) -> tuple[str, ...]:
    origins: tuple[str, ...] = getattr(request.app.state, "codec_origins", DEFAULT_UI_ORIGINS)
    return origins


def _cors(request: Request) -> dict[str, str]:
    origin = request.headers.get("origin")
    if origin is None or origin not in _origins(request):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _local(request: Request) -> bool:
    if request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
