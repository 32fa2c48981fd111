"""One way to reach Temporal, used by the worker, the API, the CLI and the tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from journeyman.codec import data_converter
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


def tls_options(settings: Settings) -> tuple[TLSConfig | bool, str | None]:
    """TLS and API key as Temporal Cloud wants them: certificates (mTLS) when their
    paths are set, else plain TLS when TEMPORAL_TLS is true or an API key is set."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    if bool(settings.temporal_tls_client_cert_path) != bool(settings.temporal_tls_client_key_path):
        raise ValueError(
            "set both TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH, or neither"
        )
    if settings.temporal_tls_client_cert_path or settings.temporal_tls_server_ca_cert_path:
        return (
            TLSConfig(
                server_root_ca_cert=_read(settings.temporal_tls_server_ca_cert_path),
                client_cert=_read(settings.temporal_tls_client_cert_path),
                client_private_key=_read(settings.temporal_tls_client_key_path),
                domain=settings.temporal_tls_server_name,
            ),
            api_key,
        )
    if settings.temporal_tls_server_name:
        return TLSConfig(domain=settings.temporal_tls_server_name), api_key
    return settings.temporal_tls or api_key is not None, api_key


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


def _read(path: Path | None) -> bytes | None:
    return Path(str(path)).read_bytes() if path else None
