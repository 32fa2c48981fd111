"""The `journeyman` command line, run as users run it (CliRunner, or a subprocess for `dev`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from typer.testing import CliRunner

from journeyman.cli import app, runs_query
from journeyman.names import JOURNEY_WORKFLOW
from journeyman.settings import get_settings
from journeyman.storage.db import Database
from journeyman.storage.models import OutboxMessage
from tests.processes import clean_environment
from tests.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    """A runner in a scratch folder, reading the repository's journeys and templates."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "TEMPORAL_ADDRESS",
        "JOURNEYMAN_WRITE_KEYS",
        "JOURNEYMAN_SERVER_KEYS",
        "JOURNEYMAN_ADMIN_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOURNEYS_DIR", str(REPO / "journeys"))
    monkeypatch.setenv("TEMPLATES_DIR", str(REPO / "templates"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/journeyman.db")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def scratch_journey(root: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A journey in `root/journeys` with a one-file email template `reminder`, and
    JOURNEYS_DIR / TEMPLATES_DIR pointing there."""
    monkeypatch.setenv("JOURNEYS_DIR", str(root / "journeys"))
    monkeypatch.setenv("TEMPLATES_DIR", str(root / "templates"))
    get_settings.cache_clear()
    (root / "journeys").mkdir(exist_ok=True)
    template = root / "templates" / "reminder" / "email.html"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text("{% block subject %}Still there?{% endblock %}<p>Your cart</p>")
    text = textwrap.dedent(text).strip() + "\n"
    path = root / "journeys" / (text.split("id: ", 1)[1].split("\n", 1)[0] + ".yaml")
    path.write_text(text)
    return path


NUDGE = """
id: nudge
name: Cart nudge
entry: {event: cart_abandoned}
goal: {event: order_placed}
steps:
  - id: pause
    wait: 1h
  - id: remind
    send: {template: reminder, channels: [email]}
  - id: wait_open
    wait_for: {event: email_opened, timeout: 1d}
  - id: done
    end: true
"""


# -- validate -------------------------------------------------------------------------


def test_validate_shipped_journeys_prints_one_ok_line_each(cli):
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    shipped = sorted(p.stem for p in (REPO / "journeys").glob("*.yaml"))
    assert [line.split()[1] for line in lines] == shipped
    assert lines[0].startswith("ok abandoned_cart version ")
    assert "9 steps (" in lines[0]


def test_validate_broken_file_prints_positions_and_fails(cli, tmp_path, monkeypatch):
    path = scratch_journey(
        tmp_path,
        """
        id: nudge
        name: Cart nudge
        entry: {event: cart_abandoned}
        steps:
          - id: pause
            wiat: 1h
          - id: remind
            send: {template: reminder, channels: [email]}
            goto: finish
        """,
        monkeypatch,
    )
    result = invoke(cli, "validate", path)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}:6:5: unknown field 'wiat'; did you mean 'wait'?",
        f"{path}:9:11: unknown step 'finish'",
    ]
    assert "2 errors, 0 warnings" in result.stderr


def test_validate_defaults_to_journeys_dir(cli, tmp_path, monkeypatch):
    scratch_journey(tmp_path, NUDGE, monkeypatch)
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok nudge version ")


def test_validate_empty_folder_fails(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke(cli, "validate", tmp_path / "empty")
    assert result.exit_code == 1
    assert "no journeys found" in result.stderr


def test_validate_estimates_each_shipped_sms_under_its_journey(cli):
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    cart = lines.index(next(line for line in lines if line.startswith("ok abandoned_cart ")))
    templates = REPO / "templates"
    assert [line.split(": ")[0] for line in lines[cart + 1 : cart + 5]] == [
        f"  {templates / 'cart_reminder' / 'sms.txt'}",
        f"  {templates / 'cart_reminder' / 'sms.fr.txt'}",
        f"  {templates / 'cart_nudge' / 'sms.txt'}",
        f"  {templates / 'vip_offer_b' / 'sms.txt'}",
    ]
    assert re.fullmatch(
        r"about \d+ characters, 1 segment \(GSM-7, \d+ characters? to spare\)",
        lines[cart + 3].split(": ", 1)[1],
    )


SMS_JOURNEY = """
id: texts
name: Texts
entry: {event: cart_abandoned}
steps:
  - id: text
    send: {template: promo, channels: [sms]}
"""


def sms_journey(root: Path, monkeypatch: pytest.MonkeyPatch, **files: str) -> Path:
    """The journey `texts` sending template `promo` by SMS, with `files` (sms.txt=...)
    in the template's folder."""
    path = scratch_journey(root, SMS_JOURNEY, monkeypatch)
    folder = root / "templates" / "promo"
    folder.mkdir()
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text, encoding="utf-8")
    return path


def test_validate_sms_over_the_segment_limit_is_a_warning_with_exit_0(cli, tmp_path, monkeypatch):
    sms_journey(tmp_path, monkeypatch, sms_txt="Hi {{ profile.first_name }}! " + "a" * 400)
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    sms = tmp_path / "templates" / "promo" / "sms.txt"
    warning, ok, estimate = result.stdout.splitlines()
    assert warning == (
        f"{sms}:1:1: warning: about 415 characters, 3 segments in GSM-7, over "
        "JOURNEYMAN_SMS_SEGMENT_WARNING=2: each segment of a long text holds 153 characters"
    )
    assert ok.startswith("ok texts version ")
    assert estimate == f"  {sms}: about 415 characters, 3 segments (GSM-7, 44 characters to spare)"


def test_validate_sms_warning_names_the_character_that_forces_ucs2(cli, tmp_path, monkeypatch):
    sms_journey(tmp_path, monkeypatch, sms_txt="We\u2019ve saved your cart. " + "a" * 130)
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    warning = result.stdout.splitlines()[0]
    assert warning.endswith(
        "warning: about 153 characters, 3 segments in UCS-2, over "
        "JOURNEYMAN_SMS_SEGMENT_WARNING=2: '\u2019' (U+2019 RIGHT SINGLE QUOTATION MARK) is not in "
        "the GSM-7 alphabet, so the text goes as UCS-2 and each segment holds 67 characters, "
        "not 153; in GSM-7 it would take 1 segment"
    )


def test_validate_reports_every_locale_variant_of_an_sms(cli, tmp_path, monkeypatch):
    sms_journey(tmp_path, monkeypatch, sms_txt="Hello", sms_fr_txt="Bonjour \u2019")
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "templates" / "promo"
    assert result.stdout.splitlines()[1:] == [
        f"  {folder / 'sms.txt'}: about 5 characters, 1 segment (GSM-7, 155 characters to spare)",
        f"  {folder / 'sms.fr.txt'}: about 9 characters, 1 segment "
        "(UCS-2 because of '\u2019' U+2019 RIGHT SINGLE QUOTATION MARK, 61 characters to spare)",
    ]


def test_validate_sms_segment_limit_comes_from_the_environment(cli, tmp_path, monkeypatch):
    sms_journey(tmp_path, monkeypatch, sms_txt="a" * 400)
    monkeypatch.setenv("JOURNEYMAN_SMS_SEGMENT_WARNING", "3")
    get_settings.cache_clear()
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stdout
    assert "3 segments (GSM-7" in result.stdout


def test_validate_strict_fails_on_an_sms_over_the_limit(cli, tmp_path, monkeypatch):
    sms_journey(tmp_path, monkeypatch, sms_txt="a" * 400)
    result = invoke(cli, "validate", "--strict")
    assert result.exit_code == 1
    assert "over JOURNEYMAN_SMS_SEGMENT_WARNING=2" in result.stdout
    assert "0 errors, 1 warning" in result.stderr


def test_validate_sms_that_cannot_render_with_sample_data_is_a_warning(cli, tmp_path, monkeypatch):
    sms_journey(tmp_path, monkeypatch, sms_txt="Hi\n{{ 1 // 0 }}")
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    sms = tmp_path / "templates" / "promo" / "sms.txt"
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{sms}:2:1: warning: cannot estimate the SMS length with sample data: "
        "ZeroDivisionError: integer division or modulo by zero"
    )
    assert lines[2] == f"  {sms}: length unknown (see the warning above)"


# -- graph and schema -----------------------------------------------------------------


def test_graph_by_journey_id_is_a_mermaid_flowchart(cli):
    result = invoke(cli, "graph", "abandoned_cart")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart")
    assert "first_reminder" in result.stdout


def test_graph_by_path(cli):
    result = invoke(cli, "graph", REPO / "journeys" / "welcome_series.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart")


def test_graph_of_unknown_journey_fails(cli):
    result = invoke(cli, "graph", "no_such_journey")
    assert result.exit_code == 1
    assert "no journey 'no_such_journey'" in result.stderr


def test_schema_is_json_schema(cli):
    result = invoke(cli, "schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "steps" in schema["properties"]


# -- simulate -------------------------------------------------------------------------


def test_simulate_prints_the_timeline(cli, tmp_path, monkeypatch):
    path = scratch_journey(tmp_path, NUDGE, monkeypatch)
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"at": "0s", "type": "track", "event": "cart_abandoned", "properties": {"cart_id": "k"}}\n'
        '{"at": "3h", "type": "track", "event": "order_placed", "properties": {"cart_id": "k"}}\n'
    )
    profile = tmp_path / "profile.json"
    profile.write_text('{"id": "c1", "email": "ana@example.com"}')
    result = invoke(
        cli,
        "simulate",
        path,
        "--profile",
        profile,
        "--events",
        events,
        "--timeout",
        "60",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("journey nudge (Cart nudge) version ")
    assert ", customer c1, trigger at 20" in lines[0]
    assert lines[1:-1] == [
        "  +0s       entry      entered on cart_abandoned",
        "  +1h 00m   pause      waited 1h",
        "  +1h 00m   remind     sent on email with template reminder",
        "                         to ana@example.com: Still there?",
        "  +3h 00m   wait_open  converted (goal order_placed)",
    ]
    assert lines[-1].startswith("outcome: converted after 3h 00m of virtual time, 1 message sent, ")
    assert lines[-1].endswith(" s real")


def test_simulate_json_lines(cli, tmp_path, monkeypatch):
    path = scratch_journey(tmp_path, NUDGE, monkeypatch)
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"at": "0s", "event": "cart_abandoned"}\n{"at": "3h", "event": "order_placed"}\n'
    )
    profile = tmp_path / "profile.json"
    profile.write_text('{"id": "c1", "email": "ana@example.com"}')
    result = invoke(cli, "simulate", path, "--profile", profile, "--events", events, "--json")
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["at_seconds"], e["step"], e["action"]) for e in entries] == [
        (0, "entry", "entered"),
        (3600, "pause", "waited"),
        (3600, "remind", "sent"),
        (10800, "wait_open", "converted"),
    ]
    assert (entries[2]["channel"], entries[2]["template"]) == ("email", "reminder")
    assert entries[3]["detail"] == "goal order_placed"
    assert "outcome: converted" in result.stderr


def test_simulate_shipped_abandoned_cart_with_the_examples(cli):
    result = invoke(
        cli,
        "simulate",
        "abandoned_cart",
        "--profile",
        EXAMPLES / "profile.json",
        "--events",
        EXAMPLES / "abandoned_cart_events.jsonl",
        "--json",
        "--start",
        "10:00",
    )
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert "deferred" not in [e["action"] for e in entries]
    sends = [(e["step"], e["channel"], e["template"]) for e in entries if e["action"] == "sent"]
    assert sends == [
        ("first_reminder", "email", "cart_reminder"),
        ("sms_nudge", "sms", "cart_nudge"),
    ]
    assert entries[-1]["action"] == "ended"


def _simulate_abandoned_cart(cli, tmp_path: Path, lines: str):
    """`simulate abandoned_cart` with the example profile and `lines` as the events file."""
    events = tmp_path / "events.jsonl"
    events.write_text(lines)
    args = ["--profile", EXAMPLES / "profile.json", "--events", events]
    return events, invoke(cli, "simulate", "abandoned_cart", *args)


def test_simulate_trigger_that_does_not_enter_exits_1_with_the_reason(cli, tmp_path):
    _events, result = _simulate_abandoned_cart(
        cli, tmp_path, '{"at": "0s", "event": "cart_abandoned", "properties": {"cart_total": 5}}\n'
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "not entered: abandoned_cart: entry condition false" in result.stderr


def test_simulate_bad_events_file_names_the_line(cli, tmp_path):
    events, result = _simulate_abandoned_cart(
        cli, tmp_path, '{"at": "0s", "event": "cart_abandoned"}\n{"event": "order_placed"}\n'
    )
    assert result.exit_code == 1
    assert f'{events}:2: missing "at"' in result.stderr


# -- preview --------------------------------------------------------------------------


def test_preview_renders_every_channel_of_a_template(cli, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text('{"id": "c1", "first_name": "Ana", "email": "ana@example.com"}')
    result = invoke(
        cli,
        "preview",
        "cart_reminder",
        "--profile",
        profile,
        "--event",
        EXAMPLES / "cart_abandoned.json",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "== email (cart_reminder/email.html)" in out
    assert "Subject:   Ana, you left something in your cart" in out
    assert "Preheader: " in out
    assert "== sms (cart_reminder/sms.txt)" in out
    assert "1 segment, GSM-7" in out
    assert "== push (cart_reminder/push.txt)" in out
    assert "Title: Your cart misses you" in out
    assert 'Data:  {"deep_link": "larkspur://cart/cart_9", "cart_id": "cart_9"}' in out


def test_preview_one_channel_in_the_profiles_locale(cli):
    result = invoke(
        cli,
        "preview",
        "cart_reminder",
        "--profile",
        EXAMPLES / "profile.json",
        "--event",
        EXAMPLES / "cart_abandoned.json",
        "--channel",
        "sms",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("== sms (cart_reminder/sms.fr.txt, locale fr)")
    assert "== email" not in result.stdout


@pytest.mark.clock_sensitive
def test_preview_renders_what_a_send_can_read_history_clock_and_unsubscribe_link(
    cli, tmp_path, monkeypatch, clock
):
    templates = tmp_path / "templates"
    (templates / "birthday").mkdir(parents=True)
    (templates / "birthday" / "sms.txt").write_text(
        "{% if anniversary(profile.birthday) %}Happy birthday{% else %}Hello{% endif %}"
        " {{ profile.first_name }}, {{ recent('order_placed') | length }} orders,"
        " {{ count('order_placed') }} in all, {{ today.year }}. Stop: {{ unsubscribe_url }}"
    )
    monkeypatch.setenv("TEMPLATES_DIR", str(templates))
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://shop.example.com/jm")
    profile = tmp_path / "profile.json"
    today = clock.date()  # Python's clock is there for the test; 1988 has a 29 February
    profile.write_text(f'{{"id": "c1", "first_name": "Ana", "birthday": "1988-{today:%m-%d}"}}')

    result = invoke(cli, "preview", "birthday", "--profile", profile)

    assert result.exit_code == 0, result.output
    assert (
        f"Happy birthday Ana, 0 orders, 0 in all, {today.year}."
        " Stop: https://shop.example.com/jm/unsubscribe/preview"
    ) in result.stdout


def test_preview_unknown_template_fails(cli):
    result = invoke(cli, "preview", "nope", "--profile", EXAMPLES / "profile.json")
    assert result.exit_code == 1
    assert "no template 'nope'" in result.stderr


# -- outbox ---------------------------------------------------------------------------


def test_outbox_lists_messages_newest_last(cli, tmp_path):
    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    db.create_all()
    with db.session() as session:
        for n, (customer, channel, to, subject, body) in enumerate(
            [
                ("c1", "email", "ana@example.com", "Your cart", "<p>hi</p>"),
                ("c2", "sms", "+15550001", None, "Larkspur: your cart\nReply STOP"),
                ("c1", "push", "tok-1", "Come back", "Tap to check out"),
            ]
        ):
            session.add(
                OutboxMessage(
                    delivery_id=n + 1,
                    customer_id=customer,
                    journey_id="abandoned_cart",
                    channel=channel,
                    to=to,
                    subject=subject,
                    body=body,
                    created_at=datetime(2026, 1, 2, 3, 4, n, tzinfo=UTC),
                )
            )
    db.dispose()
    result = invoke(cli, "outbox")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "time",
        "(UTC)",
        "customer",
        "channel",
        "to",
        "subject",
        "/",
        "text",
    ]
    assert [line.split()[2:5] for line in lines[1:]] == [
        ["c1", "email", "ana@example.com"],
        ["c2", "sms", "+15550001"],
        ["c1", "push", "tok-1"],
    ]
    assert lines[1].startswith("2026-01-02 03:04:00")
    assert lines[2].endswith("Larkspur: your cart")
    only = invoke(cli, "outbox", "--customer", "c1")
    assert [line.split()[3] for line in only.stdout.splitlines()[1:]] == ["email", "push"]


def test_outbox_empty(cli):
    result = invoke(cli, "outbox", "--customer", "nobody")
    assert result.exit_code == 0
    assert result.stdout.strip() == "the outbox is empty for customer nobody"


# -- runs -----------------------------------------------------------------------------


def test_runs_query_filters_on_search_attributes():
    assert runs_query(None, None) == f'WorkflowType = "{JOURNEY_WORKFLOW}"'
    assert runs_query("abandoned_cart", 'c"1') == (
        f'WorkflowType = "{JOURNEY_WORKFLOW}" AND JourneyId = "abandoned_cart" '
        'AND CustomerId = "c\\"1"'
    )


@pytest.mark.slow
async def test_runs_lists_journey_runs_from_visibility(local_env, db, tmp_path, monkeypatch):
    from temporalio.common import TypedSearchAttributes

    from journeyman.contracts import CustomerEvent, JourneyInput
    from journeyman.events import starting
    from journeyman.events.routing import Catalog, Router
    from journeyman.settings import Settings
    from journeyman.storage.models import Customer
    from journeyman.wiring import build_worker, journey_activities

    path = scratch_journey(tmp_path, NUDGE, monkeypatch)
    from journeyman.dsl import compile_file

    catalog = Catalog([compile_file(path, tmp_path / "templates")])
    catalog.register(db)
    customer = f"c-{uuid.uuid4().hex[:8]}"
    with db.session() as session:
        session.add(Customer(id=customer, email="ana@example.com", traits={}, push_tokens=[]))
    task_queue = f"tq-{uuid.uuid4()}"
    settings = Settings(database_url=db.url, secret_key="cli-test-secret")
    worker = build_worker(local_env.client, task_queue, journey_activities(db, settings))
    async with worker:
        router = Router(local_env.client, db, catalog, task_queue)
        event = CustomerEvent(message_id=str(uuid.uuid4()), name="cart_abandoned")
        routed = await router.route(customer, event)
        assert routed.entered == [f"nudge/{customer}"]

        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("TEMPORAL_ADDRESS", local_env.client.service_client.config.target_host)
        get_settings.cache_clear()
        runner = CliRunner()
        deadline = time.monotonic() + 20
        while True:  # visibility is eventually consistent
            result = await asyncio.to_thread(
                runner.invoke, app, ["runs", "--journey", "nudge", "--customer", customer]
            )
            assert result.exit_code == 0, result.output
            if customer in result.stdout or time.monotonic() > deadline:
                break
        get_settings.cache_clear()
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["workflow", "id", "status", "step", "started", "(UTC)"]
        assert lines[1].split()[:3] == [f"nudge/{customer}", "running", "pause"]

        # The router started the run in era 1 (`JourneyEra`): it takes every patch there
        # is unasked, so it records no marker, and lacks none.
        def without(patch: str, who: str = customer) -> str:
            args = ["runs", "--journey", "nudge", "--customer", who]
            result = runner.invoke(app, [*args, "--without-patch", patch])
            assert result.exit_code == 0, result.output
            return result.stdout

        monkeypatch.setenv("TEMPORAL_ADDRESS", local_env.client.service_client.config.target_host)
        get_settings.cache_clear()

        async def unlisted(patch: str, who: str = customer) -> bool:
            return "no runs found" in await asyncio.to_thread(without, patch, who)

        # A run from before eras, started as the router started runs then: no `era` in
        # its input, no `JourneyEra`. It asks the patches, so it records perf-fold-steps,
        # but not first-wait-hears-arrivals (asked only by a first wait_for).
        before = f"c-{uuid.uuid4().hex[:8]}"
        with db.session() as session:
            session.add(Customer(id=before, email="bo@example.com", traits={}, push_tokens=[]))
        plan = catalog.compiled["nudge"].plan
        attributes = starting.start_search_attributes(plan, before)
        old_attributes = TypedSearchAttributes(
            [pair for pair in attributes if pair.key.name != "JourneyEra"]
        )
        old = await local_env.client.start_workflow(
            JOURNEY_WORKFLOW,
            JourneyInput(plan=plan, customer_id=before, trigger=event),
            id=f"nudge/{before}",
            task_queue=task_queue,
            search_attributes=old_attributes,
        )
        try:
            # Visibility is eventually consistent: wait for the old run to show (it lacks
            # first-wait-hears-arrivals), then for its marker.
            async def listed_before() -> bool:
                return not await unlisted("first-wait-hears-arrivals", before)

            await eventually(listed_before, what="the old run shows")
            await eventually(
                lambda: unlisted("perf-fold-steps", before), what="the old run's marker"
            )
            assert await unlisted("perf-fold-steps")
            assert await unlisted("first-wait-hears-arrivals")
            assert await unlisted("perf-one-marker")
            assert await unlisted("lean-steps")
            assert await unlisted("opt-best-hour")
            # record-steps is superseded by lean-steps: a lean run does not need it.
            assert await unlisted("record-steps")
            assert await unlisted("record-steps", before)
            assert await unlisted("opt-best-hour", before)  # perf-fold-steps stands for it
            assert not await unlisted("first-wait-hears-arrivals", before)
        finally:
            get_settings.cache_clear()
        await old.terminate()
        await local_env.client.get_workflow_handle(f"nudge/{customer}").terminate()


def test_runs_without_patch_queries_runs_lacking_its_marker():
    assert runs_query(None, None, "lean-steps") == (
        f'WorkflowType = "{JOURNEY_WORKFLOW}" AND ExecutionStatus = "Running" AND '
        '(TemporalChangeVersion IS NULL OR (TemporalChangeVersion != "lean-steps" '
        'AND TemporalChangeVersion != "perf-one-marker" '
        'AND TemporalChangeVersion != "perf-fold-steps")) '
        "AND (JourneyEra IS NULL OR JourneyEra < 1)"
    )
    assert runs_query(None, None, "record-steps").endswith(
        '(TemporalChangeVersion IS NULL OR (TemporalChangeVersion != "record-steps" '
        'AND TemporalChangeVersion != "lean-steps" AND TemporalChangeVersion != "perf-one-marker" '
        'AND TemporalChangeVersion != "perf-fold-steps")) '
        "AND (JourneyEra IS NULL OR JourneyEra < 1)"
    )


def test_runs_without_an_unknown_patch_names_the_patches(cli):
    result = invoke(cli, "runs", "--without-patch", "nope")
    assert result.exit_code == 1
    assert "unknown patch 'nope'" in result.output
    assert "lean-steps" in result.output


def test_runs_without_temporal_says_so(cli, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
    get_settings.cache_clear()
    result = invoke(cli, "runs")
    assert result.exit_code == 1
    assert f"cannot reach Temporal at 127.0.0.1:{port}" in result.stderr


# -- stats ----------------------------------------------------------------------------


@pytest.fixture
def no_temporal(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> int:
    """TEMPORAL_ADDRESS at a port nothing listens on; returns the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
    get_settings.cache_clear()
    return int(port)


def _journey_with_holdout(tmp_path: Path) -> None:
    from tests.insight.test_stats import T0, add_delivery, add_runs, add_version

    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    db.create_all()
    with db.session() as session:
        add_version(session, holdout="20%")
        converted = add_runs(session, 120, outcome="converted", ended=T0 + timedelta(hours=3))
        for workflow_id in converted[:100]:
            add_delivery(session, workflow_id, delivered_at=T0, opened_at=T0)
        add_runs(session, 270, outcome="completed")
        add_runs(session, 10)
        add_runs(session, 20, holdout=True, outcome="converted")
        add_runs(session, 80, holdout=True, outcome="completed")
        add_delivery(session, "cart/c1", channel=None, status="skipped", reason="unknown customer")
    db.dispose()


def test_stats_prints_a_report_with_the_holdout_lift(cli, tmp_path, no_temporal):
    _journey_with_holdout(tmp_path)
    result = invoke(cli, "stats", "cart")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("cart — Cart reminder (all versions)\n")
    assert re.search(r"entered\s+500\s+treatment 400, control 100 \(holdout 20%\)", out)
    assert re.search(r"running now\s+10\n", out)
    assert "now at each step: unavailable (Temporal cannot be reached)" in out
    assert re.search(r"email\s+100\s+100 \(100\.0%\)\s+100 \(100\.0%\)\s+0 \(0\.0%\)", out)
    assert re.search(r"unknown customer\s+1\n", out)
    assert "conversions: 120 of 400 entered (30.0%) in the treatment group" in out
    assert "by channel: email 100, no message 20" in out
    assert "treatment 30.0% (120/400) vs control 20.0% (20/100)" in out
    assert (
        "the journey lifts conversion by 10.0 points (95% CI 0.1 to 18.1); relative lift +50%"
        in out
    )


def test_stats_shows_the_events_an_entry_condition_failed_on(cli, tmp_path, no_temporal):
    from journeyman.storage.models import EntryError
    from tests.insight.test_stats import T0

    _journey_with_holdout(tmp_path)
    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    with db.session() as session:
        for n in range(7):
            session.add(
                EntryError(
                    journey_id="cart",
                    version="v1",
                    message_id=f"m{n}",
                    customer_id=f"c{n}",
                    error="event.properties.cart_total is not defined",
                    at=T0 + timedelta(minutes=n),
                )
            )
    db.dispose()

    result = invoke(cli, "stats", "cart")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "not entered: 7 events whose entry condition or key failed to evaluate" in out
    assert re.search(r"c6\s+event.properties.cart_total is not defined", out)
    assert "c1 " not in out  # the latest 5 only


def test_stats_counts_the_conditions_that_failed_in_runs_by_step(cli, tmp_path, no_temporal):
    from journeyman.storage.models import StepLog
    from tests.insight.test_stats import T0

    _journey_with_holdout(tmp_path)
    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    with db.session() as session:
        for n in range(3):
            session.add(
                StepLog(
                    run_id=f"r{n}",
                    seq=1,
                    journey_id="cart",
                    version="v1",
                    customer_id=f"c{n}",
                    step_id="vip_check",
                    action="error",
                    detail={"text": "profile.lifetime_value > 500: not defined"},
                    at=T0,
                )
            )
    db.dispose()

    result = invoke(cli, "stats", "cart")

    assert result.exit_code == 0, result.output
    assert "expressions that failed in runs (each run went to on_error or ended in error)" in (
        result.stdout
    )
    assert re.search(r"\n  vip_check\s+3\n", result.stdout)


def test_stats_as_json(cli, tmp_path, no_temporal):
    _journey_with_holdout(tmp_path)
    result = invoke(cli, "stats", "cart", "--version", "v1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["journey_id"], report["overall"]["version"]) == ("cart", "v1")
    assert report["overall"]["now_at_step"] is None
    assert report["overall"]["lift"]["interval"]["low"] == pytest.approx(0.0014, abs=5e-4)


def test_stats_of_an_unknown_journey_fails_clearly(cli, no_temporal):
    result = invoke(cli, "stats", "nope")
    assert result.exit_code == 1
    assert "no journey 'nope' is recorded" in result.stderr


@pytest.mark.slow
async def test_stats_counts_running_runs_by_step_from_visibility(
    local_env, db, tmp_path, monkeypatch
):
    from journeyman.contracts import CustomerEvent
    from journeyman.dsl import compile_file
    from journeyman.events.routing import Catalog, Router
    from journeyman.settings import Settings
    from journeyman.wiring import build_worker, journey_activities

    path = scratch_journey(tmp_path, NUDGE.replace("id: nudge", "id: nudge_stats"), monkeypatch)
    catalog = Catalog([compile_file(path, tmp_path / "templates")])
    catalog.register(db)
    task_queue = f"tq-{uuid.uuid4()}"
    settings = Settings(database_url=db.url, secret_key="cli-test-secret")
    worker = build_worker(local_env.client, task_queue, journey_activities(db, settings))
    customer = f"c-{uuid.uuid4().hex[:8]}"
    async with worker:
        router = Router(local_env.client, db, catalog, task_queue)
        event = CustomerEvent(message_id=str(uuid.uuid4()), name="cart_abandoned")
        assert (await router.route(customer, event)).entered == [f"nudge_stats/{customer}"]
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DATABASE_URL", db.url)
        monkeypatch.setenv("TEMPORAL_ADDRESS", local_env.client.service_client.config.target_host)
        get_settings.cache_clear()
        deadline = time.monotonic() + 20
        while True:  # visibility is eventually consistent
            result = await asyncio.to_thread(
                CliRunner().invoke, app, ["stats", "nudge_stats", "--json"]
            )
            assert result.exit_code == 0, result.output
            steps = json.loads(result.stdout)["overall"]["now_at_step"]
            if (steps and steps.get("pause")) or time.monotonic() > deadline:
                break
        get_settings.cache_clear()
        assert steps == {"pause": 1, "remind": 0, "wait_open": 0, "done": 0}
        await local_env.client.get_workflow_handle(f"nudge_stats/{customer}").terminate()


# -- send-event -----------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, self.headers.get("Authorization", ""), body))
        payload = b'{"success": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_stub() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    """An HTTP server that records what is posted to it and answers 200."""
    received: list[tuple[str, str, Any]] = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join(5)


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def test_send_event_posts_a_track_with_the_write_key(cli, api_stub):
    url, received = api_stub
    result = invoke(
        cli, "send-event", EXAMPLES / "cart_abandoned.json", "--url", url, "--write-key", "wk_1"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"200 OK from POST {url}/v1/track")
    assert '{"success": true}' in result.stdout
    [(route, auth, body)] = received
    assert (route, auth) == ("/v1/track", basic("wk_1"))
    assert body["event"] == "cart_abandoned"


def test_send_event_posts_a_list_as_a_batch_with_the_configured_key(
    cli, api_stub, tmp_path, monkeypatch
):
    url, received = api_stub
    monkeypatch.setenv("JOURNEYMAN_WRITE_KEYS", "wk_a, wk_b")
    get_settings.cache_clear()
    events = tmp_path / "events.json"
    events.write_text('[{"type": "track", "userId": "c1", "event": "a"}, {"type": "identify"}]')
    result = invoke(cli, "send-event", events, "--url", url)
    assert result.exit_code == 0, result.output
    [(route, auth, body)] = received
    assert (route, auth) == ("/v1/batch", basic("wk_a"))
    assert [e["type"] for e in body["batch"]] == ["track", "identify"]


def test_send_event_reads_the_key_dev_kept(cli, api_stub, tmp_path):
    url, received = api_stub
    (tmp_path / ".journeyman").mkdir()
    (tmp_path / ".journeyman" / "write_key").write_text("wk_kept\n")
    result = invoke(cli, "send-event", EXAMPLES / "cart_abandoned.json", "--url", url)
    assert result.exit_code == 0, result.output
    assert received[0][1] == basic("wk_kept")


def test_send_event_prefers_the_server_key_dev_kept(cli, api_stub, tmp_path):
    """Trying journeys by hand is the operator acting as their own server: it may set
    any trait, which the public write key may not."""
    url, received = api_stub
    (tmp_path / ".journeyman").mkdir()
    (tmp_path / ".journeyman" / "write_key").write_text("wk_kept\n")
    (tmp_path / ".journeyman" / "server_key").write_text("sk_kept\n")
    result = invoke(cli, "send-event", EXAMPLES / "cart_abandoned.json", "--url", url)
    assert result.exit_code == 0, result.output
    assert received[0][1] == basic("sk_kept")


def test_send_event_without_a_key_says_how_to_get_one(cli):
    result = invoke(cli, "send-event", EXAMPLES / "cart_abandoned.json")
    assert result.exit_code == 1
    assert "no write key" in result.stderr


# -- dev ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dev_with_a_broken_journey_prints_positions_and_starts_nothing(cli, tmp_path, monkeypatch):
    path = scratch_journey(tmp_path, NUDGE.replace("wait: 1h", "wait: 1hour"), monkeypatch)
    result = invoke(cli, "dev", "--temporal-port", free_port())
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}:7:11: '1hour' is not a duration")
    assert "fix the journeys above" in result.stderr
    assert not (tmp_path / ".journeyman" / "temporal.db").exists()


def test_dev_with_a_half_configured_provider_says_what_to_set(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "secret")
    monkeypatch.delenv("TWILIO_FROM", raising=False)
    monkeypatch.delenv("TWILIO_MESSAGING_SERVICE_SID", raising=False)
    get_settings.cache_clear()
    result = invoke(cli, "dev", "--temporal-port", free_port())
    get_settings.cache_clear()
    assert result.exit_code == 1
    assert "TWILIO_FROM" in result.stderr and "TWILIO_MESSAGING_SERVICE_SID" in result.stderr
    assert not (tmp_path / ".journeyman" / "temporal.db").exists()


def test_dev_with_a_malformed_rate_limit_names_the_setting(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TWILIO_RATE_LIMIT", "10 per second")
    get_settings.cache_clear()
    result = invoke(cli, "dev", "--temporal-port", free_port())
    get_settings.cache_clear()
    assert result.exit_code == 1
    assert result.stderr.startswith("journeyman dev: TWILIO_RATE_LIMIT=10 per second: a rate")
    assert '"600/m"' in result.stderr
    assert not (tmp_path / ".journeyman" / "temporal.db").exists()


@pytest.mark.slow
def test_dev_starts_everything_and_stops_cleanly_on_ctrl_c(tmp_path):
    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    env = _user_environment()
    journeyman = shutil.which("journeyman", path=str(Path(sys.executable).parent))
    assert journeyman is not None
    log = (tmp_path / "stderr.txt").open("w")
    process = subprocess.Popen(
        [
            *(journeyman, "dev", "--port", str(api_port)),
            *("--temporal-port", str(temporal_port), "--ui-port", str(ui_port)),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        banner = _read_until(process, "Server key:", deadline=time.monotonic() + 60)
        assert f"Temporal UI:  http://localhost:{ui_port}/namespaces/default/workflows" in banner
        assert f"  API:          http://localhost:{api_port}" in banner or "not started" in banner
        temporal_pid = int(banner.split("(dev server, pid ", 1)[1].split(")", 1)[0])
        assert httpx.get(f"http://localhost:{ui_port}/", timeout=10).status_code == 200
        write_key = banner.split("Write key:", 1)[1].split()[0]
        assert (tmp_path / ".journeyman" / "write_key").read_text().strip() == write_key
        server_key = banner.split("Server key:", 1)[1].split()[0]
        assert (tmp_path / ".journeyman" / "server_key").read_text().strip() == server_key
        assert server_key.startswith("sk_") and server_key != write_key
        if "not started" not in banner:
            # The write key stays a client key; the server key may do what it may not.
            api = f"http://127.0.0.1:{api_port}/v1/identify"
            first = {"userId": "c1", "traits": {"email": "c1@example.com"}}
            assert httpx.post(api, json=first, auth=(write_key, ""), timeout=10).status_code == 200
            change = {"userId": "c1", "traits": {"email": "other@example.com"}}
            refused = httpx.post(api, json=change, auth=(write_key, ""), timeout=10)
            assert refused.status_code == 403
            assert httpx.post(api, json=change, auth=(server_key, ""), timeout=10).is_success
        assert (tmp_path / ".journeyman" / "temporal.db").is_file()
        # The dev state is its owner's only (the server's database too, made by it).
        for state in (tmp_path / ".journeyman").iterdir():
            assert state.stat().st_mode & 0o777 == 0o600, state

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        with pytest.raises(ProcessLookupError):
            os.kill(temporal_pid, 0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
        log.close()


def _read_until(process: subprocess.Popen[str], marker: str, deadline: float) -> str:
    """Lines of stdout up to and including the one with `marker` (a reader thread keeps
    the wait bounded even when the process prints nothing)."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if marker in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(max(0.0, deadline - time.monotonic())):
        process.kill()
        process.wait(10)
        pytest.fail(f"no {marker!r} from journeyman dev:\n{''.join(seen)}")
    return "".join(seen)


@pytest.mark.slow
def test_dev_stops_the_temporal_server_a_killed_dev_left_running(tmp_path):
    """`dev` killed outright (SIGKILL) cannot stop its Temporal dev server, which runs in
    a session of its own; the next `dev` in that folder stops the orphan and starts."""
    ports = [str(free_port()) for _ in range(3)]
    env = _user_environment()
    journeyman = shutil.which("journeyman", path=str(Path(sys.executable).parent))
    assert journeyman is not None
    command = [journeyman, "dev", "--port", ports[0], "--temporal-port", ports[1]]
    command += ["--ui-port", ports[2]]

    def start(log: IO[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )

    def temporal_pid(banner: str) -> int:
        return int(banner.split("(dev server, pid ", 1)[1].split(")", 1)[0])

    first_log = (tmp_path / "first.txt").open("w")
    second_log = (tmp_path / "second.txt").open("w")
    first = start(first_log)
    second = None
    orphan = None
    try:
        orphan = temporal_pid(_read_until(first, "Write key:", deadline=time.monotonic() + 60))
        first.kill()
        first.wait(10)
        assert not _gone(orphan)  # still running, on the ports the next dev wants

        second = start(second_log)
        banner = _read_until(second, "Write key:", deadline=time.monotonic() + 60)
        assert temporal_pid(banner) != orphan
        assert _gone(orphan)
        second_log.flush()
        assert (
            f"stopped the Temporal dev server (pid {orphan})"
            in (tmp_path / "second.txt").read_text()
        )
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=20) == 0
        assert not (tmp_path / ".journeyman" / "temporal.pid").exists()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
            if process is not None and process.stdout is not None:
                process.stdout.close()
        if orphan is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        first_log.close()
        second_log.close()


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (waiting for whoever adopted it to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# -- DSL v2: simulate --verbose, secrets ------------------------------------------------


def test_simulate_verbose_prints_bodies_and_webhook_requests_without_secrets(
    cli, tmp_path, monkeypatch
):
    monkeypatch.setenv("HELPDESK_TOKEN", "hd_live_5bd1c2e9f7")
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"at": "0s", "event": "nps_submitted", '
        '"properties": {"score": "4", "ticket_id": "T-4411", "comment": "slow"}}\n'
    )
    profile = tmp_path / "profile.json"
    profile.write_text('{"id": "c1", "email": "ana@example.com", "first_name": "Ana"}')
    args = ["simulate", "support_nps", "--profile", profile, "--events", events, "--verbose"]
    result = invoke(cli, *args)
    assert result.exit_code == 0, result.output
    assert "hd_live_5bd1c2e9f7" not in result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    at = lines.index("POST https://helpdesk.example.com/api/v2/callbacks")
    assert "authorization: Bearer [secret HELPDESK_TOKEN]" in lines[at + 1 : at + 5]
    body = json.loads(next(line for line in lines[at:] if line.startswith("{")))
    assert body == {"customer_id": "c1", "ticket_id": "T-4411", "score": 4, "comment": "slow"}
    # The apology's rendered text, line by line under its entry.
    assert (
        "| Someone from our support team will call you within one working day to hear "
        "what happened and what we can do." in lines
    )

    as_json = invoke(cli, *args, "--json")
    entries = [json.loads(line) for line in as_json.stdout.splitlines()]
    [hook] = [e for e in entries if e["step"] == "request_callback"]
    assert hook["request"]["headers"]["authorization"] == "Bearer [secret HELPDESK_TOKEN]"
    [mail] = [e for e in entries if e["step"] == "tell_detractor"]
    assert "call you within one working day" in mail["body"]
    assert "hd_live_5bd1c2e9f7" not in as_json.output


def test_validate_lists_the_secrets_a_journey_reads_and_which_are_unset(cli, monkeypatch):
    monkeypatch.delenv("HELPDESK_TOKEN", raising=False)
    result = invoke(cli, "validate", REPO / "journeys" / "support_nps.yaml")
    assert result.exit_code == 0, result.output
    assert (
        "  secrets read from the worker's environment: HELPDESK_TOKEN "
        "(not set in this environment)" in result.stdout.splitlines()
    )
    monkeypatch.setenv("HELPDESK_TOKEN", "hd_live_5bd1c2e9f7")
    result = invoke(cli, "validate", REPO / "journeys" / "support_nps.yaml")
    assert "  secrets read from the worker's environment: HELPDESK_TOKEN" in result.stdout
    assert "hd_live_5bd1c2e9f7" not in result.output


def _user_environment() -> dict[str, str]:
    """`journeyman dev` as a user starts it: no setting of ours from this process (an
    in-process `dev` test exports what it generated, JOURNEYMAN_SERVER_KEYS included),
    no plaintext switch, the repository's journeys."""
    env = clean_environment(
        JOURNEYS_DIR=str(REPO / "journeys"), TEMPLATES_DIR=str(REPO / "templates")
    )
    env.pop("JOURNEYMAN_PAYLOAD_PLAINTEXT", None)
    return env
