"""What `journeyman dev` leaves in `.journeyman/` for the other commands of the project.

`dev` keeps its payload key (`payload_key`), write key and admin token there, and while
it runs, where it listens (`dev.json`: the Temporal address and the API's URL, with its
process id). Every other command run from the same folder finds them by itself
(`apply`): a setting given in the environment or `.env` always wins, and an address is
only taken from a `dev` that is still running.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from journeyman.platform.private import write_private
from journeyman.settings import STATE_DIR, Settings, get_settings

STATE_FILE = STATE_DIR / "dev.json"
PAYLOAD_KEY_FILE = STATE_DIR / "payload_key"


def write(temporal_address: str, api_url: str | None) -> None:
    """Record where this `dev` listens (removed again by `clear` when it stops)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state = {"pid": os.getpid(), "temporal_address": temporal_address, "api_url": api_url}
    temporary = STATE_FILE.with_suffix(".tmp")
    write_private(temporary, json.dumps(state) + "\n")
    temporary.replace(STATE_FILE)


def clear() -> None:
    """Forget the addresses of this process's `dev` (not another's)."""
    state = read()
    if state is not None and state.get("pid") == os.getpid():
        STATE_FILE.unlink(missing_ok=True)


def read() -> dict[str, Any] | None:
    """The running `dev`'s addresses; None when none runs from this folder."""
    try:
        state = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not _alive(state.get("pid")):
        return None
    return state


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kept(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value or None


def apply() -> dict[str, str | None]:
    """Settings not given in the environment or `.env`, taken from what `dev` keeps:
    the payload key (so histories `dev` encrypted read here) and the Temporal address
    of a running `dev`. Exported, so `get_settings()` and child code see them; returns
    what the environment held before, for `restore`."""
    settings: Settings = get_settings()
    found: dict[str, str] = {}
    if settings.payload_key is None and (key := _kept(PAYLOAD_KEY_FILE)):
        found["JOURNEYMAN_PAYLOAD_KEY"] = key
    if settings.temporal_address is None and (state := read()):
        address = state.get("temporal_address")
        if isinstance(address, str) and address:
            found["TEMPORAL_ADDRESS"] = address
    before = {name: os.environ.get(name) for name in found}
    if found:
        os.environ.update(found)
        get_settings.cache_clear()
    return before


def restore(before: dict[str, str | None]) -> None:
    """The environment as `apply` found it (a command run in-process, as tests do)."""
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if before:
        get_settings.cache_clear()


def missing_key_message() -> str:
    """One line for a payload that cannot be read here."""
    return (
        "this data is encrypted and no key here opens it: set JOURNEYMAN_PAYLOAD_KEY to the "
        "key the workers use (next to `journeyman dev`, run the command from the project "
        "folder: it finds .journeyman/payload_key)"
    )


def is_undecodable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a payload no key here could decode."""
    from journeyman.platform.codec import PayloadDecryptionError

    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, PayloadDecryptionError):
            return True
        if isinstance(seen, KeyError) and "binary/encrypted" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
