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
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from journeyman.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
KEY_SETTING = "JOURNEYMAN_PAYLOAD_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12


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


def payload_codec(settings: Settings) -> EncryptionCodec | None:
    """The codec of the settings; None when JOURNEYMAN_PAYLOAD_KEY is unset."""
    if settings.payload_key is None:
        return None
    return EncryptionCodec.from_setting(settings.payload_key.get_secret_value())


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic values; encrypted, failures included, when a payload key is set."""
    codec = payload_codec(settings)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
