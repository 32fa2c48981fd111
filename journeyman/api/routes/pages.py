"""The journey pages, for people in a browser: the flow with live counts, the funnel, lift.

- `GET /journeys/{id}` draws the journey (the chart of `journeyman graph`, each step
  with the runs there now and the messages it sent), the conversion funnel, the holdout
  verdict, the versions, and links into the Temporal UI filtered to the journey's runs.
  It shows what `GET /v1/journeys/{id}` returns, read by the same function.
- `GET /journeys` lists the journeys.
- The admin token opens them: as Bearer, or as the HTTP Basic password, so that a
  browser asks for it (401 with `WWW-Authenticate: Basic`).
- The HTML is in `journeyman/api/templates/` (Jinja2, autoescaped).
- Offline: Mermaid is served from `/static/mermaid.min.js` (vendored, see
  `journeyman/api/static/README.md`), the CSS is inline, no fonts are fetched; the
  Content-Security-Policy lets the page load nothing from elsewhere.
- The Temporal UI's address is `app.state.temporal_ui_url` when the app has one (the
  process that starts Temporal knows it), else the dev server's default.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy.orm import Session

from journeyman.api import queries
from journeyman.api.deps import RouterDep, SessionDep, SettingsDep, require_admin
from journeyman.api.errors import ApiError
from journeyman.api.routes.journeys import drawn_plan, list_journeys, read_journey
from journeyman.dsl.graph import describe, mermaid, node_id
from journeyman.dsl.model import SendStep, WaitForStep, WaitStep
from journeyman.dsl.plan import Plan
from journeyman.insight.stats import Funnel, Stats, funnel, messages_by_step
from journeyman.names import JOURNEY_ID, JOURNEY_STEP
from journeyman.optimization.splits import timing_by_step
from journeyman.platform.temporal import visibility_literal

STATIC = Path(__file__).resolve().parent.parent / "static"
DEFAULT_TEMPORAL_UI_URL = "http://localhost:8233"
REALM = 'Basic realm="Journeyman"'
NOTHING = "\N{EN DASH}"  # in a table cell: no value
PUBLISH_LOG_SHOWN = 20

router = APIRouter(tags=["pages"], include_in_schema=False)


def refusal(request: Request, settings: SettingsDep) -> str | None:
    """Why the caller may not open the pages; None when they sent the admin token."""
    try:
        require_admin(request, settings)
    except ApiError as exc:
        return exc.error
    return None


RefusalDep = Annotated[str | None, Depends(refusal)]


@router.get("/static/mermaid.min.js", name="mermaid_js")
def mermaid_js() -> FileResponse:
    """Mermaid, vendored: public like any library a page loads."""
    return FileResponse(
        STATIC / "mermaid.min.js",
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.get("/journeys", response_class=HTMLResponse)
def journeys_page(
    request: Request, refused: RefusalDep, session: SessionDep, journeys: RouterDep
) -> HTMLResponse:
    """Every journey, with its counts and a link to its page."""
    if refused is not None:
        return _sign_in(request, refused)
    return _render(request, "index.html", journeys=list_journeys(session, journeys))


@router.get("/journeys/{journey_id}", response_class=HTMLResponse)
def journey_page(
    journey_id: str,
    request: Request,
    refused: RefusalDep,
    session: SessionDep,
    journeys: RouterDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """The journey as a flow with live counts, its funnel, lift, versions and runs."""
    if refused is not None:
        return _sign_in(request, refused)
    try:
        view = read_journey(journey_id, session, journeys, settings)
    except ApiError as exc:
        if exc.status_code != 404:
            raise
        return _render(request, "missing.html", status_code=404, journey_id=journey_id)
    plan = drawn_plan(session, journeys.catalog, journey_id)
    stats = view.stats.overall if view.stats is not None else None
    namespace = settings.temporal_namespace
    steps = _steps(request, session, namespace, plan, stats)
    return _render(
        request,
        "journey.html",
        view=view,
        publish_log=queries.latest_releases(session, journey_id, PUBLISH_LOG_SHOWN),
        stats=stats,
        drawn_version=plan.version,
        chart=_chart(plan, steps),
        steps=steps,
        funnel=_funnel_stages(funnel(session, journey_id)),
        channels=stats.messages if stats is not None else [],
        runs_url=_runs_url(request, namespace, _clause(JOURNEY_ID.name, journey_id)),
        running_url=_runs_url(
            request,
            namespace,
            _clause(JOURNEY_ID.name, journey_id),
            'ExecutionStatus="Running"',
        ),
        namespace=namespace,
    )


# -- what the page shows ------------------------------------------------------------------


def _steps(
    request: Request, session: Session, namespace: str, plan: Plan, stats: Stats | None
) -> list[dict[str, Any]]:
    """Each step: what it does, the runs there now, what it sent, a link to its runs."""
    journey_id = plan.journey.id
    now = stats.now_at_step if stats is not None else None
    sent = messages_by_step(session, journey_id)
    timing = timing_by_step(session, journey_id)
    return [
        {
            "id": step.id,
            "does": describe(step),
            "now": None if now is None else now.get(step.id, 0),
            "sent": sent.get(step.id, 0) if isinstance(step, SendStep) else None,
            "waits": isinstance(step, WaitStep | WaitForStep | SendStep),
            "timing": timing.get(step.id),
            "runs_url": _runs_url(
                request,
                namespace,
                _clause(JOURNEY_ID.name, journey_id),
                _clause(JOURNEY_STEP.name, step.id),
                'ExecutionStatus="Running"',
            ),
        }
        for step in plan.journey.steps
    ]


def _chart(plan: Plan, steps: list[dict[str, Any]]) -> str:
    """The Mermaid chart with each step's counts, the steps with runs now highlighted."""
    annotations = {}
    for step in steps:
        parts = []
        # A run waits at a wait or a send (deferred); it passes the others at once.
        if step["now"] or (step["now"] is not None and step["waits"]):
            parts.append(f"▶ {step['now']} here now")
        if step["sent"] is not None:
            parts.append(f"✉ {step['sent']} sent")
        if parts:
            annotations[step["id"]] = " · ".join(parts)
    chart = mermaid(plan, annotations)
    busy = [node_id(step["id"]) for step in steps if step["now"]]
    if busy:
        chart += f"    class {','.join(busy)} busy\n"
        chart += "    classDef busy fill:#dbeafe,stroke:#1d4ed8,stroke-width:2px,color:#0f172a\n"
    return chart


def _funnel_stages(counts: Funnel) -> list[dict[str, Any]]:
    stages = [
        ("Entered", counts.entered),
        ("Got a message", counts.messaged),
        ("Opened or clicked", counts.engaged),
        ("Converted", counts.converted),
    ]
    return [
        {
            "label": label,
            "count": n,
            "share": n / counts.entered if counts.entered else None,
        }
        for label, n in stages
    ]


def _clause(attribute: str, value: str) -> str:
    return f"{attribute}={visibility_literal(value)}"


def _runs_url(request: Request, namespace: str, *clauses: str) -> str:
    """The Temporal UI's list of workflows matching a visibility query."""
    base = str(getattr(request.app.state, "temporal_ui_url", None) or DEFAULT_TEMPORAL_UI_URL)
    query = quote(" AND ".join(clauses), safe="")
    return f"{base.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows?query={query}"


# -- rendering ----------------------------------------------------------------------------


def _sign_in(request: Request, reason: str) -> HTMLResponse:
    return _render(
        request, "sign_in.html", status_code=401, headers={"WWW-Authenticate": REALM}, reason=reason
    )


def _render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = _ENV.get_template(template).render(
        nonce=nonce,
        mermaid_src=request.url_for("mermaid_js").path,
        journeys_href=request.url_for("journeys_page").path,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        **context,
    )
    policy = (
        "default-src 'none'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        "style-src 'unsafe-inline'; img-src 'self' data:; font-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-store",
            **(headers or {}),
        },
    )


def _percent(value: float | None) -> str:
    return NOTHING if value is None else f"{value * 100:.1f}%"


# The pages' templates: journeyman/api/templates/ (package data, so an installed
# package finds them too).
_ENV = Environment(
    loader=PackageLoader("journeyman.api", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals.update(percent=_percent, nothing=NOTHING)
