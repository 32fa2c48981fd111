"""`connect()`: TLS and API key for Temporal Cloud from the settings (no real cloud), and a
real connection to the dev server."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest
from temporalio.client import Client, TLSConfig
from temporalio.testing import WorkflowEnvironment

from journeyman.platform import temporal
from journeyman.platform.codec import CompressionCodec, plain_data_converter
from journeyman.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_no_tls_and_no_key_by_default() -> None:
    assert temporal.tls_options(settings()) == (False, None)


def test_an_api_key_turns_tls_on() -> None:
    assert temporal.tls_options(settings(temporal_api_key="key-1")) == (True, "key-1")


def test_temporal_tls_alone_is_plain_tls() -> None:
    assert temporal.tls_options(settings(temporal_tls=True)) == (True, None)


def test_certificate_paths_give_mtls_with_the_files_contents(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    for name, path in files.items():
        path.write_bytes(f"{name} bytes".encode())
    tls, api_key = temporal.tls_options(
        settings(
            temporal_tls_client_cert_path=files["cert"],
            temporal_tls_client_key_path=files["key"],
            temporal_tls_server_ca_cert_path=files["ca"],
            temporal_tls_server_name="ns.tmprl.cloud",
        )
    )
    assert tls == TLSConfig(
        server_root_ca_cert=b"ca bytes",
        client_cert=b"cert bytes",
        client_private_key=b"key bytes",
        domain="ns.tmprl.cloud",
    )
    assert api_key is None


def test_a_client_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_bytes(b"cert")
    with pytest.raises(ValueError, match="TEMPORAL_TLS_CLIENT_KEY_PATH or _DATA"):
        temporal.tls_options(settings(temporal_tls_client_cert_path=cert))


def test_certificates_given_as_pem_text_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Containers pass certificates as variables: Temporal's *_DATA names."""
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_DATA", "-----BEGIN CERTIFICATE-----\ncert")
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_DATA", "-----BEGIN PRIVATE KEY-----\nkey")
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_DATA", "-----BEGIN CERTIFICATE-----\nca")

    tls, _ = temporal.tls_options(settings())

    assert tls == TLSConfig(
        server_root_ca_cert=b"-----BEGIN CERTIFICATE-----\nca",
        client_cert=b"-----BEGIN CERTIFICATE-----\ncert",
        client_private_key=b"-----BEGIN PRIVATE KEY-----\nkey",
    )


def test_a_certificate_given_both_as_a_file_and_as_text_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_bytes(b"cert")
    with pytest.raises(ValueError, match="CERT_PATH or TEMPORAL_TLS_CLIENT_CERT_DATA, not both"):
        temporal.tls_options(
            settings(temporal_tls_client_cert_path=cert, temporal_tls_client_cert_data="cert")
        )


def test_the_settings_read_temporals_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_API_KEY", "env-key")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "shop.a1b2c")
    monkeypatch.setenv("TEMPORAL_TLS", "true")
    read = settings()
    assert read.temporal_namespace == "shop.a1b2c"
    assert temporal.tls_options(read) == (True, "env-key")


async def test_connect_passes_address_namespace_tls_and_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []

    async def fake_connect(target: str, **kwargs: Any) -> str:
        calls.append({"target": target, **kwargs})
        return "client"

    monkeypatch.setattr(Client, "connect", fake_connect)
    await temporal.connect(
        settings(
            temporal_address="shop.a1b2c.tmprl.cloud:7233",
            temporal_namespace="shop.a1b2c",
            temporal_api_key="key-1",
        )
    )
    [call] = calls
    assert call["target"] == "shop.a1b2c.tmprl.cloud:7233"
    assert (call["namespace"], call["tls"], call["api_key"]) == ("shop.a1b2c", True, "key-1")
    assert call["runtime"] is None
    assert call["lazy"] is False
    # No JOURNEYMAN_PAYLOAD_KEY: payloads go as pydantic JSON, compressed when large.
    converter = call["data_converter"]
    assert converter.payload_converter_class is plain_data_converter.payload_converter_class
    assert isinstance(converter.payload_codec, CompressionCodec)


@pytest.mark.slow
async def test_connect_reaches_the_server_and_encrypts_with_the_payload_key(
    local_env: WorkflowEnvironment,
) -> None:
    """Against the real dev server: the client `connect` makes talks to the address it is
    given (before TEMPORAL_ADDRESS), and what it sends is stored encrypted with the key."""
    address = local_env.client.service_client.config.target_host
    key = base64.b64encode(bytes(range(32))).decode()
    client = await temporal.connect(
        settings(temporal_address="127.0.0.1:1", payload_key=key), address
    )
    workflow_id = f"connect-{uuid.uuid4()}"
    handle = await client.start_workflow(
        "NoSuchWorkflow", "ana@example.com", id=workflow_id, task_queue=f"tq-{uuid.uuid4()}"
    )
    try:
        # Read back by another client, with no key: the server holds ciphertext only.
        history = await local_env.client.get_workflow_handle(workflow_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        [payload] = started.input.payloads
        assert payload.metadata["encoding"] == b"binary/encrypted"
        assert b"ana@example.com" not in payload.data
        assert await client.data_converter.decode([payload]) == ["ana@example.com"]
    finally:
        await handle.terminate("test over")


def test_no_temporal_metrics_runtime_unless_a_port_is_set() -> None:
    assert temporal.metrics_runtime(settings()) is None


@pytest.mark.parametrize(
    ("value", "quote", "literal"),
    [
        ("cart", '"', '"cart"'),
        ('a" OR JourneyId = "b', '"', '"a\\" OR JourneyId = \\"b"'),
        ("back\\slash", '"', '"back\\\\slash"'),
        ("o'brien", "'", "'o\\'brien'"),
        ('say "hi"', "'", "'say \"hi\"'"),
    ],
)
def test_a_visibility_literal_cannot_be_ended_by_the_value(
    value: str, quote: Literal['"', "'"], literal: str
) -> None:
    assert temporal.visibility_literal(value, quote) == literal
