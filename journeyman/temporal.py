"""One way to reach Temporal, used by the worker, the API, the CLI and the tests."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client, TLSConfig

from journeyman.codec import data_converter
from journeyman.settings import Settings

DEV_SERVER_ADDRESS = "localhost:7233"


async def connect(settings: Settings, address: str | None = None) -> Client:
    """A client for `address`, else TEMPORAL_ADDRESS, else the local dev server; its
    payloads are encrypted when JOURNEYMAN_PAYLOAD_KEY is set."""
    tls: TLSConfig | bool = settings.temporal_tls
    if settings.temporal_tls_client_cert_path or settings.temporal_tls_server_ca_cert_path:
        tls = TLSConfig(
            server_root_ca_cert=_read(settings.temporal_tls_server_ca_cert_path),
            client_cert=_read(settings.temporal_tls_client_cert_path),
            client_private_key=_read(settings.temporal_tls_client_key_path),
        )
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        address or settings.temporal_address or DEV_SERVER_ADDRESS,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        tls=tls or bool(api_key),
        api_key=api_key,
    )


def _read(path: Path | None) -> bytes | None:
    return Path(str(path)).read_bytes() if path else None
