"""`journeyman api` starts and accepts events while Temporal is down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.waiting import eventually_sync

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_api_accepts_events_while_temporal_is_down(tmp_path: Path):
    port, dead = _free_port(), _free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{dead}",
        "DATABASE_URL": f"sqlite:///{tmp_path}/api.db",
        "JOURNEYS_DIR": str(REPO / "journeys"),
        "TEMPLATES_DIR": str(REPO / "templates"),
        "JOURNEYMAN_WRITE_KEYS": "wk_test",
        "JOURNEYMAN_ADMIN_TOKEN": "adm_test",
        "JOURNEYMAN_PAYLOAD_PLAINTEXT": "true",
    }
    journeyman = Path(sys.executable).with_name("journeyman")
    process = subprocess.Popen(
        [str(journeyman), "api", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually_sync(healthy, what="the API starts", every=0.2)
        accepted = httpx.post(
            f"{base}/v1/track",
            auth=("wk_test", ""),
            json={
                "userId": "c1",
                "event": "cart_abandoned",
                "messageId": "m-1",
                "properties": {"cart_id": "k1", "cart_total": 40},
            },
            timeout=10,
        )
        assert accepted.status_code == 200, accepted.text
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "temporal" in ready.text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
