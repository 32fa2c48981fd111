"""Webhook secrets: `{{ secret('CRM_TOKEN') }}` in a webhook's url, headers or body.

Contract:
- A journey names a secret; its value lives in the worker's environment (or its `.env`,
  the environment winning), is read by the webhook activity only, and is never written
  into a journey file, a workflow input or result, the step log or a log line.
- A name is `[A-Z][A-Z0-9_]*`. The service's own settings (`JOURNEYMAN_*`, the database
  URL, provider keys: every variable `Settings` reads) are not secrets a journey may
  read: a journey file must not be able to send the service's keys to a URL it names.
- Every value read is remembered in this process, so that `mask` (used by the webhook
  activity's results and errors, by `journeyman.platform.logs.redact` and by `simulate`) can
  replace it with `[secret NAME]` wherever it would otherwise appear.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,99}$")
RESERVED_PREFIX = "JOURNEYMAN_"
# Values shorter than this are not masked in free text: "1" would mask every digit.
MIN_MASKED = 4

_known: dict[str, str] = {}  # value -> name, of every secret read in this process
_lock = threading.Lock()


class SecretError(LookupError):
    """A secret a journey names that cannot be given: unset, or not a secret at all."""


@functools.cache
def _service_names() -> frozenset[str]:
    """Every environment variable the service's own settings read."""
    from journeyman.settings import Settings

    names = set()
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        names.add(str(alias).upper() if isinstance(alias, str) else field_name.upper())
    return frozenset(names)


def check_name(name: object) -> str | None:
    """Why `name` cannot be a secret's name, or None when it can."""
    if not isinstance(name, str) or not SECRET_NAME.match(name):
        return f"a secret's name is written in capitals, digits and _ (CRM_TOKEN), got {name!r}"
    if name.startswith(RESERVED_PREFIX) or name in _service_names():
        return f"{name} is one of the service's own settings, not a secret a journey may read"
    return None


def read_secret(
    name: str, environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> str:
    """The secret's value from the environment (else the `.env` file); SecretError when
    it is not set or the name is refused. The value is remembered for `mask`."""
    problem = check_name(name)
    if problem:
        raise SecretError(problem)
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if value is None:
        value = _dotenv(env_file or Path(".env")).get(name)
    if value is None or value == "":
        raise SecretError(f"secret {name} is not set in the worker's environment")
    remember(name, value)
    return value


def remember(name: str, value: str) -> None:
    with _lock:
        _known[value] = name


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `read_secret(name)` would find a value (without remembering it)."""
    if check_name(name):
        return False
    environ = os.environ if environ is None else environ
    return bool(environ.get(name) or _dotenv(Path(".env")).get(name))


def mask(text: str, values: Mapping[str, str] | None = None) -> str:
    """`text` with every secret value read in this process (or given, value -> name)
    replaced by `[secret NAME]`, longest first so that one value inside another is
    masked whole."""
    with _lock:
        known = dict(_known)
    known.update(values or {})
    for value in sorted(known, key=len, reverse=True):
        if len(value) >= MIN_MASKED and value in text:
            text = text.replace(value, f"[secret {known[value]}]")
    return text


def placeholder(name: str) -> str:
    """What `simulate` gives for a secret instead of its value: never the value."""
    problem = check_name(name)
    if problem:
        raise SecretError(problem)
    return f"[secret {name}]"


SecretReader = Callable[[str], str]
