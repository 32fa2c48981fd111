"""Temporal payloads encrypted with AES-256-GCM, so histories keep no personal data in
the clear.

Event properties and profiles travel in workflow inputs, signals, activity inputs and
results; Temporal stores all of them in histories. With JOURNEYMAN_PAYLOAD_KEY set,
every payload leaves the process as

    metadata: {encoding: binary/encrypted, encryption-key-id: <first 8 hex of sha256(key)>}
    data:     12-byte random nonce + AES-GCM ciphertext of the original Payload, serialized

the layout of Temporal's encryption samples, so their codec servers and ours read the
same bytes. Failure messages and stack traces go into the encrypted attributes too: a
validation error quotes the input it rejected.

The setting holds one or more base64 keys separated by commas: the first encrypts,
every one decrypts, so a key is rotated by putting the new one first and dropping the
old one once no running workflow's history still needs it. Payloads that are not
marked encrypted pass through decoding unchanged: histories written before encryption
was turned on still read.

Values are converted as `temporalio.contrib.pydantic` converts them (the same JSON),
by `PayloadConverter`, whose pydantic `TypeAdapter`s for the process's own types are
shared by the whole process: the SDK makes a payload converter for every workflow
run, and its own adapter cache goes with it, so each run built a schema anew for every
type it decoded (its input with the whole `Plan`, each signal's and activity's).

Before encryption, a payload of `COMPRESS_FROM` bytes or more is compressed, in the
format of the Go SDK's `converter.NewZlibCodec` (metadata `encoding: binary/zlib`, data
the zlib stream of the serialized original payload), when that saves at least a tenth:
a journey's start input and a send's input shrink to about 40%, while the small ones
(summaries, most results) stay readable as they are. JOURNEYMAN_PAYLOAD_COMPRESSION=
false stops compressing; compressed payloads still read, with or without it.

One difference in what is written: a dataclass of the process's own is written by its
type's adapter without the fields that hold their default (`exclude_defaults`), as
protobuf leaves them off the wire; reading one fills them in again. A journey's start
input (its whole plan) is about a quarter smaller, a send's input an eighth: every
history byte is written, read and cached by the Temporal server. Payloads written
before, with every field, still read the same. The rule this brings
(docs/versioning.md): a contract field's default never changes, since a payload
without the field means "the default" to whichever version reads it.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import dataclasses
import functools
import hashlib
import os
import sys
import typing
import zlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
)

from journeyman.settings import Settings

ENCODING = b"binary/encrypted"
ZLIB_ENCODING = b"binary/zlib"  # as the Go SDK's converter.NewZlibCodec writes it
COMPRESS_FROM = 512  # bytes of a serialized payload
ZLIB_LEVEL = 6
# Temporal refuses payloads over 2 MiB by default (the blob size limit); what grows past
# this from a compressed one is no payload of ours.
DECOMPRESSED_LIMIT = 8 * 1024 * 1024
KEY_ID = "encryption-key-id"
KEY_SETTING = "JOURNEYMAN_PAYLOAD_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
# Distinct type hints a process decodes: a few dozen (the workflows' inputs, signals,
# updates and activity results); the bound only guards against growth.
TYPE_ADAPTERS_KEPT = 1024


class PayloadDecryptionError(ValueError):
    """An encrypted payload that none of the configured keys opens."""


def key_id(key: bytes) -> str:
    """The key's name in payload metadata: short, and says nothing about the key."""
    return hashlib.sha256(key).hexdigest()[:8]


def new_key() -> str:
    """A fresh key in the form the setting takes (base64 of 32 random bytes)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def parse_keys(setting: str) -> list[bytes]:
    """The keys of JOURNEYMAN_PAYLOAD_KEY, first (encrypting) key first.

    Raises ValueError naming the setting when an entry is not base64 of 32 bytes.
    """
    entries = [entry.strip() for entry in setting.split(",") if entry.strip()]
    if not entries:
        raise ValueError(f"{KEY_SETTING} is empty: {_how_to_make_one()}")
    keys = []
    for position, entry in enumerate(entries, start=1):
        try:
            key = base64.b64decode(entry, validate=True)
        except binascii.Error:
            raise ValueError(
                f"{KEY_SETTING}: key {position} is not base64: {_how_to_make_one()}"
            ) from None
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"{KEY_SETTING}: key {position} is {len(key)} bytes, not {KEY_BYTES}: "
                + _how_to_make_one()
            )
        keys.append(key)
    return keys


def _how_to_make_one() -> str:
    return (
        "each key is base64 of 32 random bytes, like the output of "
        '`python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"`'
    )


class EncryptionCodec(PayloadCodec):
    """Encrypts with `key`; decrypts with `key` or any of `old_keys`."""

    def __init__(self, key: bytes, old_keys: Sequence[bytes] = ()) -> None:
        super().__init__()
        self.key_id = key_id(key)
        self._encryptor = AESGCM(key)
        self._decryptors = {key_id(k): AESGCM(k) for k in (*old_keys, key)}

    @classmethod
    def from_setting(cls, setting: str) -> EncryptionCodec:
        """A codec for a JOURNEYMAN_PAYLOAD_KEY value (comma-separated base64 keys)."""
        first, *older = parse_keys(setting)
        return cls(first, older)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._encryptor.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        found = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        decryptor = self._decryptors.get(found)
        if decryptor is None:
            known = ", ".join(sorted(self._decryptors))
            raise PayloadDecryptionError(
                f"payload encrypted with key {found or '(no id)'}, which is not in "
                f"{KEY_SETTING} (keys {known}): add that key after the current one"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = decryptor.decrypt(nonce, sealed, None)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload encrypted with key {found} failed authentication: "
                "it was altered or truncated"
            ) from None
        return Payload.FromString(plain)


class PayloadDecompressionError(ValueError):
    """A `binary/zlib` payload that is not a whole zlib stream of a payload, or that
    would grow past `DECOMPRESSED_LIMIT`."""


class CompressionCodec(PayloadCodec):
    """zlib for payloads of `COMPRESS_FROM` bytes and more (module docstring); reads
    compressed payloads whether or not it `compresses` new ones."""

    def __init__(self, compresses: bool = True) -> None:
        super().__init__()
        self.compresses = compresses

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.compress(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decompress(payload) for payload in payloads]

    def compress(self, payload: Payload) -> Payload:
        if not self.compresses:
            return payload
        raw = payload.SerializeToString()
        if len(raw) < COMPRESS_FROM:
            return payload
        packed = zlib.compress(raw, ZLIB_LEVEL)
        if len(packed) > 0.9 * len(raw):
            return payload  # hardly compressible (already encrypted, say): left as is
        return Payload(metadata={"encoding": ZLIB_ENCODING}, data=packed)

    def decompress(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ZLIB_ENCODING:
            return payload
        stream = zlib.decompressobj()
        try:
            raw = stream.decompress(payload.data, DECOMPRESSED_LIMIT)
        except zlib.error as exc:
            raise PayloadDecompressionError(f"compressed payload is not zlib: {exc}") from None
        if stream.unconsumed_tail:
            raise PayloadDecompressionError(
                f"compressed payload grows past {DECOMPRESSED_LIMIT:,} bytes: refused"
            )
        if not stream.eof:
            raise PayloadDecompressionError("compressed payload is truncated")
        try:
            return Payload.FromString(raw)
        except DecodeError:
            raise PayloadDecompressionError("compressed payload does not hold a payload") from None


class CodecChain(PayloadCodec):
    """Codecs applied in order when encoding, in reverse order when decoding."""

    def __init__(self, *codecs: PayloadCodec) -> None:
        super().__init__()
        self.codecs = codecs

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        result = list(payloads)
        for codec in self.codecs:
            result = await codec.encode(result)
        return result

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        result = list(payloads)
        for codec in reversed(self.codecs):
            result = await codec.decode(result)
        return result


class PlaintextRefused(ValueError):
    """`api` or `worker` started without a payload key and without asking for plaintext."""


def require_payload_key(settings: Settings, command: str) -> None:
    """Refuse to run `command` (`api`, `worker`) with Temporal payloads in clear unless
    JOURNEYMAN_PAYLOAD_PLAINTEXT=true asks for it: histories hold event properties,
    which an erasure cannot reach once written in clear."""
    if settings.payload_key is not None or settings.payload_plaintext:
        return
    raise PlaintextRefused(
        f"JOURNEYMAN_PAYLOAD_KEY is not set: the {command} would have Temporal store event "
        "properties in clear, where an erasure cannot reach them. Set it ("
        f"{_how_to_make_one()}), the same in every api and worker process, or set "
        "JOURNEYMAN_PAYLOAD_PLAINTEXT=true to run without encryption (docs/encryption.md)"
    )


def encryption_codec(settings: Settings) -> EncryptionCodec | None:
    """The encryption of the settings; None when JOURNEYMAN_PAYLOAD_KEY is unset."""
    if settings.payload_key is None:
        return None
    return EncryptionCodec.from_setting(settings.payload_key.get_secret_value())


def payload_codec(settings: Settings) -> PayloadCodec:
    """The codec of the settings: compression (which also reads what an earlier setting
    compressed), then encryption when JOURNEYMAN_PAYLOAD_KEY is set."""
    compression = CompressionCodec(compresses=settings.payload_compression)
    encryption = encryption_codec(settings)
    return compression if encryption is None else CodecChain(compression, encryption)


@functools.lru_cache(maxsize=TYPE_ADAPTERS_KEPT)
def type_adapter(type_hint: Any) -> TypeAdapter[Any]:
    """The process's adapter for a type hint of its own (`process_wide`), built on
    first use, on a thread of its own: pydantic resolves a dataclass's annotations in
    `sys.modules`, which on a workflow's thread is its sandbox's module table, and that
    holds only what the sandbox imported (a workflow module passed through imports
    nothing there: journeyman.wiring.WORKFLOW_MODULES). On another thread it is the
    process's, where every type of the process's own is found by its module."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="type-adapter") as pool:
        return pool.submit(TypeAdapter, type_hint).result()


# Python's module table, taken at import, outside any workflow sandbox: while
# a sandbox runs, `sys.modules` reads that sandbox's modules on its thread.
_MODULES: dict[str, ModuleType] | None = sys.modules if type(sys.modules) is dict else None
_FORMS = (Any, None, type(None), Ellipsis, typing.Union, typing.Literal)


def process_wide(type_hint: Any) -> bool:
    """Whether `type_hint` and every type in it are the process's own, the objects
    their modules hold by name: not a workflow sandbox's copy. The sandbox imports a
    workflow's modules anew for every run (all but the pass-through ones, such as
    journeyman.contracts), and an adapter kept for a type of theirs would keep that run's
    modules alive with it."""
    origin = typing.get_origin(type_hint)
    if origin is not None:
        return process_wide(origin) and all(process_wide(a) for a in typing.get_args(type_hint))
    if any(type_hint is form for form in _FORMS) or isinstance(type_hint, str | int | bytes):
        return True  # forms and Literal values
    if not isinstance(type_hint, type) or _MODULES is None:
        return False
    found: Any = _MODULES.get(type_hint.__module__)
    for name in type_hint.__qualname__.split("."):
        found = getattr(found, name, None)
    return found is type_hint


class SharedAdapterJSONConverter(PydanticJSONPlainPayloadConverter):
    """`json/plain` payloads exactly as the SDK's pydantic converter writes and reads
    them; types of the process's own are decoded with its shared adapters
    (`type_adapter`), which outlive this converter, others as the SDK does, with a
    cache that lives as long as the converter (a workflow run's, in a worker)."""

    def to_payload(self, value: Any) -> Payload | None:
        """A dataclass of the process's own without its fields at their default (module
        docstring); anything else as the SDK writes it."""
        kind = type(value)
        if dataclasses.is_dataclass(kind) and process_wide(kind):
            try:
                adapter = type_adapter(kind)
            except TypeError:
                return super().to_payload(value)
            # warnings=False: a value off its annotation (an int in a float field) is
            # written as it is, as the SDK's inferred serialization would.
            data = adapter.dump_json(value, exclude_defaults=True, warnings=False)
            return Payload(metadata={"encoding": self.encoding.encode()}, data=data)
        return super().to_payload(value)

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        hint: Any = Any if type_hint is None else type_hint
        if not process_wide(hint):
            return super().from_payload(payload, type_hint)
        try:
            adapter = type_adapter(hint)
        except TypeError:
            # Unhashable after all (a Literal of a list, say), or not a type pydantic
            # knows: the SDK's way builds it each time, or says why it cannot.
            return super().from_payload(payload, type_hint)
        return adapter.validate_json(payload.data)


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default converters with `json/plain` by pydantic, as
    `temporalio.contrib.pydantic.PydanticPayloadConverter`, adapters shared."""

    def __init__(self) -> None:
        json_converter = SharedAdapterJSONConverter()
        super().__init__(
            *(
                json_converter if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


# The converter of every client and worker of ours; payloads as the SDK's pydantic one.
plain_data_converter = DataConverter(payload_converter_class=PayloadConverter)


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic values, compressed (`payload_codec`); encrypted, failures included, when a
    payload key is set."""
    codec = payload_codec(settings)
    if settings.payload_key is None:
        return dataclasses.replace(plain_data_converter, payload_codec=codec)
    return dataclasses.replace(
        plain_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
