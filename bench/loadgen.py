"""The load generator, in a process of its own: HTTP/1.1 over keep-alive connections.

    python -m bench.loadgen load --port P --out FILE [--concurrency 16] [--duration 10]
        [--warmup 2] [--rate R] [--count N] [--event NAME] [--users N] [--prefix X]
        [--first N]
    python -m bench.loadgen serve --port P      # a bare asyncio server: the ceiling

`load` posts Segment `track` events to `/v1/track` with a write key, each with its own
`messageId`, from `--concurrency` connections. Closed loop by default (each connection
sends its next request when the previous one is answered); with `--rate`, requests are
paced at that many per second (open loop, as far as the connections keep up). It stops
after `--count` requests, or after `--warmup` + `--duration` seconds; figures count
only the requests sent after the warm-up. `--users N` spreads the events over N
customers; 0 gives every event a customer of its own (`<prefix>u<seq>`). `--first N`
numbers the requests from N (message ids `<prefix>m<seq>`): a later window of load on
the same server and customers sends new messages, not duplicates.

It writes FILE as JSON: requests, errors, elapsed, rate, latency percentiles (ms), every
measured latency (`latencies_ms`, to pool windows of load), and `answered`: for each
request answered 200, [userId, wall-clock time of the answer].

The generator uses raw asyncio streams rather than an HTTP client library: it must be
much cheaper than the servers it measures. `serve` shows how far it can go at all.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n"
    b'{"success":true}'
)


@dataclass
class Load:
    port: int
    write_key: str
    concurrency: int
    duration: float
    warmup: float
    rate: float | None
    count: int | None
    event: str
    users: int
    prefix: str
    first: int = 0
    sent: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    answered: list[tuple[str, float]] = field(default_factory=list)
    measured_from: float = 0.0
    measured_to: float = 0.0

    def body(self, seq: int) -> tuple[str, bytes]:
        user = f"{self.prefix}u{seq % self.users if self.users else seq}"
        message = {
            "type": "track",
            "userId": user,
            "event": self.event,
            "messageId": f"{self.prefix}m{seq}",
            "timestamp": "2026-05-04T10:00:00Z",
            "properties": {
                "cart_id": f"cart-{seq}",
                "cart_total": 64.5,
                "items": [{"name": "Linen shirt", "price": 64.5, "quantity": 1}],
            },
            "context": {"library": {"name": "bench", "version": "1"}},
        }
        return user, json.dumps(message).encode()

    def request(self, body: bytes) -> bytes:
        auth = base64.b64encode(f"{self.write_key}:".encode()).decode()
        return (
            f"POST /v1/track HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
            f"authorization: Basic {auth}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body


async def _connection(load: Load, start: float, stop_at: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
    try:
        while True:
            if load.count is not None and load.sent >= load.count:
                return
            seq = load.sent
            load.sent += 1
            if load.rate:
                due = start + seq / load.rate
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
            now = time.monotonic()
            if load.count is None and now >= stop_at:
                return
            user, body = load.body(load.first + seq)
            try:
                writer.write(load.request(body))
                status, _ = await _response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                load.errors += 1  # the server went away: this connection is done
                return
            done = time.monotonic()
            if now >= start + load.warmup:
                if status == 200:
                    load.latencies.append(done - now)
                    load.measured_to = max(load.measured_to, done)
                else:
                    load.errors += 1
            if status == 200:
                load.answered.append((user, time.time()))
    finally:
        writer.close()


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def run_load(load: Load) -> dict[str, Any]:
    start = time.monotonic()
    load.measured_from = start + load.warmup
    stop_at = start + load.warmup + load.duration
    await asyncio.gather(*(_connection(load, start, stop_at) for _ in range(load.concurrency)))
    elapsed = max(load.measured_to - load.measured_from, 1e-9)
    ordered = sorted(load.latencies)

    def pct(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0

    return {
        "requests": len(ordered),
        "errors": load.errors,
        "elapsed": elapsed,
        "rate": len(ordered) / elapsed,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "latencies_ms": [round(1000 * latency, 3) for latency in load.latencies],
        "answered": load.answered,
    }


# -- the ceiling: a server that does nothing ----------------------------------------------


class _Bare(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Bare, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("mode", choices=["load", "serve"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--write-key", default="wk_bench")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--count", type=int)
    parser.add_argument("--event", default="bench_page_viewed")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--prefix", default="b")
    parser.add_argument("--first", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(serve(args.port))
        return
    load = Load(
        port=args.port,
        write_key=args.write_key,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        rate=args.rate,
        count=args.count,
        event=args.event,
        users=args.users,
        prefix=args.prefix,
        first=args.first,
    )
    result = asyncio.run(run_load(load))
    assert args.out is not None, "--out is required with load"
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
