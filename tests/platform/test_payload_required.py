"""Encryption by default: `journeyman api`, `journeyman worker` and `python worker.py`
refuse to start without JOURNEYMAN_PAYLOAD_KEY unless plaintext is asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from journeyman.platform.codec import PlaintextRefused, new_key, require_payload_key
from journeyman.settings import Settings
from tests.processes import clean_environment, free_port

REPO = Path(__file__).resolve().parents[2]
JOURNEYMAN = str(Path(sys.executable).with_name("journeyman"))


def without_plaintext(tmp_path: Path, **values: str) -> dict[str, str]:
    env = clean_environment(
        DATABASE_URL=f"sqlite:///{tmp_path}/journeyman.db",
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # nothing there: never reached
        JOURNEYMAN_ADMIN_TOKEN="adm_test",
        JOURNEYMAN_WRITE_KEYS="wk_test",
        JOURNEYS_DIR=str(REPO / "journeys"),
        TEMPLATES_DIR=str(REPO / "templates"),
        **values,
    )
    env.pop("JOURNEYMAN_PAYLOAD_PLAINTEXT", None)
    return env


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        [JOURNEYMAN, "api", "--port", "0"],
        [JOURNEYMAN, "worker"],
        [sys.executable, str(REPO / "worker.py")],
    ],
    ids=["journeyman api", "journeyman worker", "python worker.py"],
)
def test_api_and_worker_refuse_to_start_without_a_payload_key(tmp_path: Path, command):
    done = subprocess.run(
        command,
        env=without_plaintext(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "JOURNEYMAN_PAYLOAD_KEY is not set" in said, said
    assert "JOURNEYMAN_PAYLOAD_PLAINTEXT=true" in said
    assert "Traceback" not in said
    # It stopped before touching anything: no database was made.
    assert not (tmp_path / "journeyman.db").exists()


def test_a_key_or_an_explicit_plaintext_setting_lets_them_start():
    with pytest.raises(PlaintextRefused):
        require_payload_key(Settings(_env_file=None), "worker")
    require_payload_key(Settings(_env_file=None, JOURNEYMAN_PAYLOAD_KEY=new_key()), "worker")
    require_payload_key(Settings(_env_file=None, JOURNEYMAN_PAYLOAD_PLAINTEXT="true"), "api")
