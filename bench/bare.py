"""The intake baseline: FastAPI + uvicorn serving `/v1/track` that only parses the body.

    python -m bench.bare --port P

The same framework, server settings (`journeyman.api.server.serve`'s uvicorn config:
one process, the default event loop and HTTP parser, `log_level="warning"`) and URL as
the API; no authentication, validation, storage or hand-off.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

from journeyman.api.server import GRACEFUL_SHUTDOWN_SECONDS

app = FastAPI()


@app.post("/v1/track")
async def track(request: Request) -> dict[str, Any]:
    json.loads(await request.body())
    return {"success": True}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
