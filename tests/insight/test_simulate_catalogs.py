"""simulate with catalogs (`--catalog NAME=FILE`): the shipped journeys read them at send
time, so the timeline shows the guard's decision and the message its current data."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.insight.scenario import load_events
from journeyman.insight.simulate import simulate
from journeyman.messaging import catalogs
from journeyman.settings import get_settings
from tests.insight.test_simulate import REPO, run, settings, timeline, write_journey

__all__ = ["settings"]  # the fixture, shared with tests/insight/test_simulate.py

PROFILE = {"id": "c-ana", "email": "ana@example.com", "first_name": "Ana"}
EVENTS = REPO / "examples" / "back_in_stock_events.jsonl"


def products(tmp_path: Path, stock: int) -> dict[str, list[catalogs.Item]]:
    text = (REPO / "examples" / "products.csv").read_text()
    path = tmp_path / "products.csv"
    path.write_text(text.replace("USD,12,", f"USD,{stock},"))
    return catalogs.read_catalog_files([f"products={path}"])


async def test_shipped_back_in_stock_sends_the_catalogs_price(time_env, settings, tmp_path):
    sim = await simulate(
        REPO / "journeys" / "back_in_stock.yaml",
        PROFILE,
        load_events(EVENTS),
        settings=settings.model_copy(update={"templates_dir": REPO / "templates"}),
        env=time_env,
        catalogs=products(tmp_path, stock=12),
    )
    assert [(e.step, e.action) for e in sim.entries][:2] == [
        ("entry", "entered"),
        ("alert", "sent"),
    ]
    [alert] = [e for e in sim.entries if e.step == "alert"]
    assert (alert.to, alert.summary) == ("ana@example.com", "It's back: Terracotta planter, 40 cm")


async def test_shipped_back_in_stock_sold_out_says_why_in_the_timeline(
    time_env, settings, tmp_path
):
    sim = await simulate(
        REPO / "journeys" / "back_in_stock.yaml",
        PROFILE,
        load_events(EVENTS),
        settings=settings.model_copy(update={"templates_dir": REPO / "templates"}),
        env=time_env,
        catalogs=products(tmp_path, stock=0),
    )
    lines = timeline(sim)
    [alert] = [line for line in lines if line[1] == "alert"]
    assert alert[2].startswith("skipped: only_if false: catalog('products'")
    assert alert[2].endswith("[catalog('products', trigger.properties.product_id).stock = 0]")
    assert [line[2].split(":")[0] for line in lines if line[1] == "reminder"] == ["skipped"]


async def test_templates_read_the_catalog_and_the_viewed_products(time_env, settings, tmp_path):
    journey = write_journey(
        tmp_path,
        """
        id: browse
        name: Browse
        entry: {event: product_viewed}
        steps:
          - id: later
            wait: 4h
          - id: suggest
            send: {template: suggest, channels: [email]}
        """,
        {
            "suggest/email.html": (
                "{% block subject %}"
                "{% for p in viewed_products(3) %}{{ p.name }} {{ p.price }}; {% endfor %}"
                "lamp stock {{ catalog('products', 'sku_lamp_7').stock }}"
                "{% endblock %}<p>hi</p>"
            )
        },
    )
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "0s", "event": "product_viewed", "properties": {"product_id": "sku_lamp_7"}},
            {"at": "1h", "event": "product_viewed", "properties": {"sku": "sku_throw_3"}},
            {"at": "2h", "event": "product_viewed", "properties": {"product_id": "sku_gone"}},
        ],
        catalogs=products(tmp_path, stock=12),
    )
    [suggest] = [e for e in sim.entries if e.step == "suggest"]
    assert suggest.summary == "Linen throw 26.0; Rattan floor lamp 119.0; lamp stock 3"


def test_simulate_command_reads_catalog_files_and_names_a_bad_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOURNEYS_DIR", str(REPO / "journeys"))
    monkeypatch.setenv("TEMPLATES_DIR", str(REPO / "templates"))
    get_settings.cache_clear()
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(PROFILE))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,price\nsku_planter_40,39,extra\n")
    runner = CliRunner()
    args = ["simulate", "back_in_stock", "--profile", str(profile), "--events", str(EVENTS)]
    result = runner.invoke(app, [*args, "--catalog", f"products={bad}"])
    assert result.exit_code == 1
    assert f"{bad}:2: 3 values for 2 columns" in result.output
    result = runner.invoke(app, [*args, "--catalog", "products"])
    assert result.exit_code == 1
    assert "give NAME=FILE" in result.output
    catalog_file = f"products={REPO / 'examples' / 'products.csv'}"
    result = runner.invoke(app, [*args, "--catalog", catalog_file])
    assert result.exit_code == 0, result.output
    assert "sent on email with template back_in_stock" in result.output
    get_settings.cache_clear()


def test_preview_reads_catalog_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEMPLATES_DIR", str(REPO / "templates"))
    get_settings.cache_clear()
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(PROFILE))
    event = tmp_path / "event.json"
    event.write_text(json.dumps(json.loads(EVENTS.read_text())))
    catalog_file = f"products={REPO / 'examples' / 'products.csv'}"
    runner = CliRunner()
    args = ["preview", "back_in_stock", "--profile", str(profile), "--event", str(event)]
    result = runner.invoke(app, [*args, "--channel", "push", "--catalog", catalog_file])
    assert result.exit_code == 0, result.output
    assert "available again, now 39.00 USD." in result.output
    result = runner.invoke(app, [*args, "--channel", "push"])  # no catalog: no price
    assert result.exit_code == 0, result.output
    assert "available again. Tap" in result.output
    browse = ["preview", "recently_viewed", "--profile", str(profile)]
    result = runner.invoke(app, [*browse, "--catalog", catalog_file])
    assert result.exit_code == 0, result.output
    assert "Linen throw" in result.output and "$26.00" in result.output
    get_settings.cache_clear()
