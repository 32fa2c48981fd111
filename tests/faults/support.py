"""What the fault tests share: a dev server they own, worker subprocesses, waiting.

Each fault test breaks something real (a process killed, a port closed, a provider
answering errors) and then checks that nothing was lost and nothing went out twice.
Every wait has a deadline, so a fault the product does not survive fails the test
instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from temporalio.client import Client

from journeyman.names import SEARCH_ATTRIBUTE_FLAGS
from journeyman.platform.binaries import find_binary
from tests.processes import READING_CONVERTER, free_port
from tests.waiting import eventually

__all__ = ["eventually", "free_port"]

EMAIL_TEMPLATE = "{% block subject %}Hello {{ profile.id }}{% endblock %}<p>Hi</p>"


def write_journey(root: Path, text: str, templates: tuple[str, ...] = ("hello",)) -> None:
    """`text` as `root/journeys/<id>.yaml`, with a one-file email template per name."""
    journeys, template_root = root / "journeys", root / "templates"
    journeys.mkdir(exist_ok=True)
    text = textwrap.dedent(text).strip() + "\n"
    journey_id = text.split("id: ", 1)[1].split("\n", 1)[0]
    (journeys / f"{journey_id}.yaml").write_text(text)
    for name in templates:
        folder = template_root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "email.html").write_text(EMAIL_TEMPLATE)


# -- the Temporal dev server --------------------------------------------------------


class DevServer:
    """`temporal server start-dev` on a file database and fixed port, stoppable and
    restartable on the same file (`journeyman dev` runs it the same way)."""

    def __init__(self, db_file: Path, port: int | None = None) -> None:
        binary = find_binary("temporal")
        assert binary is not None, "the temporal binary is not installed: run `make test`"
        self.binary = binary
        self.db_file = db_file
        self.port = port or free_port()
        self.ui_port = free_port()
        self.log_path = db_file.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [
            self.binary,
            "server",
            "start-dev",
            *("--db-filename", str(self.db_file)),
            *("--ip", "127.0.0.1"),
            *("--port", str(self.port)),
            *("--ui-port", str(self.ui_port)),
            "--headless",
            *("--log-level", "error"),
        ]
        for flag in SEARCH_ATTRIBUTE_FLAGS:
            command += ["--search-attribute", flag]
        return command

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def ready(self, within: float = 30) -> Client:
        """A client once the server answers (and the process is still alive)."""

        async def answer() -> Client | None:
            assert self.process is not None and self.process.poll() is None, (
                f"the dev server exited:\n{self.log_path.read_text(errors='replace')[-2000:]}"
            )
            try:
                return await asyncio.wait_for(self.connect(), timeout=5)
            except (RuntimeError, TimeoutError):
                return None

        return await eventually(
            answer,
            what="the dev server answers",
            within=within,
            every=0.2,
            detail=lambda: self.log_path.read_text(errors="replace")[-2000:],
        )

    async def connect(self, *, lazy: bool = False) -> Client:
        """A client with the product's data converter (no payload key, compressed payloads
        read), as `journeyman` connects: the worker's sandbox passes the workflow modules
        through, so a run decodes its input with the converter's shared adapters, built
        outside it."""
        return await Client.connect(self.address, data_converter=READING_CONVERTER, lazy=lazy)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, as an operator stops it; SIGKILL only if it will not go."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@contextlib.contextmanager
def dev_server(db_file: Path, port: int | None = None) -> Iterator[DevServer]:
    server = DevServer(db_file, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- worker subprocesses ------------------------------------------------------------


class WorkerProcess:
    """`journeyman worker` as operators run it, with its output kept in a file."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        journeyman = shutil.which("journeyman", path=str(Path(sys.executable).parent))
        assert journeyman is not None, "the journeyman script is not installed in the venv"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            [journeyman, "worker"],
            env=env,
            cwd=cwd,  # no stray `.env` of the repository is read
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def check_alive(self) -> None:
        assert self.process.poll() is None, (
            f"the worker exited with status {self.process.returncode}:\n{self.log()}"
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no activity completion, no goodbye to the server."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def worker_env(**values: str) -> dict[str, str]:
    """The environment for a worker subprocess: ours without any Temporal or Journeyman
    settings that could leak in, plus `values` (names as operators set them)."""
    prefixes = ("TEMPORAL_", "JOURNEYMAN_", "SENDGRID_", "TWILIO_", "FCM_", "EMAIL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("DATABASE_URL", None)
    return env | {"JOURNEYMAN_PAYLOAD_PLAINTEXT": "true"} | values
