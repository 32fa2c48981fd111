"""Publishing for CI: `GET /v1/releases` (the publish log) and `POST /v1/deploy` (the
journeys and templates in the body; what `journeyman deploy` does, with no shell on the
server). Both take the admin token.

The body of a deploy is either a JSON object mapping paths to file texts
(`{"journeys/nudge.yaml": "...", "templates/nudge/email.html": "..."}`) or a tar.gz of
the `journeys/` and `templates/` folders. Every path must be under one of them, relative,
with no `..`. The files are compiled in a folder of their own; a journey with errors
answers 422 naming `file:line:col` and publishes nothing, like the command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from journeyman.api.deps import DatabaseDep, require_admin
from journeyman.api.errors import ApiError, body_error
from journeyman.dsl import JourneyError
from journeyman.dsl.compiler import compile_dir
from journeyman.dsl.overlap import overlap_warnings
from journeyman.operations import releases

# A deploy's body, as sent and (a tar.gz) unpacked: journeys and templates are text.
MAX_DEPLOY_BYTES = 5 * 1024 * 1024
MAX_FILES = 2000
FOLDERS = ("journeys", "templates")

router = APIRouter(prefix="/v1", tags=["publishing"], dependencies=[Depends(require_admin)])


@router.get("/releases")
def list_releases(
    db: DatabaseDep,
    journey: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The publish log, newest first, and what is live now."""
    rows = releases.history(db, journey, limit)
    with db.session() as session:
        live = releases.live_releases(session)
    return {
        "live": {
            j: {"version": r.version, "enabled": r.enabled}
            for j, r in sorted(live.items())
            if journey is None or j == journey
        },
        "releases": [releases.release_json(r) for r in rows],
    }


@router.post("/deploy", responses={413: {}, 415: {}, 422: {}})
async def deploy(
    request: Request,
    db: DatabaseDep,
    dry_run: bool = False,
    message: Annotated[str, Query(max_length=500)] = "",
    by: Annotated[str, Query(min_length=1, max_length=200)] = "api",
) -> dict[str, Any]:
    """Compile the journeys and templates in the body and make them live in one
    transaction (not with `dry_run`); any error: 422 and nothing changes."""
    body = await _read(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files = _json_files(body) if kind == "application/json" else _tar_files(body, kind)
    return await asyncio.to_thread(_deploy, db, files, dry_run, message, by)


def _deploy(db: Any, files: dict[str, str], dry_run: bool, message: str, by: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="journeyman-deploy-") as folder:
        root = Path(folder)
        for folder_name in FOLDERS:
            (root / folder_name).mkdir()
        for name, text in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        try:
            compiled = compile_dir(root / "journeys", root / "templates")
        except JourneyError as exc:
            raise ApiError(
                422,
                "the journeys have errors: nothing was published",
                [
                    {
                        "field": _relative(p.file, root),
                        "line": p.line,
                        "column": p.column,
                        "message": p.message,
                        "type": "journey_error",
                    }
                    for p in exc.problems
                ],
            ) from None
        warnings = [
            {"field": _relative(w.file, root), "line": w.line, "message": w.message}
            for w in overlap_warnings(compiled)
        ]
        # The paths they are known by, not this folder's.
        compiled = [dataclasses.replace(c, path=c.path.relative_to(root)) for c in compiled]
    changes = releases.plan_deploy(db, compiled)
    made = [] if dry_run else releases.publish(db, changes, by, message)
    return {
        "published": bool(made),
        "dry_run": dry_run,
        "changes": [c.as_json() for c in changes],
        "warnings": warnings,
        "releases": [releases.release_json(r) for r in made],
    }


def _relative(file: str, root: Path) -> str:
    path = Path(file)
    return str(path.relative_to(root)) if path.is_relative_to(root) else file


async def _read(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DEPLOY_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DEPLOY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    if not size:
        raise _bad("the body is empty: send the files as JSON (path → text) or a tar.gz")
    return b"".join(chunks)


def _too_large() -> ApiError:
    return body_error(
        413,
        f"a deploy is at most {MAX_DEPLOY_BYTES:,} bytes, sent and unpacked",
        "too large",
        "too_large",
    )


def _bad(error: str, field: str = "body") -> ApiError:
    return ApiError(422, error, [{"field": field, "message": error, "type": "invalid"}])


def _json_files(body: bytes) -> dict[str, str]:
    try:
        files = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise body_error(400, "the body is not JSON", "not JSON", "json_invalid") from None
    if not isinstance(files, dict) or not files:
        raise _bad("the body must be a JSON object of paths to file texts")
    if len(files) > MAX_FILES:
        raise _bad(f"at most {MAX_FILES} files")
    for name, text in files.items():
        if not isinstance(text, str):
            raise _bad("each file's text must be a string", name)
        _check_path(name)
    return files


def _tar_files(body: bytes, kind: str) -> dict[str, str]:
    if kind not in ("application/gzip", "application/x-gzip", "application/octet-stream", ""):
        raise ApiError(
            415,
            "send application/json (path → text) or application/gzip (a tar.gz)",
            [{"field": "content-type", "message": kind, "type": "unsupported"}],
        )
    files: dict[str, str] = {}
    unpacked = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if member.isdir() or name in FOLDERS or name in ("", "."):
                    continue
                if not member.isfile():
                    raise _bad("only files and folders belong in the archive", name)
                _check_path(name)
                unpacked += member.size
                if unpacked > MAX_DEPLOY_BYTES:
                    raise _too_large()
                if len(files) >= MAX_FILES:
                    raise _bad(f"at most {MAX_FILES} files")
                extracted = archive.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                try:
                    files[name] = data.decode()
                except UnicodeDecodeError:
                    raise _bad("not UTF-8 text", name) from None
    except (tarfile.TarError, EOFError, OSError):
        raise _bad("the body is not a tar.gz of journeys/ and templates/") from None
    if not files:
        raise _bad("the archive holds no files under journeys/ or templates/")
    return files


def _check_path(name: str) -> None:
    path = PurePosixPath(name)
    if (
        len(name) > 300
        or path.is_absolute()
        or ".." in path.parts
        or "\\" in name
        or "\x00" in name
        or len(path.parts) < 2
        or path.parts[0] not in FOLDERS
    ):
        raise _bad("each path is relative and under journeys/ or templates/ (no ..)", name[:300])
