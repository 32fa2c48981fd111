"""Processes a test starts as a user would: a command configured by the environment alone,
its output in a file, stopped (then killed) when the test ends, and free ports for it.

A `journeyman dev` runs its Temporal dev server in a session of its own, so killing `dev`
outright leaves that server running: closing a process interrupts it first (dev stops
its server on SIGINT), and after a kill stops the server `.journeyman/temporal.pid` of
its folder names, if that pid is still the folder's server."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from journeyman.platform.codec import CompressionCodec, plain_data_converter
from journeyman.platform.devtemporal import stop_orphaned_temporal
from journeyman.settings import Settings
from tests.waiting import eventually

# The converter of the suite's clients: the product's, reading the payloads processes
# compressed (they compress as shipped, JOURNEYMAN_PAYLOAD_COMPRESSION on), writing plain.
READING_CONVERTER = dataclasses.replace(
    plain_data_converter, payload_codec=CompressionCodec(compresses=False)
)


def clean_environment(**values: str) -> dict[str, str]:
    """Ours without anything Journeyman's settings read (so no setting of the shell
    leaks into a process under test), plus `values`, named as operators set them."""
    names = {
        str(field.validation_alias or name).upper() for name, field in Settings.model_fields.items()
    }
    prefixes = ("TEMPORAL_", "JOURNEYMAN_", "SENDGRID_", "TWILIO_", "FCM_", "EMAIL_")
    kept = {
        k: v for k, v in os.environ.items() if k.upper() not in names and not k.startswith(prefixes)
    }
    # The suite's processes keep Temporal payloads unencrypted, readable by its clients'
    # `READING_CONVERTER`; a test of encryption sets JOURNEYMAN_PAYLOAD_KEY (which wins)
    # or removes this.
    return kept | {"JOURNEYMAN_PAYLOAD_PLAINTEXT": "true"} | values


# How long `close` lets an interrupted process stop on its own (dev stops its worker,
# letting activities finish, then its Temporal server) before it kills it.
CLOSE_WITHIN = 30.0


class Process:
    """A command with its output in a file, stopped (then killed) when the test ends."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.cwd = cwd
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def detail(self) -> str:
        state = "running" if self.alive() else f"exited with {self.process.returncode}"
        return f"{self.process.args} {state}; its output:\n{self.output()[-3000:]}"

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig` and wait for the process to exit; its exit status."""
        self.process.send_signal(sig)
        await eventually(lambda: not self.alive(), what="the process exits", detail=self.detail)
        return self.process.wait()

    def close(self, within: float = CLOSE_WITHIN) -> None:
        """Interrupt the process and give it `within` s to exit, then kill it; then stop a
        Temporal dev server it left running (a killed `journeyman dev` cannot)."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        stop_orphaned_temporal(self.cwd)
        self._log.close()


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[Process]:
    process = Process(command, env, cwd, log)
    try:
        yield process
    finally:
        process.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
