"""Encrypted Temporal payloads: the codec, a journey's history on a real server, and the
codec endpoints the Temporal UI and CLI call."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import sys
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker.workflow_sandbox._importer import _thread_local_sys_modules

from journeyman.api.routes.codec import allow_ui
from journeyman.contracts import (
    CustomerEvent,
    JourneyInput,
    OperatorRequest,
    PathEntry,
    RunState,
    RunStatus,
    SendOutcome,
)
from journeyman.dsl.compiler import compile_file
from journeyman.names import SEARCH_ATTRIBUTES
from journeyman.platform.codec import (
    DECOMPRESSED_LIMIT,
    ENCODING,
    ZLIB_ENCODING,
    CodecChain,
    CompressionCodec,
    EncryptionCodec,
    PayloadConverter,
    PayloadDecompressionError,
    PayloadDecryptionError,
    SharedAdapterJSONConverter,
    data_converter,
    key_id,
    new_key,
    parse_keys,
    plain_data_converter,
    process_wide,
    type_adapter,
)
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.wiring import build_worker, journey_activities
from tests.api.support import ADMIN_TOKEN, Api
from tests.conftest import _binary
from tests.harness import Harness

KEY = bytes(range(32))
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).parents[2]
OLD_KEY = bytes(range(100, 132))
UI = "http://localhost:8233"


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# -- the codec ------------------------------------------------------------------------


async def test_payloads_round_trip_and_are_not_readable_encrypted():
    codec = EncryptionCodec(KEY)
    original = payload('{"name": "Ana Lovelace"}')
    [encrypted] = await codec.encode([original])
    assert encrypted.metadata["encoding"] == ENCODING
    assert encrypted.metadata["encryption-key-id"] == key_id(KEY).encode()
    assert b"Ana Lovelace" not in encrypted.SerializeToString()
    assert await codec.decode([encrypted]) == [original]


# A start input's worth of JSON: compressible, as payloads of ours are.
LARGE = '{"steps": [' + ", ".join(f'{{"id": "step{i}", "wait": "1d"}}' for i in range(40)) + "]}"


async def test_large_payloads_are_compressed_as_the_go_sdks_zlib_codec_writes_them():
    codec = CompressionCodec()
    small, large = payload("x" * 100), payload(LARGE)
    [kept, packed] = await codec.encode([small, large])
    assert kept == small
    assert packed.metadata["encoding"] == ZLIB_ENCODING
    assert zlib.decompress(packed.data) == large.SerializeToString()
    assert len(packed.data) < 0.5 * len(large.data)
    assert await codec.decode([kept, packed]) == [small, large]


async def test_compression_off_writes_as_is_and_still_reads_compressed_payloads():
    [packed] = await CompressionCodec().encode([payload(LARGE)])
    off = CompressionCodec(compresses=False)
    assert await off.encode([payload(LARGE)]) == [payload(LARGE)]
    assert await off.decode([packed]) == [payload(LARGE)]


async def test_incompressible_payloads_are_left_as_they_are():
    noise = Payload(metadata={"encoding": b"binary/plain"}, data=os.urandom(4096))
    assert await CompressionCodec().encode([noise]) == [noise]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not zlib", "not zlib"),
        (zlib.compress(payload(LARGE).SerializeToString())[:-8], "truncated"),
        (zlib.compress(b"\0" * (DECOMPRESSED_LIMIT + 1)), "grows past"),
        (zlib.compress(b"\xff\xff\xff"), "does not hold a payload"),
    ],
    ids=["garbage", "truncated", "bomb", "not-a-payload"],
)
async def test_a_bad_compressed_payload_is_refused_saying_why(data: bytes, problem: str):
    bad = Payload(metadata={"encoding": ZLIB_ENCODING}, data=data)
    with pytest.raises(PayloadDecompressionError, match=problem):
        await CompressionCodec().decode([bad])


async def test_payloads_are_compressed_before_they_are_encrypted():
    settings = Settings(_env_file=None, payload_key=SecretStr(b64(KEY)))
    codec = data_converter(settings).payload_codec
    assert codec is not None
    [sealed] = await codec.encode([payload(LARGE)])
    [opened] = await EncryptionCodec(KEY).decode([sealed])
    assert opened.metadata["encoding"] == ZLIB_ENCODING
    assert await codec.decode([sealed]) == [payload(LARGE)]


async def test_each_encryption_uses_a_fresh_nonce():
    codec = EncryptionCodec(KEY)
    first, second = await codec.encode([payload("same"), payload("same")])
    assert first.data != second.data


async def test_tampered_ciphertext_fails_authentication():
    codec = EncryptionCodec(KEY)
    [encrypted] = await codec.encode([payload("hello")])
    flipped = bytes([encrypted.data[-1] ^ 1])
    tampered = Payload(metadata=encrypted.metadata, data=encrypted.data[:-1] + flipped)
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([tampered])


async def test_a_payload_of_another_key_names_the_key_it_needs():
    [encrypted] = await EncryptionCodec(OLD_KEY).encode([payload("hello")])
    with pytest.raises(PayloadDecryptionError, match=f"key {key_id(OLD_KEY)}.*not in"):
        await EncryptionCodec(KEY).decode([encrypted])


async def test_rotation_encrypts_with_the_first_key_and_decrypts_with_all():
    [old] = await EncryptionCodec(OLD_KEY).encode([payload("before")])
    rotated = EncryptionCodec.from_setting(f"{b64(KEY)}, {b64(OLD_KEY)}")
    [new] = await rotated.encode([payload("after")])
    assert new.metadata["encryption-key-id"] == key_id(KEY).encode()
    assert await rotated.decode([old, new]) == [payload("before"), payload("after")]
    assert await EncryptionCodec(KEY).decode([new]) == [payload("after")]


async def test_payloads_not_encrypted_pass_through_decoding():
    plain = payload('{"written": "before encryption was on"}')
    assert await EncryptionCodec(KEY).decode([plain]) == [plain]


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("not base64!", "key 1 is not base64"),
        (b64(b"short"), "key 1 is 5 bytes, not 32"),
        (f"{b64(KEY)},{b64(bytes(16))}", "key 2 is 16 bytes, not 32"),
        (" , ", "is empty"),
    ],
)
def test_a_bad_key_setting_says_which_setting_and_what_a_key_is(setting, problem):
    with pytest.raises(ValueError, match=problem) as caught:
        parse_keys(setting)
    assert "JOURNEYMAN_PAYLOAD_KEY" in str(caught.value)
    assert "base64 of 32 random bytes" in str(caught.value)


def test_a_new_key_is_a_valid_setting():
    assert len(parse_keys(new_key())) == 1


def test_the_data_converter_compresses_and_encrypts_only_with_a_key():
    plain = data_converter(Settings(_env_file=None))
    assert isinstance(plain.payload_codec, CompressionCodec)
    assert plain.payload_codec.compresses
    assert plain.failure_converter_class is plain_data_converter.failure_converter_class
    off = data_converter(Settings(_env_file=None, JOURNEYMAN_PAYLOAD_COMPRESSION="false"))
    assert isinstance(off.payload_codec, CompressionCodec) and not off.payload_codec.compresses
    converter = data_converter(Settings(JOURNEYMAN_PAYLOAD_KEY=b64(KEY)))
    assert isinstance(converter.payload_codec, CodecChain)
    assert [type(c) for c in converter.payload_codec.codecs] == [CompressionCodec, EncryptionCodec]
    assert converter.payload_converter_class is PayloadConverter
    # Failure messages quote inputs (validation errors do): they are encrypted too.
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)


# -- payloads -------------------------------------------------------------------------

VALUES: list[tuple[Any, Any]] = [
    (
        JourneyInput(
            plan=compile_file(ROOT / "journeys" / "welcome_series.yaml", ROOT / "templates").plan,
            customer_id="c1",
            state=RunState(
                trigger=CustomerEvent("m-1", "signed_up", {"n": 1}, T0),
                last_event=CustomerEvent("m-1", "signed_up", {"n": 1}, T0),
                current="hello",
                entered_at=T0,
                holdout=False,
                path=[PathEntry(T0, "entry", "entered", "entered on signed_up")],
            ),
        ),
        JourneyInput,
    ),
    (SendOutcome(status="deferred", until=T0, paced=True), SendOutcome),
    (T0, datetime),
    (3, int),
    ({"a": [1, "b", None]}, dict[str, Any]),
    ([1.5, "x"], None),
    (None, None),
    (b"bytes", bytes),
]


@pytest.mark.parametrize(("value", "hint"), VALUES, ids=lambda v: type(v).__name__)
def test_payloads_read_as_the_sdks_pydantic_converter_reads_them(value: Any, hint: Any):
    """Ours and the SDK's read each other's payloads to the same value (histories written
    before keep reading); only a dataclass is written differently, without its defaults."""
    ours, sdks = plain_data_converter.payload_converter, pydantic_data_converter.payload_converter
    [payload] = ours.to_payloads([value])
    [theirs] = sdks.to_payloads([value])
    hints = None if hint is None else [hint]
    if not dataclasses.is_dataclass(value):
        assert payload == theirs
    assert ours.from_payloads([payload], hints) == sdks.from_payloads([payload], hints)
    assert ours.from_payloads([payload], hints) == [value]
    assert ours.from_payloads([theirs], hints) == [value]


def test_a_dataclass_is_written_without_the_fields_at_their_default():
    """`exclude_defaults`: what a reader fills in again is left out; a required field
    holding None, and None inside a dict (an event property set to null), are kept."""
    converter = plain_data_converter.payload_converter
    event = CustomerEvent("m-1", "viewed", {"coupon": None, "n": 0}, T0)
    [payload] = converter.to_payloads([PathEntry(T0, "entry", "entered", "on viewed")])
    assert b"channel" not in payload.data and b"template" not in payload.data
    [payload] = converter.to_payloads([SendOutcome(status="sent")])
    assert json.loads(payload.data) == {"status": "sent"}
    [payload] = converter.to_payloads([event])
    assert json.loads(payload.data)["properties"] == {"coupon": None, "n": 0}
    assert converter.from_payloads([payload], [CustomerEvent]) == [event]


def test_every_shipped_journeys_start_input_is_smaller_and_reads_the_same():
    ours, sdks = plain_data_converter.payload_converter, pydantic_data_converter.payload_converter
    written = before = 0
    for path in sorted((ROOT / "journeys").glob("*.yaml")):
        value = JourneyInput(plan=compile_file(path, ROOT / "templates").plan, customer_id="c")
        [payload], [theirs] = ours.to_payloads([value]), sdks.to_payloads([value])
        assert ours.from_payloads([payload], [JourneyInput]) == [value], path.name
        written, before = written + len(payload.data), before + len(theirs.data)
    assert written < 0.8 * before  # 29,168 against 39,814 bytes on 2026-12-07


def test_every_converter_in_the_process_shares_its_type_adapters():
    # The SDK makes a payload converter per workflow run: adapters must outlive it.
    [payload] = plain_data_converter.payload_converter.to_payloads([VALUES[0][0]])
    first, second = PayloadConverter(), PayloadConverter()
    first.from_payloads([payload], [JourneyInput])
    built = type_adapter.cache_info()
    assert second.from_payloads([payload], [JourneyInput]) == [VALUES[0][0]]
    assert type_adapter.cache_info().misses == built.misses
    assert type_adapter.cache_info().hits > built.hits


def test_a_sandboxs_copy_of_a_type_gets_no_shared_adapter():
    # As the workflow sandbox re-imports a workflow's module for a run: same name, new
    # class. Sharing its adapter would keep that run's modules alive.
    copy = dataclasses.make_dataclass("CustomerEvent", [("message_id", str), ("name", str)])
    copy.__module__ = "journeyman.contracts"

    @dataclasses.dataclass
    class Local:
        n: int

    assert process_wide(CustomerEvent) and process_wide(list[PathEntry] | None)
    assert process_wide(dict[str, Any]) and process_wide(datetime)
    assert not process_wide(copy) and not process_wide(list[copy])  # type: ignore[valid-type]
    assert not process_wide(Local)
    before = type_adapter.cache_info()
    [payload] = plain_data_converter.payload_converter.to_payloads([copy("m-1", "x")])
    assert PayloadConverter().from_payloads([payload], [copy]) == [copy("m-1", "x")]
    [payload] = plain_data_converter.payload_converter.to_payloads([Local(2)])
    assert PayloadConverter().from_payloads([payload], [Local]) == [Local(2)]
    assert type_adapter.cache_info().currsize == before.currsize


def test_an_adapter_first_needed_in_a_sandbox_finds_its_types_by_the_process_modules():
    # A workflow module passed through the sandbox (journeyman.wiring.WORKFLOW_MODULES)
    # imports nothing into the sandbox's module table, so on the run's thread
    # `sys.modules` holds none of the modules that define the input's types; pydantic
    # resolves a dataclass's annotations there. A hint no other test builds:
    hint = tuple[RunStatus, OperatorRequest]
    value = (
        RunStatus("j", "v1", "c1", "wait", None, False, [PathEntry(T0, "entry", "entered")]),
        OperatorRequest("ops", "stuck", "wait"),
    )
    [payload] = plain_data_converter.payload_converter.to_payloads([value])
    with _thread_local_sys_modules.applied(sys, "modules", {"sys": sys}):
        assert "journeyman.contracts" not in sys.modules  # as in such a sandbox
        decoded = PayloadConverter().from_payloads([payload], [hint])
    assert decoded == [value]


async def test_a_worker_whose_client_has_another_converter_is_refused(tmp_path: Path):
    # The SDK's own pydantic converter would build the input's adapter inside the
    # sandbox, where the passed-through workflow modules leave no journeyman module:
    # every run's first task would fail. build_worker says so at once instead.
    client = await Client.connect("127.0.0.1:1", data_converter=pydantic_data_converter, lazy=True)
    db = Database(f"sqlite:///{tmp_path / 'j.db'}")
    activities = journey_activities(
        db, Settings(_env_file=None, secret_key=SecretStr("s" * 32)), providers={}
    )
    try:
        with pytest.raises(ValueError, match=r"journeyman\.platform\.temporal\.connect"):
            build_worker(client, "tq", activities)
    finally:
        activities.close()


def test_an_unhashable_type_hint_still_decodes():
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
            return handler(int)

    [payload] = plain_data_converter.payload_converter.to_payloads([7])
    hint: Any = Unhashable()
    assert SharedAdapterJSONConverter().from_payload(payload, hint) == 7


# -- a journey's history --------------------------------------------------------------

WELCOME = """
id: welcome
name: Welcome
entry: {event: signed_up}
steps:
  - id: wait_profile
    wait_for: {event: profile_completed, timeout: 1d}
  - id: hello
    send: {template: welcome, channels: [email]}
"""
WELCOME_TEMPLATE = {
    "email.html": "{% block subject %}Welcome {{ trigger.properties.full_name }}{% endblock %}"
    "<p>Hi {{ trigger.properties.full_name }}</p>"
}
SECRETS = (b"ana@example.com", b"Ana Lovelace")


@pytest.fixture
async def encrypted_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=data_converter(Settings(JOURNEYMAN_PAYLOAD_KEY=b64(KEY))),
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in SEARCH_ATTRIBUTES
            },
        )
    )
    yield env
    await env.shutdown()


async def test_a_journey_history_keeps_no_personal_data_in_the_clear(
    encrypted_env: WorkflowEnvironment, db: Database, tmp_path: Path, task_queue: str
):
    async with Harness(encrypted_env, db, tmp_path, task_queue) as harness:
        harness.template("welcome", WELCOME_TEMPLATE)
        await harness.journey(WELCOME)
        harness.customer("c1", email="ana@example.com", first_name="Ana")
        await harness.event("signed_up", full_name="Ana Lovelace", email="ana@example.com")
        await harness.event("profile_completed", full_name="Ana Lovelace")
        result = await harness.result("welcome/c1")
        assert [entry.action for entry in result.path][-1] == "sent"
        [message] = harness.outbox("c1")
        assert "Ana Lovelace" in str(message.subject)

    plain_client = Client(
        encrypted_env.client.service_client,
        namespace=encrypted_env.client.namespace,
        data_converter=pydantic_data_converter,
    )
    history = await plain_client.get_workflow_handle("welcome/c1").fetch_history()
    payloads = [p for event in history.events for p in _payloads(event)]
    assert payloads, "the history holds payloads"
    for event in history.events:
        raw = event.SerializeToString()
        for secret in SECRETS:
            assert secret not in raw, f"{secret!r} in the clear in {event.event_type}"
    assert all(p.metadata["encoding"] == ENCODING for p in payloads)

    decoded = await CompressionCodec().decode(await EncryptionCodec(KEY).decode(payloads))
    for secret in SECRETS:
        assert any(secret in p.data for p in decoded), f"{secret!r} was in the run at all"
    with pytest.raises(KeyError, match="binary/encrypted"):
        # Without the key, the run's result cannot even be read.
        await plain_client.get_workflow_handle("welcome/c1").result()


def _payloads(message: Any) -> list[Payload]:
    """Every Payload inside a protobuf message, but those of search attributes: the
    server indexes them, so they stay readable (ids, never personal data)."""
    if isinstance(message, Payload):
        return [message]
    found: list[Payload] = []
    for field, value in message.ListFields():
        if field.message_type is None or field.name == "search_attributes":
            continue
        if hasattr(value, "ListFields"):
            items = [value]
        elif field.name == "details" and hasattr(value, "items"):
            # A marker's details: the SDK core writes its own bookkeeping there in plain
            # JSON (a patch id, a local activity's sequence number and type); only the
            # local activity's result is our data, and that goes through the codec.
            items = [v for k, v in value.items() if k == "result"]
        elif hasattr(value, "values"):
            items = list(value.values())
        else:
            items = list(value)
        for item in items:
            if hasattr(item, "ListFields"):
                found += _payloads(item)
    return found


# -- the codec endpoints --------------------------------------------------------------

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[Api]:
    test_api = Api(harness)
    try:
        yield test_api
    finally:
        await test_api.close()


def body(*payloads: Payload) -> dict[str, Any]:
    """`Payloads` as proto3 JSON, as the Temporal UI sends it."""
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


def parsed(answer: httpx.Response) -> list[Payload]:
    assert answer.status_code == 200, answer.text
    return [
        Payload(
            metadata={k: base64.b64decode(v) for k, v in p["metadata"].items()},
            data=base64.b64decode(p.get("data", "")),
        )
        for p in answer.json()["payloads"]
    ]


async def test_the_codec_endpoints_encode_and_decode_with_the_admin_token(api: Api):
    await api.start(payload_key=SecretStr(b64(KEY)))
    assert api.client is not None
    plain = payload('{"name": "Ana Lovelace"}')
    encoded = await api.client.post("/codec/encode", json=body(plain), headers=ADMIN)
    assert encoded.status_code == 200, encoded.text
    [sealed] = encoded.json()["payloads"]
    assert base64.b64decode(sealed["metadata"]["encoding"]) == ENCODING
    assert b"Ana Lovelace" not in base64.b64decode(sealed["data"])

    decoded = await api.client.post("/codec/decode", json=encoded.json(), headers=ADMIN)
    assert decoded.status_code == 200, decoded.text
    assert decoded.headers["content-type"] == "application/json"
    assert decoded.json() == body(plain)


async def test_the_codec_decodes_what_the_worker_encrypted(api: Api):
    await api.start(payload_key=SecretStr(f"{b64(KEY)},{b64(OLD_KEY)}"))
    assert api.client is not None
    [old] = await EncryptionCodec(OLD_KEY).encode([payload("before")])
    answer = await api.client.post("/codec/decode", json=body(old), headers=ADMIN)
    assert answer.json() == body(payload("before"))


async def test_the_codec_endpoints_require_the_admin_token(api: Api):
    await api.start(payload_key=SecretStr(b64(KEY)))
    assert api.client is not None
    for operation in ("decode", "encode"):
        answer = await api.client.post(f"/codec/{operation}", json=body(payload("x")))
        assert answer.status_code == 401
        assert "admin token" in answer.json()["error"]
    wrong = await api.client.post(
        "/codec/decode", json=body(payload("x")), headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401


async def test_the_codec_answers_the_ui_preflight(api: Api):
    await api.start(payload_key=SecretStr(b64(KEY)))
    assert api.client is not None
    preflight = await api.client.options(
        "/codec/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == UI
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert {"content-type", "x-namespace", "authorization"} <= {
        h.strip() for h in allowed.split(",")
    }
    # Answers, errors included, carry the header too, so the UI can read them.
    refused = await api.client.post("/codec/decode", json=body(), headers={"Origin": UI})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == UI


async def test_the_codec_refuses_a_preflight_from_another_origin(api: Api):
    await api.start(payload_key=SecretStr(b64(KEY)))
    assert api.client is not None
    preflight = await api.client.options(
        "/codec/decode",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


async def test_without_a_payload_key_the_codec_still_decompresses(api: Api):
    """Plaintext payloads are compressed too: the UI needs the codec to read the large
    ones; encoding compresses what is large enough and encrypts nothing."""
    await api.start()
    assert api.client is not None
    large = payload(LARGE)
    [packed] = await CompressionCodec().encode([large])
    answer = await api.client.post("/codec/decode", json=body(packed, payload("x")), headers=ADMIN)
    assert answer.status_code == 200
    assert parsed(answer) == [large, payload("x")]
    answer = await api.client.post("/codec/encode", json=body(large), headers=ADMIN)
    [encoded] = parsed(answer)
    assert encoded.metadata["encoding"] == ZLIB_ENCODING
    assert await CompressionCodec().decode([encoded]) == [large]


async def test_the_codec_refuses_payloads_that_decompress_to_too_much_in_all(api: Api):
    """Each payload may grow to 8 MiB; a body of small bombs may not grow without end."""
    await api.start()
    assert api.client is not None
    bomb = Payload(
        metadata={"encoding": ZLIB_ENCODING},
        data=zlib.compress(payload("0" * (7 * 1024 * 1024)).SerializeToString(), 9),
    )
    answer = await api.client.post("/codec/decode", json=body(*[bomb] * 6), headers=ADMIN)
    assert answer.status_code == 413
    assert "decode to more than" in answer.json()["error"]


async def test_the_codec_says_when_a_compressed_payload_does_not_decompress(api: Api):
    await api.start()
    assert api.client is not None
    broken = Payload(metadata={"encoding": ZLIB_ENCODING}, data=b"not zlib")
    answer = await api.client.post("/codec/decode", json=body(broken), headers=ADMIN)
    assert answer.status_code == 400
    assert "not zlib" in answer.json()["error"]


async def test_the_codec_rejects_a_body_that_is_not_payloads(api: Api):
    await api.start(payload_key=SecretStr(b64(KEY)))
    assert api.client is not None
    answer = await api.client.post("/codec/decode", json={"payload": []}, headers=ADMIN)
    assert answer.status_code == 400
    assert answer.json()["detail"][0]["field"] == "body"


async def test_the_codec_says_when_a_payload_does_not_decrypt(api: Api):
    await api.start(payload_key=SecretStr(b64(KEY)))
    assert api.client is not None
    [foreign] = await EncryptionCodec(OLD_KEY).encode([payload("x")])
    answer = await api.client.post("/codec/decode", json=body(foreign), headers=ADMIN)
    assert answer.status_code == 400
    assert key_id(OLD_KEY) in answer.json()["error"]


async def test_dev_opens_the_codec_to_the_local_ui_only(api: Api):
    app = await api.start(payload_key=SecretStr(b64(KEY)))
    allow_ui(app, open_on_loopback=True)
    assert api.client is not None
    [sealed] = await EncryptionCodec(KEY).encode([payload("x")])
    local = await api.client.post("/codec/decode", json=body(sealed), headers={"Origin": UI})
    assert local.status_code == 200
    assert local.json() == body(payload("x"))
    # Another web page in the same browser is not the UI.
    page = await api.client.post(
        "/codec/decode", json=body(sealed), headers={"Origin": "https://evil.example"}
    )
    assert page.status_code == 401
    remote_transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=remote_transport, base_url="http://x") as remote:
        assert (await remote.post("/codec/decode", json=body(sealed))).status_code == 401
        with_token = await remote.post("/codec/decode", json=body(sealed), headers=ADMIN)
        assert with_token.status_code == 200


def test_the_kept_dev_key_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from journeyman.platform import devserver

    monkeypatch.chdir(tmp_path)
    for name in ("JOURNEYMAN_PAYLOAD_KEY", "JOURNEYMAN_WRITE_KEYS", "JOURNEYMAN_ADMIN_TOKEN"):
        # Set, then removed: monkeypatch restores what `credentials` exports.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    settings = devserver.credentials(Settings(_env_file=None))
    kept = tmp_path / devserver.PAYLOAD_KEY_FILE
    assert settings.payload_key is not None
    assert kept.read_text().strip() == settings.payload_key.get_secret_value()
    assert kept.stat().st_mode & 0o777 == 0o600
    assert os.environ["JOURNEYMAN_PAYLOAD_KEY"] == settings.payload_key.get_secret_value()
    monkeypatch.delenv("JOURNEYMAN_PAYLOAD_KEY")
    again = devserver.credentials(Settings(_env_file=None, JOURNEYMAN_WRITE_KEYS="wk"))
    assert again.payload_key == settings.payload_key


def test_dev_refuses_a_bad_payload_key(monkeypatch: pytest.MonkeyPatch):
    from journeyman.platform import devserver

    with pytest.raises(devserver.DevError, match="JOURNEYMAN_PAYLOAD_KEY"):
        devserver.credentials(
            Settings(
                _env_file=None,
                JOURNEYMAN_WRITE_KEYS="wk",
                JOURNEYMAN_ADMIN_TOKEN="adm",
                JOURNEYMAN_PAYLOAD_KEY="short",
            )
        )


def test_dev_points_the_ui_at_the_codec():
    from journeyman.platform import devtemporal

    command = devtemporal.temporal_command(
        "temporal", Settings(_env_file=None), 7233, 8233, "http://localhost:8000/codec"
    )
    assert command[command.index("--ui-codec-endpoint") + 1] == "http://localhost:8000/codec"


def test_a_start_input_reads_across_versions_of_journey_input():
    """`JourneyInput.era` (workflows/eras.py) in a mixed deployment: an input recorded
    before it reads as era 0, and a worker whose `JourneyInput` lacks a field (one from
    before eras reading an era 1 start) ignores it rather than failing, so it runs the run
    as one from before (docs/versioning.md, *Eras*)."""
    converter = plain_data_converter.payload_converter
    plan = compile_file(ROOT / "journeys" / "welcome_series.yaml", ROOT / "templates").plan
    [payload] = converter.to_payloads([JourneyInput(plan=plan, customer_id="c1", era=1)])
    recorded = json.loads(payload.data)
    assert recorded["era"] == 1
    before = {k: v for k, v in recorded.items() if k != "era"}
    payload.data = json.dumps(before).encode()
    [read] = converter.from_payloads([payload], [JourneyInput])
    assert (read.era, read.customer_id) == (0, "c1")
    payload.data = json.dumps({**recorded, "a_field_of_a_later_version": 2}).encode()
    [read] = converter.from_payloads([payload], [JourneyInput])
    assert (read.era, read.customer_id) == (1, "c1")


def test_dev_says_how_payloads_are_written():
    from journeyman.platform.devserver import _setup_lines

    keyed = Settings(_env_file=None, payload_key=SecretStr(b64(KEY)))
    [line] = [x for x in _setup_lines(keyed, None) if "Payloads:" in x]
    assert "encrypted (JOURNEYMAN_PAYLOAD_KEY), compressed from 512 bytes" in line
    plain = Settings(_env_file=None, payload_compression=False)
    [line] = [x for x in _setup_lines(plain, None) if "Payloads:" in x]
    assert "not encrypted" in line and "not compressed" in line
