"""One way to reach Temporal, used by the worker, the API, the CLI and the tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from temporalio.client import Client, TLSConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from journeyman.platform.codec import data_converter
from journeyman.settings import Settings

DEV_SERVER_ADDRESS = "localhost:7233"


async def connect(
    settings: Settings,
    address: str | None = None,
    *,
    runtime: Runtime | None = None,
    lazy: bool = False,
) -> Client:
    """A client for `address`, else TEMPORAL_ADDRESS, else the local dev server; its
    payloads are encrypted when JOURNEYMAN_PAYLOAD_KEY is set. `runtime`: the SDK
    runtime to use (`metrics_runtime`), else the SDK's default. `lazy`: connect on first
    use, so a caller can start while Temporal is down (the API: it stores events and
    hands them over once Temporal answers)."""
    tls, api_key = tls_options(settings)
    return await Client.connect(
        address or settings.temporal_address or DEV_SERVER_ADDRESS,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        tls=tls,
        api_key=api_key,
        runtime=runtime,
        lazy=lazy,
    )


def visibility_literal(value: str, quote: Literal['"', "'"] = '"') -> str:
    """`value` as a string literal of a Temporal visibility (list filter) query, between
    `quote`s (`"` or `'`), with backslashes and that quote escaped: an id from outside
    cannot end the literal and add clauses of its own."""
    escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return f"{quote}{escaped}{quote}"


def tls_options(settings: Settings) -> tuple[TLSConfig | bool, str | None]:
    """TLS and API key as Temporal Cloud wants them: certificates (mTLS) when they are
    given, as files (`*_PATH`) or as PEM text in the environment (`*_DATA`), else plain
    TLS when TEMPORAL_TLS is true or an API key is set."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    cert = _pem(
        "TEMPORAL_TLS_CLIENT_CERT",
        settings.temporal_tls_client_cert_path,
        settings.temporal_tls_client_cert_data,
    )
    key = _pem(
        "TEMPORAL_TLS_CLIENT_KEY",
        settings.temporal_tls_client_key_path,
        settings.temporal_tls_client_key_data,
    )
    ca = _pem(
        "TEMPORAL_TLS_SERVER_CA_CERT",
        settings.temporal_tls_server_ca_cert_path,
        settings.temporal_tls_server_ca_cert_data,
    )
    if bool(cert) != bool(key):
        raise ValueError(
            "set both the client certificate (TEMPORAL_TLS_CLIENT_CERT_PATH or _DATA) and its"
            " key (TEMPORAL_TLS_CLIENT_KEY_PATH or _DATA), or neither"
        )
    if cert or ca:
        return (
            TLSConfig(
                server_root_ca_cert=ca,
                client_cert=cert,
                client_private_key=key,
                domain=settings.temporal_tls_server_name,
            ),
            api_key,
        )
    if settings.temporal_tls_server_name:
        return TLSConfig(domain=settings.temporal_tls_server_name), api_key
    return settings.temporal_tls or api_key is not None, api_key


def _pem(name: str, path: Path | None, data: SecretStr | str | None) -> bytes | None:
    """A certificate or key from its file or from the environment, not both."""
    if path and data:
        raise ValueError(f"set {name}_PATH or {name}_DATA, not both")
    if path:
        return Path(str(path)).read_bytes()
    if isinstance(data, SecretStr):
        data = data.get_secret_value()
    return data.encode() if data else None


def metrics_runtime(settings: Settings) -> Runtime | None:
    """The SDK runtime exporting Temporal's own metrics (Prometheus) on
    JOURNEYMAN_TEMPORAL_METRICS_PORT; None when that is unset."""
    if settings.temporal_metrics_port is None:
        return None
    return _prometheus_runtime(f"{settings.metrics_host}:{settings.temporal_metrics_port}")


@cache
def _prometheus_runtime(bind_address: str) -> Runtime:
    # One per address and process: each runtime binds its port and has its own threads.
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))
