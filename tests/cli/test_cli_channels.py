"""`validate`, `preview` and `simulate` with the whatsapp and inbox channels."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from journeyman.messaging.whatsapp import ContentError, parse_whatsapp_content
from tests.cli.test_cli import cli, invoke  # noqa: F401  (the fixture)

CONTENT_SID = "HX" + "0123456789abcdef" * 2

PICKUP = """
id: pickup
name: Pickup
entry: {event: order_ready}
steps:
  - id: tell
    send: {template: ready, channels: [whatsapp, sms]}
  - id: note
    send: {template: ready, channels: [inbox], expires_after: 7d}
"""


def project(root: Path, monkeypatch: pytest.MonkeyPatch, **files: str) -> Path:
    """The journey `pickup` and template `ready` with `files` (whatsapp_yaml=...)."""
    from journeyman.settings import get_settings

    monkeypatch.setenv("JOURNEYS_DIR", str(root / "journeys"))
    monkeypatch.setenv("TEMPLATES_DIR", str(root / "templates"))
    get_settings.cache_clear()
    (root / "journeys").mkdir()
    path = root / "journeys" / "pickup.yaml"
    path.write_text(textwrap.dedent(PICKUP).strip() + "\n")
    folder = root / "templates" / "ready"
    folder.mkdir(parents=True)
    base = {
        "sms.txt": "Order {{ event.properties.order_id }} is ready",
        "whatsapp.txt": "Hi {{ profile.first_name }}, order {{ event.properties.order_id }} "
        "is ready for pickup",
        "inbox.txt": "{% block title %}Ready for pickup{% endblock %}"
        "{% block body %}Order {{ event.properties.order_id }}{% endblock %}"
        "{% block link %}https://shop.example/orders{% endblock %}",
    }
    for name, text in {**base, **{k.replace("_", "."): v for k, v in files.items()}}.items():
        (folder / name).write_text(text, encoding="utf-8")
    return path


def test_validate_warns_about_whatsapp_without_an_approved_template(cli, tmp_path, monkeypatch):  # noqa: F811
    path = project(tmp_path, monkeypatch)
    result = invoke(cli, "validate")
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.stdout.splitlines() if "warning" in line]
    assert warning == (
        f"{path}:6:40: warning: journey pickup step tell: template 'ready' has no whatsapp.yaml, "
        "so WhatsApp can reach a customer only within 24 hours of their last message; "
        "outside it the send falls to sms"
    )
    assert invoke(cli, "validate", "--strict").exit_code == 1


def test_validate_is_quiet_with_one_and_names_the_place_of_a_bad_one(cli, tmp_path, monkeypatch):  # noqa: F811
    project(tmp_path, monkeypatch, whatsapp_yaml=f"content_sid: {CONTENT_SID}\nvariables: {{}}\n")
    result = invoke(cli, "validate", "--strict")
    assert result.exit_code == 0, result.output
    content = tmp_path / "templates" / "ready" / "whatsapp.yaml"
    content.write_text(f"content_sid: {CONTENT_SID}\nvariables:\n  one: x\n")
    result = invoke(cli, "validate")
    assert result.exit_code == 1
    assert f"{content}:3:8: variable 'one': names are numbers from 1" in result.stdout


def test_whatsapp_content_files_are_checked() -> None:
    content = parse_whatsapp_content(
        f'content_sid: {CONTENT_SID}\nvariables: {{1: "{{{{ profile.first_name }}}}", 2: x}}\n'
    )
    assert content.variables == {"1": "{{ profile.first_name }}", "2": "x"}
    for text, message in [
        ("content_sid: SM123\n", "content_sid must be a Twilio Content SID"),
        ("- a list\n", "must be a mapping"),
        (f"content_sid: {CONTENT_SID}\nsid: x\n", "unknown field 'sid'"),
        (f"content_sid: {CONTENT_SID}\nvariables: [a]\n", "variables must map numbers"),
        (f"content_sid: {CONTENT_SID}\nvariables: {{0: a}}\n", "names are numbers from 1"),
        (f"content_sid: {CONTENT_SID}\nvariables: {{1: [a]}}\n", "the value must be text"),
        ("content_sid: [\n", "YAML"),
    ]:
        with pytest.raises(ContentError, match=message.replace("[", r"\[")):
            parse_whatsapp_content(text)


def test_preview_shows_whatsapp_both_ways_and_the_inbox(cli, tmp_path, monkeypatch):  # noqa: F811
    project(
        tmp_path,
        monkeypatch,
        whatsapp_yaml=(
            f"content_sid: {CONTENT_SID}\n"
            'variables:\n  1: "{{ profile.first_name }}"\n  2: "{{ event.properties.order_id }}"\n'
        ),
    )
    profile = tmp_path / "profile.json"
    profile.write_text('{"id": "c1", "first_name": "Ana", "phone": "+15550001"}')
    event = tmp_path / "event.json"
    event.write_text('{"event": "order_ready", "properties": {"order_id": "A-7"}}')
    result = invoke(cli, "preview", "ready", "--profile", profile, "--event", event)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "== whatsapp (ready/whatsapp.txt)" in out
    assert "Hi Ana, order A-7 is ready for pickup" in out
    assert f"Outside that window: approved template {CONTENT_SID}" in out
    assert 'Variables: {"1": "Ana", "2": "A-7"}' in out
    assert "== inbox (ready/inbox.txt)" in out
    assert "Title: Ready for pickup" in out
    assert "Body:  Order A-7" in out
    assert '"link": "https://shop.example/orders"' in out


def test_simulate_sends_whatsapp_to_an_opted_in_customer(cli, tmp_path, monkeypatch):  # noqa: F811
    path = project(tmp_path, monkeypatch, whatsapp_yaml=f"content_sid: {CONTENT_SID}\n")
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"at": "0s", "type": "track", "event": "order_ready", "properties": {"order_id": "A-7"}}\n'
    )
    opted_in, not_opted_in = tmp_path / "in.json", tmp_path / "out.json"
    opted_in.write_text(
        '{"id": "c1", "first_name": "Ana", "phone": "+15550001", "whatsapp_opt_in": true}'
    )
    not_opted_in.write_text('{"id": "c2", "first_name": "Bo", "phone": "+15550002"}')
    first = invoke(cli, "simulate", path, "--profile", opted_in, "--events", events)
    assert first.exit_code == 0, first.output
    # The offsets are whole seconds of the simulation's clock, which a send's own real
    # time moves on a loaded machine: "+0s", or "+1s".
    lines = [_at_zero(line) for line in first.stdout.splitlines()]
    # Outside the 24-hour window (the customer never wrote): the approved template.
    assert lines[2:6] == [
        "  +0s       tell   sent on whatsapp with template ready",
        f"                     to whatsapp:+15550001: approved template {CONTENT_SID} {{}}",
        "  +0s       note   sent on inbox with template ready",
        "                     to c1: Ready for pickup",
    ]
    second = invoke(cli, "simulate", path, "--profile", not_opted_in, "--events", events)
    assert second.exit_code == 0, second.output
    assert "  +0s       tell   sent on sms with template ready" in [
        _at_zero(line) for line in second.stdout.splitlines()
    ]


def _at_zero(line: str) -> str:
    """A timeline line at a few seconds after entry, written as at +0s."""
    return re.sub(r"^  \+[0-9]s ", "  +0s ", line)


def test_the_shipped_pickup_journey_uses_whatsapp_first_and_sms_as_fallback(cli, tmp_path):  # noqa: F811
    repo = Path(__file__).resolve().parents[2]
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"at": "0s", "type": "track", "event": "order_ready_for_pickup", "properties": '
        '{"order_id": "LK-1", "store_name": "Pearl", "pickup_code": "4827", '
        '"pickup_deadline": "Saturday"}}\n'
        '{"at": "2h", "type": "track", "event": "order_picked_up", "properties": '
        '{"order_id": "LK-1"}}\n'
    )
    journey = repo / "journeys" / "order_ready_for_pickup.yaml"
    runs = {}
    for name, opt_in in (("opted_in", "true"), ("not_opted_in", "false")):
        profile = tmp_path / f"{name}.json"
        profile.write_text(
            f'{{"id": "c1", "first_name": "Ana", "phone": "+15035550142", '
            f'"whatsapp_opt_in": {opt_in}}}'
        )
        result = invoke(cli, "simulate", journey, "--profile", profile, "--events", events)
        assert result.exit_code == 0, result.output
        steps = [line.split() for line in result.stdout.splitlines() if line.startswith("  +")]
        runs[name] = [words for words in steps if words[1] == "ready"]
    assert runs["opted_in"][0][1:5] == ["ready", "sent", "on", "whatsapp"]
    assert runs["not_opted_in"][0][1:5] == ["ready", "sent", "on", "sms"]
