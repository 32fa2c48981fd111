"""The journey pages, for people in a browser: the flow with live counts, the funnel, lift.

- `GET /journeys/{id}` draws the journey (the chart of `journeyman graph`, each step
  with the runs there now and the messages it sent), the conversion funnel, the holdout
  verdict, the versions, and links into the Temporal UI filtered to the journey's runs.
  It shows what `GET /v1/journeys/{id}` returns, read by the same function.
- `GET /journeys` lists the journeys.
- The admin token opens them: as Bearer, or as the HTTP Basic password, so that a
  browser asks for it (401 with `WWW-Authenticate: Basic`).
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
from jinja2 import DictLoader, Environment, StrictUndefined
from sqlalchemy import select
from sqlalchemy.orm import Session

from journeyman.api.deps import RouterDep, SessionDep, SettingsDep, require_admin
from journeyman.api.errors import ApiError
from journeyman.api.routes.journeys import list_journeys, read_journey
from journeyman.dsl.graph import describe, mermaid, node_id
from journeyman.dsl.model import SendStep, WaitForStep, WaitStep
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Catalog
from journeyman.insight.stats import Funnel, funnel, messages_by_step
from journeyman.names import JOURNEY_ID, JOURNEY_STEP
from journeyman.optimization.splits import timing_by_step
from journeyman.storage.models import JourneyVersion, Release

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
        view = read_journey(journey_id, session, journeys)
    except ApiError as exc:
        if exc.status_code != 404:
            raise
        return _render(request, "missing.html", status_code=404, journey_id=journey_id)
    plan = _drawn_plan(session, journeys.catalog, journey_id)
    stats = view.stats.overall if view.stats is not None else None
    now = stats.now_at_step if stats is not None else None
    sent = messages_by_step(session, journey_id)
    timing = timing_by_step(session, journey_id)
    steps = [
        {
            "id": step.id,
            "does": describe(step),
            "now": None if now is None else now.get(step.id, 0),
            "sent": sent.get(step.id, 0) if isinstance(step, SendStep) else None,
            "waits": isinstance(step, WaitStep | WaitForStep | SendStep),
            "timing": timing.get(step.id),
            "runs_url": _runs_url(
                request,
                settings.temporal_namespace,
                _clause(JOURNEY_ID.name, journey_id),
                _clause(JOURNEY_STEP.name, step.id),
                'ExecutionStatus="Running"',
            ),
        }
        for step in plan.journey.steps
    ]
    namespace = settings.temporal_namespace
    return _render(
        request,
        "journey.html",
        view=view,
        publish_log=_publish_log(session, journey_id),
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


def _publish_log(session: Session, journey_id: str) -> list[Release]:
    """The journey's latest releases, newest (the one in force) first."""
    return list(
        session.scalars(
            select(Release)
            .where(Release.journey_id == journey_id)
            .order_by(Release.id.desc())
            .limit(PUBLISH_LOG_SHOWN)
        )
    )


def _drawn_plan(session: Session, catalog: Catalog, journey_id: str) -> Plan:
    """The version in force; when its file is gone, the last one registered."""
    compiled = catalog.compiled.get(journey_id)
    if compiled is not None:
        return compiled.plan
    latest = session.scalars(
        select(JourneyVersion.plan)
        .where(JourneyVersion.journey_id == journey_id)
        .order_by(JourneyVersion.created_at.desc())
    ).first()
    return Plan.model_validate(latest)


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
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{attribute}="{escaped}"'


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


_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %} · Journeyman</title>
<style>
  :root { --ink: #0f172a; --muted: #64748b; --line: #e2e8f0; --card: #fff;
          --bg: #f1f5f9; --accent: #1d4ed8; --good: #15803d; --bad: #b91c1c; }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--ink);
         font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
               Arial, sans-serif; }
  header.top { background: var(--ink); color: #fff; padding: 10px 28px; }
  header.top a { color: #cbd5e1; text-decoration: none; }
  main { max-width: 1220px; margin: 0 auto; padding: 20px 28px 40px; }
  h1 { font-size: 26px; margin: 0 0 4px; }
  h2 { font-size: 17px; margin: 0 0 12px; }
  .muted { color: var(--muted); }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
          padding: 18px 20px; margin-bottom: 18px; }
  .kpis { display: grid; grid-template-columns: repeat(4, 1fr); gap: 14px;
          margin: 16px 0 18px; }
  .kpi { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
         padding: 12px 16px; }
  .kpi b { display: block; font-size: 26px; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
  .grid .card { margin-bottom: 0; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 6px 10px 6px 0; border-bottom: 1px solid var(--line);
           vertical-align: top; }
  th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em;
       color: var(--muted); font-weight: 600; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  a { color: var(--accent); }
  code { font-size: 13px; }
  .verdict { border-left: 4px solid var(--muted); padding: 10px 14px; background: #f8fafc;
             font-size: 16px; }
  .verdict.up { border-color: var(--good); }
  .verdict.down { border-color: var(--bad); }
  .bar { height: 22px; background: #e2e8f0; border-radius: 4px; overflow: hidden; }
  .bar span { display: block; height: 100%; background: var(--accent); min-width: 2px; }
  .funnel td { border: 0; padding: 5px 10px 5px 0; }
  .funnel td.label { width: 170px; white-space: nowrap; }
  .funnel td.bar-cell { width: 55%; }
  .flow { overflow-x: auto; text-align: center; }
  .flow pre.mermaid { margin: 0; font: inherit; white-space: normal; }
  .flow pre.mermaid:not([data-processed]) { visibility: hidden; }
  .note { background: #fff7ed; border: 1px solid #fed7aa; border-radius: 8px;
          padding: 8px 12px; margin: 0 0 12px; }
  .tag { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px;
         background: #dcfce7; color: var(--good); }
</style>
</head>
<body>
<header class="top"><a href="{{ journeys_href }}">Journeyman · Journeys</a></header>
<main>
{% block main %}{% endblock %}
<p class="muted">As of {{ generated_at }}.</p>
</main>
{% block scripts %}{% endblock %}
</body>
</html>
"""

_JOURNEY = """{% extends "base.html" %}
{% block title %}{{ view.name or view.id }}{% endblock %}
{% block main %}
<h1>{{ view.name or view.id }}</h1>
<p class="muted"><code>{{ view.id }}</code>
  · starts on <code>{{ view.entry_event or nothing }}</code>
  · version in force <code>{{ view.current_version or "none: the file is gone" }}</code>
  {% if view.description %}<br>{{ view.description }}{% endif %}</p>
<div class="kpis">
  <div class="kpi"><span class="muted">Entered</span>
    <b id="kpi-entered">{{ view.entered }}</b>
    {% if stats and stats.control %}<span class="muted">{{ stats.treatment }} got the
      journey, {{ stats.control }} held out</span>{% endif %}</div>
  <div class="kpi"><span class="muted">Running now</span>
    <b id="kpi-running">{{ view.running }}</b></div>
  <div class="kpi"><span class="muted">Converted</span>
    <b id="kpi-converted">{{ stats.conversions.converted if stats else 0 }}</b></div>
  <div class="kpi"><span class="muted">Conversion rate</span>
    <b id="kpi-rate">{{ percent(stats.conversions.rate if stats else None) }}</b></div>
</div>

{% if stats and stats.entry_errors %}
<section class="card" id="entry-errors">
  <h2>Not entered: the entry condition failed</h2>
  <p class="note">{{ stats.entry_errors }} {{ "event" if stats.entry_errors == 1 else "events" }}
    would have entered this journey, but its entry condition or key could not be evaluated
    for them. The latest:</p>
  <table>
    {% for e in view.stats.recent_entry_errors %}
    <tr><td class="muted">{{ e.at.strftime("%Y-%m-%d %H:%M") }}</td><td>{{ e.customer_id }}</td>
      <td>{{ e.error }}</td></tr>
    {% endfor %}
  </table>
</section>
{% endif %}

{% if stats and stats.errors_by_step %}
<section class="card" id="condition-errors">
  <h2>Expressions that failed in runs</h2>
  <p class="note">A condition that cannot be evaluated is never taken as false: the run
    went to the step's on_error, or ended with outcome error. Each run's step log says why.</p>
  <table>
    {% for step, n in stats.errors_by_step.items() %}
    <tr><td>{{ step }}</td><td>{{ n }}</td></tr>
    {% endfor %}
  </table>
</section>
{% endif %}

<section class="card" id="lift">
  <h2>Holdout lift</h2>
  {% if stats and stats.lift %}
  {% set lift = stats.lift %}
  {% set interval = lift.interval %}
  <p class="verdict {% if interval and interval.low > 0 %}up{% endif %}
    {%- if interval and interval.high < 0 %}down{% endif %}">
    {{ lift.verdict[:1] | upper }}{{ lift.verdict[1:] }}.</p>
  <p class="muted">Treatment {{ lift.treatment_converted }} of {{ lift.treatment_entered }}
    converted ({{ percent(lift.treatment_rate) }}); control (held out, sent nothing)
    {{ lift.control_converted }} of {{ lift.control_entered }}
    ({{ percent(lift.control_rate) }}).</p>
  {% else %}
  <p class="verdict">No holdout: every customer gets the journey, so its lift is not
    measured. Set <code>entry.holdout</code> (e.g. <code>10%</code>) to measure it.</p>
  {% endif %}
</section>

<section class="card" id="flow">
  <h2>Flow
    {%- if view.current_version != drawn_version %} (version {{ drawn_version }}){% endif %}</h2>
  {% if stats and stats.now_at_step is none %}
  <p class="note">Temporal did not answer: where running customers are now is not
    shown. Messages sent are.</p>
  {% endif %}
  <p id="flow-error" class="note" hidden></p>
  <div class="flow"><pre class="mermaid">{{ chart }}</pre></div>
</section>

<div class="grid">
  <section class="card" id="funnel">
    <h2>Conversion funnel</h2>
    <table class="funnel">
      {% for stage in funnel %}
      <tr>
        <td class="label">{{ stage.label }}</td>
        <td class="bar-cell"><div class="bar">
          <span style="width: {{ '%.1f' % ((stage.share or 0) * 100) }}%"></span></div></td>
        <td class="n"><b>{{ stage.count }}</b></td>
        <td class="n muted">{{ percent(stage.share) }}</td>
      </tr>
      {% endfor %}
    </table>
    <p class="muted">Customers who got the journey (the holdout is not counted).</p>
  </section>
  <section class="card" id="steps">
    <h2>Steps</h2>
    <table>
      <tr><th>Step</th><th class="n">Here now</th><th class="n">Sent</th><th></th></tr>
      {% for step in steps %}
      <tr>
        <td><code>{{ step.id }}</code><br><span class="muted">{{ step.does }}</span>
          {% if step.timing %}<br><span class="muted">{{ step.timing }}</span>{% endif %}</td>
        <td class="n">{{ nothing if step.now is none else step.now }}</td>
        <td class="n">{{ "" if step.sent is none else step.sent }}</td>
        <td><a href="{{ step.runs_url }}" target="_blank" rel="noopener">runs here</a></td>
      </tr>
      {% endfor %}
    </table>
    {% for split in (view.stats.splits if view.stats else []) %}
    <h2 id="split-{{ split.step }}">Split <code>{{ split.step }}</code>, learning</h2>
    <p class="muted">Thompson sampling on {{ split.event }} within {{ split.within }}.</p>
    <table>
      <tr><th>Case</th><th class="n">Takers</th><th class="n">Converted</th>
        <th class="n">Rate (95%)</th><th class="n">Share now</th><th class="n">P(best)</th></tr>
      {% for case in split.cases %}
      <tr>
        <td><code>{{ case.goto }}</code>{% if case.stopped %} (stopped){% endif %}</td>
        <td class="n">{{ case.takers }}</td>
        <td class="n">{{ case.conversions }} of {{ case.decided }}</td>
        <td class="n">{% if case.rate is none %}{{ nothing }}{% else %}{{ percent(case.rate) }}
          ({{ percent(case.interval.low) }} to {{ percent(case.interval.high) }}){% endif %}</td>
        <td class="n">{{ percent(case.share) }}</td>
        <td class="n">{{ percent(case.probability_best) }}</td>
      </tr>
      {% endfor %}
    </table>
    {% endfor %}
  </section>
</div>

<section class="card" id="messages" style="margin-top: 18px">
  <h2>Messages by channel</h2>
  {% if channels %}
  <table>
    <tr><th>Channel</th><th class="n">Sent</th><th class="n">Delivered</th>
      <th class="n">Opened</th><th class="n">Clicked</th><th class="n">Failed</th>
      <th class="n">Skipped</th><th>Why skipped</th></tr>
    {% for m in channels %}
    <tr><td>{{ m.channel }}</td><td class="n">{{ m.sent }}</td><td class="n">{{ m.delivered }}</td>
      <td class="n">{{ m.opened }}</td><td class="n">{{ m.clicked }}</td>
      <td class="n">{{ m.failed }}</td><td class="n">{{ m.skipped }}</td>
      <td class="muted">
        {%- for reason, n in m.skipped_reasons.items() %}{{ reason }} ({{ n }})
        {%- if not loop.last %}, {% endif %}{% endfor %}</td></tr>
    {% endfor %}
  </table>
  {% else %}
  <p class="muted">No message yet.</p>
  {% endif %}
</section>

<section class="card" id="releases">
  <h2>Releases</h2>
  {% if publish_log %}
  {% set live = publish_log[0] %}
  <p id="live-release">{% if live.enabled %}Live: version <code>{{ live.version }}</code>
    {%- else %}Switched off: takes no new entries (last version <code>{{ live.version }}</code>)
    {%- endif %}, published {{ live.at.strftime("%Y-%m-%d %H:%M") }} by {{ live.by }}.</p>
  <table>
    <tr><th>When (UTC)</th><th>Version</th><th>State</th><th>By</th><th>Message</th></tr>
    {% for r in publish_log %}
    <tr><td>{{ r.at.strftime("%Y-%m-%d %H:%M:%S") }}</td><td><code>{{ r.version }}</code></td>
      <td>{{ "live" if r.enabled else "off" }}</td><td>{{ r.by }}</td>
      <td>{{ r.message }}</td></tr>
    {% endfor %}
  </table>
  {% else %}
  <p class="muted">Not published: <code>journeyman deploy</code> makes it live.</p>
  {% endif %}
</section>

<div class="grid">
  <section class="card" id="versions">
    <h2>Versions</h2>
    <table>
      <tr><th>Version</th><th>Registered</th><th class="n">Running</th></tr>
      {% for v in view.versions|reverse %}
      <tr><td><code>{{ v.version }}</code>
          {% if v.current %}<span class="tag">in force</span>{% endif %}</td>
        <td>{{ v.created_at.strftime("%Y-%m-%d %H:%M") }}</td>
        <td class="n">{{ v.running }}</td></tr>
      {% endfor %}
    </table>
  </section>
  <section class="card" id="temporal">
    <h2>Runs in Temporal</h2>
    <p><a id="temporal-runs" href="{{ runs_url }}" target="_blank" rel="noopener">All runs of
      this journey</a> · <a id="temporal-running" href="{{ running_url }}" target="_blank"
      rel="noopener">running now</a></p>
    <p class="muted">In the Temporal UI, namespace <code>{{ namespace }}</code>, filtered by the
      <code>JourneyId</code> search attribute; each step's <em>runs here</em> adds
      <code>JourneyStep</code>.</p>
    {% if view.outcomes %}
    <h2>Finished runs</h2>
    <table>
      {% for outcome, n in view.outcomes.items() %}
      <tr><td>{{ outcome }}</td><td class="n">{{ n }}</td></tr>
      {% endfor %}
    </table>
    {% endif %}
  </section>
</div>
{% endblock %}
{% block scripts %}
<script src="{{ mermaid_src }}"></script>
<script nonce="{{ nonce }}">
  mermaid.initialize({
    startOnLoad: false, securityLevel: "strict", theme: "neutral",
    flowchart: {wrappingWidth: 300}});
  mermaid.run({querySelector: "pre.mermaid"}).then(
    function () { document.documentElement.dataset.flow = "drawn"; },
    function (error) {
      document.documentElement.dataset.flow = "failed";
      var note = document.getElementById("flow-error");
      note.textContent = "The flow could not be drawn: " + error;
      note.hidden = false;
    });
</script>
{% endblock %}
"""

_INDEX = """{% extends "base.html" %}
{% block title %}Journeys{% endblock %}
{% block main %}
<h1>Journeys</h1>
<section class="card" style="margin-top: 16px">
  {% if journeys %}
  <table>
    <tr><th>Journey</th><th>Starts on</th><th>Version in force</th>
      <th class="n">Entered</th><th class="n">Running</th></tr>
    {% for j in journeys %}
    <tr><td><a href="{{ journeys_href }}/{{ j.id | urlencode }}">{{ j.name or j.id }}</a>
        <br><code class="muted">{{ j.id }}</code></td>
      <td><code>{{ j.entry_event or nothing }}</code></td>
      <td><code>{{ j.current_version or "none: the file is gone" }}</code></td>
      <td class="n">{{ j.entered }}</td><td class="n">{{ j.running }}</td></tr>
    {% endfor %}
  </table>
  {% else %}
  <p class="muted">No journey yet: add one to the journeys folder.</p>
  {% endif %}
</section>
{% endblock %}
"""

_MISSING = """{% extends "base.html" %}
{% block title %}No such journey{% endblock %}
{% block main %}
<h1>No journey <code>{{ journey_id }}</code></h1>
<p>No journey file and no registered version has this id.
  <a href="{{ journeys_href }}">See every journey</a>.</p>
{% endblock %}
"""

_SIGN_IN = """{% extends "base.html" %}
{% block title %}Sign in{% endblock %}
{% block main %}
<h1>Sign in</h1>
<p>The journey pages need the admin token (<code>JOURNEYMAN_ADMIN_TOKEN</code>): give it as
  the password, with any user name.</p>
<p class="muted">{{ reason }}</p>
{% endblock %}
"""

_ENV = Environment(
    loader=DictLoader(
        {
            "base.html": _BASE,
            "journey.html": _JOURNEY,
            "index.html": _INDEX,
            "missing.html": _MISSING,
            "sign_in.html": _SIGN_IN,
        }
    ),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals.update(percent=_percent, nothing=NOTHING)
