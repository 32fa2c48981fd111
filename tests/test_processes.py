"""The suite's own process helper (tests/processes.py): closing a `journeyman dev` leaves
no Temporal dev server of its folder running, whether dev stopped it itself (closed
while running: interrupted) or could not (killed outright before the close)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.processes import clean_environment, free_port, running
from tests.waiting import eventually

pytestmark = pytest.mark.slow

JOURNEYMAN = Path(sys.executable).parent / "journeyman"
REPO = Path(__file__).resolve().parents[1]


def temporal_servers_of(folder: Path) -> list[int]:
    """Live (not zombie) `temporal server start-dev` processes working in `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = Path(os.readlink(proc / "cwd"))
        except (OSError, IndexError):
            continue
        if b"start-dev" in argv and state != "Z" and cwd.resolve() == folder.resolve():
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("how", ["closed while running", "killed before the close"])
async def test_closing_journeyman_dev_leaves_no_temporal_server_of_its_folder(
    tmp_path: Path, how: str
) -> None:
    command = [str(JOURNEYMAN), "dev", "--port", str(free_port())]
    command += ["--temporal-port", str(free_port()), "--ui-port", str(free_port())]
    env = clean_environment(
        JOURNEYS_DIR=str(REPO / "journeys"), TEMPLATES_DIR=str(REPO / "templates")
    )
    with running(command, env, tmp_path, tmp_path / "dev.log") as dev:
        await eventually(
            lambda: "Write key:" in dev.output() or not dev.alive(),
            what="journeyman dev starts",
            within=90,
            detail=dev.detail,
        )
        assert dev.alive(), dev.detail()
        servers = temporal_servers_of(tmp_path)
        assert len(servers) == 1, servers
        if how == "killed before the close":
            dev.process.kill()
            dev.process.wait()
            # Killed outright, dev could not stop its server: the close must.
            assert temporal_servers_of(tmp_path) == servers
    assert temporal_servers_of(tmp_path) == []
    if how == "closed while running":
        assert dev.process.returncode == 0, dev.detail()
