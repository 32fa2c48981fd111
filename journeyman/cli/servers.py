"""`journeyman dev`, `worker` and `api`: the processes."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from journeyman.cli.common import _fail, _uses_temporal, app, reports_problems
from journeyman.settings import get_settings

# -- servers --------------------------------------------------------------------------


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="HTTP API port.")] = 8000,
    temporal_port: Annotated[int, typer.Option(help="Temporal dev server gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    host: Annotated[str, typer.Option(help="Address the HTTP API listens on.")] = "127.0.0.1",
) -> None:
    """Everything on one machine: Temporal dev server, worker and HTTP API. Ctrl-C stops it."""
    from journeyman.platform.devserver import main

    _uses_temporal()
    _logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    code = main(get_settings(), port=port, temporal_port=temporal_port, ui_port=ui_port, host=host)
    raise typer.Exit(code)


@app.command()
@reports_problems
def worker() -> None:
    """The Temporal worker alone (`python worker.py` does the same)."""
    import worker as worker_module

    _uses_temporal()
    _logging()
    try:
        asyncio.run(worker_module.main())
    except KeyboardInterrupt:
        typer.echo("worker stopped", err=True)
    except RuntimeError as exc:  # the SDK's connection errors
        _fail(f"worker: {exc}")
    except ValueError as exc:  # settings: a half-configured provider, no signing key
        _fail(f"worker: {exc}")


@app.command()
@reports_problems
def api(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """The HTTP API alone (event intake, customers, journeys, outbox)."""
    try:
        from journeyman.api.server import serve
    except ImportError as exc:
        _fail(f"the HTTP API is not available in this installation: {exc}")
    _uses_temporal()
    _logging()
    try:
        asyncio.run(serve(get_settings(), host, port))
    except KeyboardInterrupt:
        typer.echo("API stopped", err=True)
    except RuntimeError as exc:  # the SDK's connection errors
        _fail(f"api: {exc}")
    except ValueError as exc:  # settings: no payload key and no JOURNEYMAN_PAYLOAD_PLAINTEXT
        _fail(f"api: {exc}")


def _logging() -> None:
    from journeyman.platform import logs

    logs.configure(get_settings().log_format)
