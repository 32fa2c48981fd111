"""What every benchmark section shares: results as tables, the run's context, processes.

Contract:
- A section returns `Table`s. A `Row` holds our figure and, where the comparison has
  one, the baseline's; its ratio is always ours / baseline, and its `Target` says which
  way is good (`>= 0.9`, `<= 1.0`, `== 1.0`), so `met` is computed, never typed in. An
  absolute target (`Target("<=", 5, absolute=True)`) holds our figure itself to a
  value in the row's unit, as a goal stated in milliseconds is.
- `Context` carries the run's settings (quick or full, the work folder) and starts what
  sections need: a Temporal dev server on a file database in the work folder, and
  subprocesses whose output goes to log files there. Everything started is stopped when
  the context closes, by process id.
- `Sampler` follows processes with psutil: peak and last RSS, CPU seconds in a window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Literal

import psutil
from sqlalchemy import create_engine, text
from temporalio.client import Client

from journeyman.names import SEARCH_ATTRIBUTE_FLAGS
from journeyman.platform.binaries import find_binary
from journeyman.platform.codec import data_converter
from journeyman.settings import Settings
from journeyman.storage.db import Database

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What the ratio (ours / baseline) should be: `op` `value`; with `absolute`, what
    our figure itself should be, in the row's unit."""

    op: Literal[">=", "<=", "=="]
    value: float
    absolute: bool = False

    def met(self, figure: float) -> bool:
        if self.op == ">=":
            return figure >= self.value
        if self.op == "<=":
            return figure <= self.value
        return math.isclose(figure, self.value, rel_tol=1e-9)

    def text(self, unit: str = "") -> str:
        if self.absolute:
            return f"{self.op} {self.value:g}" + (f" {unit}" if unit else "")
        return f"{self.op} {self.value:g}x"

    def __str__(self) -> str:
        return self.text()


@dataclass
class Row:
    """One figure: ours, the baseline's when there is one, the ratio and its target."""

    metric: str
    ours: float | str | None
    baseline: float | str | None = None
    unit: str = ""
    target: Target | None = None
    digits: int = 1  # decimals shown for the figures

    @property
    def ratio(self) -> float | None:
        if not isinstance(self.ours, int | float) or not isinstance(self.baseline, int | float):
            return None
        if self.baseline == 0:
            return None if self.ours else 1.0
        return float(self.ours) / float(self.baseline)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.target.absolute:
            if not isinstance(self.ours, int | float) or math.isnan(self.ours):
                return None
            return self.target.met(float(self.ours))
        ratio = self.ratio
        if ratio is None:
            return None
        return self.target.met(ratio)


@dataclass
class Table:
    """A comparison: `ours` and `baseline` name the two columns."""

    title: str
    ours: str = "Journeyman"
    baseline: str | None = None
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        metric: str,
        ours: float | str | None,
        baseline: float | str | None = None,
        unit: str = "",
        target: Target | None = None,
        digits: int = 1,
    ) -> Row:
        row = Row(metric, ours, baseline, unit, target, digits)
        self.rows.append(row)
        return row

    def header(self) -> list[str]:
        columns = ["metric", self.ours]
        if self.baseline is not None:
            columns += [self.baseline, "ratio", "target", "met"]
        return columns

    def cells(self) -> list[list[str]]:
        out = []
        for row in self.rows:
            cells = [row.metric + (f" ({row.unit})" if row.unit else ""), _fmt(row.ours, row)]
            if self.baseline is not None:
                ratio = row.ratio
                cells += [
                    _fmt(row.baseline, row),
                    "" if ratio is None else f"{ratio:.2f}x",
                    "" if row.target is None else row.target.text(row.unit),
                    {None: "", True: "yes", False: "**no**"}[row.met],
                ]
            out.append(cells)
        return out

    def text(self) -> str:
        """The table for a terminal: aligned columns, notes below."""
        header, cells = self.header(), [[c.replace("**", "") for c in r] for r in self.cells()]
        widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
        lines = [self.title, "-" * len(self.title)]
        for index, row in enumerate([header, *cells]):
            first = row[0].ljust(widths[0])
            rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join([first, *rest]).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"  * {note}" for note in self.notes]
        return "\n".join(lines)

    def markdown(self) -> str:
        header = self.header()
        lines = [f"#### {self.title}", "", "| " + " | ".join(header) + " |"]
        lines.append("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
        lines += ["| " + " | ".join(row) + " |" for row in self.cells()]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def _fmt(value: float | str | None, row: Row) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{row.digits}f}"


# -- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated between the nearest ranks; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mib(value: float) -> float:
    return value / (1024 * 1024)


# -- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ProcessStats:
    peak_rss: int = 0
    last_rss: int = 0
    cpu_start: float = 0.0
    cpu_last: float = 0.0

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_last - self.cpu_start


@dataclass
class Window:
    """One window of load on one side of a comparison: what its generators measured
    (pooled over them) and the CPU seconds and peak RSS of the processes sampled, by
    the sampler's names."""

    requests: int
    elapsed: float  # seconds measured (after the warm-up)
    errors: int
    latencies_ms: list[float]
    cpu_seconds: dict[str, float]
    peak_rss: dict[str, int]


# One window of a side's load: (window number, seconds measured, seconds of warm-up).
Measure = Callable[[int, float, float], Awaitable[Window]]


async def alternate(
    sides: dict[str, Measure], windows: int, duration: float, warmup: float, rewarm: float
) -> dict[str, Pooled]:
    """Each side's load in `windows` windows of `duration / windows` seconds, the sides
    in turn and in reverse order every other round (A B C C B A A B C ...), so that a
    change in the machine's speed during the section (on a shared host, ±25% from one
    minute to the next) falls on every side alike instead of on whichever ran then.
    A side's first window warms up for `warmup` seconds, its later ones for `rewarm`."""
    names = list(sides)
    parts: dict[str, list[Window]] = {name: [] for name in names}
    for number in range(windows):
        for name in names if number % 2 == 0 else names[::-1]:
            warm = rewarm if parts[name] else warmup
            parts[name].append(await sides[name](number, duration / windows, warm))
    return {name: Pooled(parts[name]) for name in names}


class Pooled:
    """A side's windows taken together: rate over all the time measured, latency
    percentiles over all the requests, CPU over all of them."""

    def __init__(self, windows: list[Window]) -> None:
        self.windows = windows
        self.requests = sum(w.requests for w in windows)
        self.elapsed = sum(w.elapsed for w in windows)
        self.errors = sum(w.errors for w in windows)
        self.rate = self.requests / max(self.elapsed, 1e-9)
        latencies = sorted(latency for w in windows for latency in w.latencies_ms)
        self.p50_ms = _percentile(latencies, 50)
        self.p99_ms = _percentile(latencies, 99)

    def cpu_ms(self, prefix: str) -> float:
        """CPU milliseconds per request of the processes whose names start with `prefix`."""
        seconds = sum(
            s for w in self.windows for n, s in w.cpu_seconds.items() if n.startswith(prefix)
        )
        return 1000 * seconds / max(self.requests, 1)

    def rss_mib(self, prefix: str) -> float:
        return mib(
            max(
                (r for w in self.windows for n, r in w.peak_rss.items() if n.startswith(prefix)),
                default=0,
            )
        )


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


class Sampler:
    """Samples RSS and CPU time of processes (children included) every `interval` s,
    in a thread, from `start()` until `stop()`; `mark()` restarts the CPU window."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.stats = {name: ProcessStats() for name in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._window_start = time.monotonic()

    def start(self) -> Sampler:
        self.mark()
        self._thread.start()
        return self

    def mark(self) -> None:
        """Start a new CPU window (peak RSS is kept)."""
        for name in self.processes:
            rss, cpu = self._read(name)
            stats = self.stats[name]
            stats.cpu_start = stats.cpu_last = cpu
            stats.last_rss = rss
            stats.peak_rss = max(stats.peak_rss, rss)
        self._window_start = time.monotonic()

    def window(self) -> float:
        return time.monotonic() - self._window_start

    def sample(self) -> None:
        for name in self.processes:
            rss, cpu = self._read(name)
            stats = self.stats[name]
            stats.last_rss = rss
            stats.peak_rss = max(stats.peak_rss, rss)
            stats.cpu_last = cpu

    def stop(self) -> dict[str, ProcessStats]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.sample()
        return self.stats

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self.sample()

    def _read(self, name: str) -> tuple[int, float]:
        process = self.processes[name]
        rss, cpu = 0, 0.0
        try:
            children = process.children(recursive=True)
        except psutil.Error:  # one ended while they were listed (a database's backends)
            children = []
        for each in [process, *children]:
            with contextlib.suppress(psutil.Error):
                rss += each.memory_info().rss
                times = each.cpu_times()
                cpu += times.user + times.system
        return rss, cpu


class Process:
    """A subprocess of the benchmark, its output in `log_path`, stopped by its pid."""

    def __init__(
        self, name: str, command: list[str], log_path: Path, env: dict[str, str], cwd: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops us in order
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.popen.returncode}:\n{self.tail()}"
            )

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15, sig: signal.Signals = signal.SIGTERM) -> None:
        """`sig` (SIGTERM), then SIGKILL if it will not go."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


class BenchError(Exception):
    """Something that stops a section; the message says what."""


def clean_env(**values: str) -> dict[str, str]:
    """Our environment without Temporal, Journeyman or provider settings, plus `values`;
    `bench` importable from any working directory (after what PYTHONPATH names)."""
    prefixes = ("TEMPORAL_", "JOURNEYMAN_", "SENDGRID_", "TWILIO_", "FCM_", "EMAIL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    for name in ("DATABASE_URL", "JOURNEYS_DIR", "TEMPLATES_DIR", "PUBLIC_BASE_URL"):
        env.pop(name, None)
    # As on a user's machine, bytecode is cached: without it every new workflow instance
    # compiles the workflow's module again in the sandbox, which is not what users pay.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT)])
    # The sections' own clients read payloads with the plain converter: the processes
    # they measure run unencrypted, asked for explicitly (the api and worker refuse to
    # start without a payload key otherwise).
    return env | {"JOURNEYMAN_PAYLOAD_PLAINTEXT": "true"} | values


# -- the Temporal dev server ------------------------------------------------------------


@dataclass
class DevServer:
    """`temporal server start-dev` on a file database, as `journeyman dev` runs it."""

    process: Process
    address: str
    db_file: Path
    command: list[str]

    async def client(self) -> Client:
        # The product's converter with the settings of the processes measured (plaintext,
        # compression on), as the router's client has it: a run's start input is written
        # as the router writes it.
        settings = Settings(
            _env_file=None, payload_key=None, payload_plaintext=True, payload_compression=True
        )
        return await Client.connect(self.address, data_converter=data_converter(settings))


def temporal_version() -> str:
    binary = find_binary("temporal")
    if binary is None:
        return "not installed"
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return output.stdout.strip().removeprefix("temporal version ")


# -- the run ----------------------------------------------------------------------------


@dataclass
class Context:
    """What a section gets: the run's size, a work folder, and starters for processes."""

    quick: bool
    workdir: Path
    large: bool = False  # sizes past make bench's 15 minutes (the interpreter at 10,000)
    profile: bool = False  # sample the process under test with py-spy
    processes: list[Process] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)  # shown with the results
    started: float = field(default_factory=time.monotonic)  # the section's start

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def seconds(self, quick: float, full: float) -> float:
        return quick if self.quick else full

    def log(self, message: str) -> None:
        """A step of the section, with the seconds since the section began (where the
        time goes)."""
        elapsed = time.monotonic() - self.started
        print(f"  · [{elapsed:5.0f} s] {message}", file=sys.stderr, flush=True)

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def spawn(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        process = Process(
            name, command, self.workdir / f"{name}.log", env or clean_env(), cwd or self.workdir
        )
        self.processes.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        with contextlib.suppress(ValueError):
            self.processes.remove(process)

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    @contextlib.asynccontextmanager
    async def profiling(self, name: str, pid: int) -> AsyncIterator[None]:
        """With `--profile`: py-spy samples `pid` (the thread holding the GIL, threads and
        subprocesses included) while the block runs; the collapsed stacks go to
        `<workdir>/profile-<name>.txt` and the functions of our code taking most time
        are printed. Without `--profile`: nothing."""
        spy = find_binary("py-spy")
        if not self.profile or spy is None:
            yield
            return
        out = self.workdir / f"profile-{name}.txt"
        command = [spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
        command += ["--gil", "--subprocesses", "--nonblocking", "-o", str(out)]
        process = self.spawn(f"py-spy-{name}", command)
        try:
            yield
        finally:
            # py-spy writes its file when interrupted, as after Ctrl-C.
            process.stop(timeout=30, sig=signal.SIGINT)
            with contextlib.suppress(ValueError):
                self.processes.remove(process)
            if out.exists():
                print(f"\nprofile of {name} ({out}):\n{summarize(out)}", file=sys.stderr)

    @contextlib.asynccontextmanager
    async def dev_server(self, name: str = "temporal") -> AsyncIterator[DevServer]:
        """A fresh dev server on `<workdir>/<name>.db`; stopped on leaving."""
        binary = find_binary("temporal")
        if binary is None:
            raise BenchError("the temporal binary is not installed: run `make bench`")
        db_file = self.workdir / f"{name}.db"
        port = free_port()
        command = [
            binary,
            "server",
            "start-dev",
            *("--db-filename", str(db_file)),
            *("--ip", "127.0.0.1"),
            *("--port", str(port)),
            *("--ui-port", str(free_port())),
            "--headless",
            *("--log-level", "error"),
        ]
        for flag in SEARCH_ATTRIBUTE_FLAGS:
            command += ["--search-attribute", flag]
        process = self.spawn(name, command)
        server = DevServer(process, f"127.0.0.1:{port}", db_file, command)
        self.settings["Temporal dev server"] = (
            "`temporal server start-dev --db-filename <tmp>/temporal.db --headless` "
            "(SQLite file, default dynamic config)"
        )
        try:
            await _until_answers(server)
            yield server
        finally:
            self.stop(process)


async def _until_answers(server: DevServer, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        server.process.check()
        try:
            await asyncio.wait_for(server.client(), timeout=5)
            return
        except (RuntimeError, TimeoutError):
            if time.monotonic() > deadline:
                raise BenchError(f"the dev server did not answer in {within:g} s") from None
        await asyncio.sleep(0.2)


async def wait_for_file(path: Path, process: Process, within: float = 60) -> None:
    """Until `path` exists (a subprocess's "ready"), failing if the process exits."""
    deadline = time.monotonic() + within
    while not path.exists():
        process.check()
        if time.monotonic() > deadline:
            raise BenchError(f"{process.name} not ready in {within:g} s:\n{process.tail()}")
        await asyncio.sleep(0.05)


async def wait_for_port(port: int, process: Process, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        process.check()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{process.name} not listening in {within:g} s") from None
            await asyncio.sleep(0.1)


OUR_CODE = ("journeyman/", "workflows/", "activities/", "temporalio/", "sqlalchemy/", "pydantic/")


def summarize(path: Path, top: int = 30) -> str:
    """The functions of Journeyman, the SDK, SQLAlchemy and pydantic on the most samples
    of a py-spy raw profile (paths as py-spy shows them, relative to sys.path),
    inclusive: share of samples, function, file."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            function, _, where = frame.partition(" (")
            file = where.split(":", 1)[0]
            if not file.startswith(OUR_CODE):
                continue
            key = f"{function}  {file}"
            if key not in seen:
                seen.add(key)
                counts[key] = counts.get(key, 0) + int(count)
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
    lines = [f"  {100 * n / max(total, 1):5.1f}%  {key}" for key, n in ranked]
    return f"  {total} samples holding the GIL\n" + "\n".join(lines)


# -- the machine ------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({psutil.cpu_count(logical=False)} physical)",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "temporal CLI": temporal_version(),
        "temporalio (SDK)": _version("temporalio"),
        "SQLite": sqlite3.sqlite_version,
        "FastAPI / uvicorn": f"{_version('fastapi')} / {_version('uvicorn')}",
        "SQLAlchemy": _version("sqlalchemy"),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@contextlib.contextmanager
def scratch_postgres(server: str) -> Iterator[tuple[Database, str]]:
    """A fresh PostgreSQL database on `server` (a SQLAlchemy URL without the database
    name) with the schema, and its name; dropped afterwards, whatever happened."""
    name = f"jm_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    db = Database(f"{server}/{name}")
    try:
        db.create_all()
        yield db, name
    finally:
        db.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """`with timed() as took:` ... `took[0]` is the elapsed seconds afterwards."""
    took = [0.0]
    start = time.perf_counter()
    try:
        yield took
    finally:
        took[0] = time.perf_counter() - start
