"""`journeyman.insight.simulate`: events played on the time-skipping server, read back as
a timeline."""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.testing import WorkflowEnvironment

from journeyman.insight.sandbox import MAX_REAL
from journeyman.insight.scenario import SimulationError, load_events, load_profile, parse_offset
from journeyman.insight.simulate import simulate
from journeyman.insight.timeline import Simulation, TimelineEntry, format_offset
from journeyman.settings import Settings

REPO = Path(__file__).resolve().parents[2]

NUDGE = """
id: nudge
name: Cart nudge
entry:
  event: cart_abandoned
  when: "event.properties.cart_total >= 20"
goal:
  event: order_placed
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

EMAIL = "{% block subject %}Your cart, {{ profile.first_name }}{% endblock %}<p>Come back</p>"


def write_journey(root: Path, text: str, templates: dict[str, str] | None = None) -> Path:
    (root / "journeys").mkdir(exist_ok=True)
    for name, body in (templates or {"reminder/email.html": EMAIL}).items():
        path = root / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    text = textwrap.dedent(text).strip() + "\n"
    journey_id = text.split("id: ", 1)[1].split("\n", 1)[0]
    path = root / "journeys" / f"{journey_id}.yaml"
    path.write_text(text)
    return path


def write_events(root: Path, *events: dict[str, Any]) -> Path:
    path = root / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/unused.db",
        journeys_dir=tmp_path / "journeys",
        templates_dir=tmp_path / "templates",
        default_timezone="UTC",
    )


async def run(
    env: WorkflowEnvironment,
    settings: Settings,
    journey: Path,
    events: list[dict[str, Any]],
    profile: dict[str, Any] | None = None,
    **bounds: Any,
) -> Simulation:
    events_file = write_events(journey.parent.parent, *events)
    return await simulate(
        journey,
        profile or {"id": f"c-{journey.stem}", "email": "ana@example.com", "first_name": "Ana"},
        load_events(events_file),
        settings=settings,
        env=env,
        **bounds,
    )


def timeline(sim: Simulation) -> list[tuple[int, str, str]]:
    return [(e.at_seconds, e.step, e.describe()) for e in sim.entries]


# -- the timeline ---------------------------------------------------------------------


async def test_goal_event_converts_during_a_wait_for(time_env, settings, tmp_path):
    journey = write_journey(tmp_path, NUDGE)
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "0s", "event": "cart_abandoned", "properties": {"cart_total": 42}},
            {"at": "3h", "event": "order_placed", "properties": {"order_id": "o1"}},
        ],
    )
    assert timeline(sim) == [
        (0, "entry", "entered on cart_abandoned"),
        (3600, "pause", "waited 1h"),
        (3600, "remind", "sent on email with template reminder"),
        (10800, "wait_open", "converted (goal order_placed)"),
    ]
    assert sim.outcome == "converted"
    assert sim.messages == 1
    sent = sim.entries[2]
    assert (sent.channel, sent.template, sent.to) == ("email", "reminder", "ana@example.com")
    assert sent.summary == "Your cart, Ana"
    assert sim.virtual == timedelta(hours=3)


async def test_a_day_long_journey_is_played_on_the_virtual_clock(time_env, settings, tmp_path):
    """The waits are skipped, not sat through: the run ends after its 25 hours of waits on
    the test server's clock. A simulation waiting in real time would instead be cut at its
    real-time limit (`MAX_REAL`), which also bounds what the activities add to the
    virtual clock while they run (the server skips time only while nothing runs)."""
    journey = write_journey(tmp_path, NUDGE)
    sim = await run(
        time_env,
        settings,
        journey,
        [{"at": "0s", "event": "cart_abandoned", "properties": {"cart_total": 42}}],
    )
    assert [(e.step, e.action) for e in sim.entries] == [
        ("entry", "entered"),
        ("pause", "waited"),
        ("remind", "sent"),
        ("wait_open", "timeout"),
        ("done", "ended"),
    ]
    assert (sim.outcome, sim.note) == ("ended", None)
    _, pause, sent, timeout, done = sim.entries
    assert pause.offset >= timedelta(hours=1)
    assert timeout.offset - sent.offset >= timedelta(days=1)  # the whole day of wait_for
    assert sim.virtual == timedelta(seconds=round(done.offset.total_seconds()))
    assert timedelta(hours=25) <= sim.virtual <= timedelta(hours=25) + MAX_REAL
    assert await time_env.get_current_time() - sim.started_at >= timedelta(hours=25)


@pytest.mark.clock_sensitive
async def test_quiet_hours_hold_an_sms_until_the_window_ends(time_env, settings, tmp_path):
    """The run's clock, not the machine's, decides quiet hours: on the test server the
    two differ, and deciding by the machine's clock deferred to a moment already past."""
    journey = write_journey(
        tmp_path,
        """
        id: night
        name: Night text
        entry: {event: signed_up}
        settings: {quiet_hours: "21:00-08:00"}
        steps:
          - id: at_night
            wait: {until: "22:00"}
          - id: text
            send: {template: reminder, channels: [sms]}
        """,
        {"reminder/sms.txt": "Hi {{ profile.first_name }}"},
    )
    sim = await run(
        time_env,
        settings,
        journey,
        [{"at": "0s", "event": "signed_up"}],
        profile={"id": "c-night", "phone": "+15550001", "first_name": "Ana", "timezone": "UTC"},
    )
    actions = [(e.step, e.action) for e in sim.entries]
    assert actions == [
        ("entry", "entered"),
        ("at_night", "waited"),
        ("text", "deferred"),
        ("text", "sent"),
    ]
    deferred, sent = sim.entries[2], sim.entries[3]
    # 22:00 to 08:00, give or take the moments the activities take on the virtual clock.
    assert abs((sent.offset - deferred.offset).total_seconds() - 10 * 3600) < 60


async def test_json_entries_name_channel_and_template_of_sends(time_env, settings, tmp_path):
    journey = write_journey(tmp_path, NUDGE)
    sim = await run(
        time_env,
        settings,
        journey,
        [{"at": "0s", "event": "cart_abandoned", "properties": {"cart_total": 42}}],
    )
    sent = next(e.as_json() for e in sim.entries if e.action == "sent")
    # An hour after entry, give or take the real seconds a loaded machine's send takes.
    assert 3600 <= sent["at_seconds"] < 3660
    assert (sent["step"], sent["channel"], sent["template"]) == ("remind", "email", "reminder")
    waited = next(e.as_json() for e in sim.entries if e.action == "waited")
    assert "channel" not in waited
    assert json.loads(json.dumps(waited))["detail"] == "1h"


async def test_identify_changes_the_profile_a_later_branch_reads(time_env, settings, tmp_path):
    journey = write_journey(
        tmp_path,
        """
        id: tiers
        name: Tiers
        entry: {event: signed_up}
        steps:
          - id: pause
            wait: 1h
          - id: check
            branch:
              - when: "profile.tier == 'gold'"
                goto: gold
              - goto: done
          - id: gold
            update_profile: {set: {welcomed: true}}
          - id: done
            end: true
        """,
        templates={},
    )
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "0s", "event": "signed_up"},
            {"at": "30m", "type": "identify", "traits": {"tier": "gold"}},
        ],
        profile={"id": "c-tiers", "tier": "silver"},
    )
    assert [(e.step, e.action) for e in sim.entries] == [
        ("entry", "entered"),
        ("pause", "waited"),
        ("check", "branched"),
        ("gold", "updated"),
        ("done", "ended"),
    ]
    assert "gold" in sim.entries[2].detail


async def test_webhooks_are_answered_not_sent(time_env, settings, tmp_path):
    journey = write_journey(
        tmp_path,
        """
        id: crm
        name: CRM
        entry: {event: signed_up}
        steps:
          - id: tell_crm
            webhook:
              url: "http://127.0.0.1:9/hooks/{{ profile.id }}"
              body: {customer: "{{ profile.id }}"}
        """,
        templates={},
    )
    sim = await run(time_env, settings, journey, [{"at": "0s", "event": "signed_up"}])
    [hook] = [e for e in sim.entries if e.step == "tell_crm"]
    assert hook.describe() == (
        "webhook (simulated, nothing sent): POST http://127.0.0.1:9/hooks/c-crm -> 200"
    )


async def test_later_triggers_enter_runs_of_their_own(time_env, settings, tmp_path):
    journey = write_journey(
        tmp_path,
        """
        id: pickup
        name: Pickup
        entry: {event: order_ready, key: "event.properties.order_id", reentry: always}
        goal: {event: picked_up, when: "event.properties.order_id == trigger.properties.order_id"}
        steps:
          - id: wait_pickup
            wait_for: {event: reminder_due, timeout: 1d}
          - id: done
            end: true
        """,
        templates={},
    )
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "0s", "event": "order_ready", "properties": {"order_id": "o1"}},
            {"at": "2h", "event": "order_ready", "properties": {"order_id": "o2"}},
            {"at": "5h", "event": "picked_up", "properties": {"order_id": "o1"}},
        ],
    )
    assert sim.outcomes == {"pickup/c-pickup/o1": "converted", "pickup/c-pickup/o2": "ended"}
    assert sim.outcome == "converted"
    assert [(e.at_seconds, e.run[-2:], e.action) for e in sim.entries] == [
        (0, "o1", "entered"),
        (7200, "o2", "entered"),
        (18000, "o2", "heard"),  # o1's pickup: the goal condition is false for o2
        (18000, "o1", "converted"),
        (93600, "o2", "timeout"),
        (93600, "o2", "ended"),
    ]


async def test_trigger_that_does_not_enter_says_why(time_env, settings, tmp_path):
    journey = write_journey(tmp_path, NUDGE)
    sim = await run(
        time_env,
        settings,
        journey,
        [{"at": "0s", "event": "cart_abandoned", "properties": {"cart_total": 5}}],
    )
    assert not sim.entered
    assert sim.entries == []
    assert [str(why) for why in sim.not_entered] == [
        "nudge: entry condition false (event.properties.cart_total >= 20)"
    ]


async def test_trigger_of_another_event_names_the_entry_event(time_env, settings, tmp_path):
    journey = write_journey(tmp_path, NUDGE)
    sim = await run(time_env, settings, journey, [{"at": "0s", "event": "signed_up"}])
    assert not sim.entered
    assert "enters on cart_abandoned" in sim.not_entered[0].reason


async def test_event_after_the_end_is_reported_unheard(time_env, settings, tmp_path):
    journey = write_journey(tmp_path, NUDGE)
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "0s", "event": "cart_abandoned", "properties": {"cart_total": 42}},
            {"at": "2d", "event": "order_placed"},
        ],
    )
    assert sim.outcome == "ended"
    assert sim.unheard == [(timedelta(days=2), "order_placed")]


async def test_journey_that_never_ends_is_cut_at_the_bound(time_env, settings, tmp_path):
    journey = write_journey(
        tmp_path,
        """
        id: forever
        name: Forever
        entry: {event: signed_up}
        steps:
          - id: again
            wait: 30d
            goto: again
        """,
        templates={},
    )
    sim = await run(
        time_env,
        settings,
        journey,
        [{"at": "0s", "event": "signed_up"}],
        max_virtual=timedelta(days=100),
    )
    assert sim.outcome == "cut"
    assert sim.note is not None and "100 days of virtual time" in sim.note
    assert sim.virtual > timedelta(days=100)
    assert {(e.step, e.action) for e in sim.entries[1:]} == {("again", "waited")}


async def test_shipped_abandoned_cart_reminds_then_nudges_by_sms(time_env, settings):
    repo_settings = settings.model_copy(update={"templates_dir": REPO / "templates"})
    sim = await simulate(
        REPO / "journeys" / "abandoned_cart.yaml",
        {"id": "c-shipped", "email": "ana@example.com", "phone": "+33612345678"},
        load_events(REPO / "examples" / "abandoned_cart_events.jsonl"),
        settings=repo_settings,
        env=time_env,
        start="10:00",  # the nudge at 11:00 the next day is outside quiet hours
    )
    steps = [(e.step, e.action, e.channel, e.template) for e in sim.entries]
    assert steps == [
        ("entry", "entered", None, None),
        ("wait_an_hour", "waited", None, None),
        ("first_reminder", "sent", "email", "cart_reminder"),
        ("wait_for_open", "timeout", None, None),
        ("sms_nudge", "sent", "sms", "cart_nudge"),
        ("done", "ended", None, None),
    ]
    # An hour after entry; the send itself takes real time on the simulation's clock
    # (0.5 s seen on a loaded machine), which `at_seconds` rounds.
    assert timedelta(hours=1) <= sim.entries[2].offset < timedelta(hours=1, seconds=10)
    assert sim.outcome == "ended"
    # The order at 30h comes after the run has ended: nothing was listening.
    assert [name for _, name in sim.unheard] == ["order_placed"]


async def test_start_places_the_trigger_on_the_customers_clock(time_env, settings):
    """Abandoned at 20:00 in Paris: the nudge falls due at 21:00 the next evening, quiet
    hours hold it until 08:00, and the order at +30h (02:00) converts the run first."""
    repo_settings = settings.model_copy(update={"templates_dir": REPO / "templates"})
    sim = await simulate(
        REPO / "journeys" / "abandoned_cart.yaml",
        {
            "id": "c-evening",
            "email": "ana@example.com",
            "phone": "+33612345678",
            "timezone": "Europe/Paris",
        },
        load_events(REPO / "examples" / "abandoned_cart_events.jsonl"),
        settings=repo_settings,
        env=time_env,
        start="20:00",
    )
    assert sim.started_at is not None
    local = sim.started_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (20, 0)
    assert [(e.step, e.action) for e in sim.entries][-3:] == [
        ("wait_for_open", "timeout"),
        ("sms_nudge", "deferred"),
        ("sms_nudge", "converted"),
    ]
    assert "until" in sim.entries[-2].detail
    assert sim.outcome == "converted"
    assert sim.messages == 1


async def test_start_must_be_a_time_of_day(time_env, settings, tmp_path):
    journey = write_journey(tmp_path, NUDGE)
    with pytest.raises(SimulationError, match='start "25:00" is not a time of day'):
        await run(
            time_env, settings, journey, [{"at": "0s", "event": "cart_abandoned"}], start="25:00"
        )


async def test_shipped_abandoned_cart_converts_on_the_same_cart(time_env, settings, tmp_path):
    repo_settings = settings.model_copy(update={"templates_dir": REPO / "templates"})
    cart = {"cart_id": "k7", "cart_total": 80}
    events = write_events(
        tmp_path,
        {"at": "0s", "event": "cart_abandoned", "properties": cart},
        {"at": "5h", "event": "order_placed", "properties": {"cart_id": "other"}},
        {"at": "6h", "event": "order_placed", "properties": {"cart_id": "k7"}},
    )
    sim = await simulate(
        REPO / "journeys" / "abandoned_cart.yaml",
        {"id": "c-converts", "email": "ana@example.com"},
        load_events(events),
        settings=repo_settings,
        env=time_env,
    )
    assert sim.outcome == "converted"
    assert timeline(sim)[-1] == (21600, "wait_for_open", "converted (goal order_placed)")


# -- input ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0s", "0", "0m", " 0h ", "PT0S"])
def test_zero_offset_is_accepted(text):
    assert parse_offset(text) == timedelta(0)


def test_offsets_read_durations():
    assert parse_offset("90m") == timedelta(minutes=90)
    assert parse_offset("PT2H") == timedelta(hours=2)
    with pytest.raises(ValueError, match="not a duration"):
        parse_offset("soon")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "+0s"), (45, "+45s"), (900, "+15m 00s"), (3600, "+1h 00m"), (93600, "+1d 02h")],
)
def test_offsets_print_compactly(seconds, text):
    assert format_offset(timedelta(seconds=seconds)) == text


def test_events_name_the_line_of_a_problem(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"at": "0s", "event": "a"}\n\n{"at": "2h", "event": "b"}\n{"at": "1h", "event": "c"}\n'
    )
    with pytest.raises(SimulationError, match=r"e\.jsonl:4: events must be in time order"):
        load_events(path)
    path.write_text('{"at": "0s", "event": "a"}\n{"at": "2h", "event": }\n')
    with pytest.raises(SimulationError, match=r"e\.jsonl:2:23: not JSON"):
        load_events(path)
    path.write_text('{"at": "1h", "event": "a"}\n')
    with pytest.raises(SimulationError, match=r'e\.jsonl:1: the first event .* at "0s"'):
        load_events(path)
    path.write_text('{"at": "0s", "event": "a"}\n{"at": "1 hour", "event": "b"}\n')
    with pytest.raises(SimulationError, match=r"e\.jsonl:2: at: '1 hour' is not a duration"):
        load_events(path)


def test_identify_lines_carry_traits(tmp_path):
    path = write_events(
        tmp_path,
        {"at": "0s", "event": "signed_up", "properties": {"plan": "pro"}},
        {"at": "1d", "type": "identify", "traits": {"tier": "gold"}},
    )
    trigger, identify = load_events(path)
    assert (trigger.type, trigger.name, trigger.properties) == (
        "track",
        "signed_up",
        {"plan": "pro"},
    )
    assert (identify.type, identify.at, identify.traits) == (
        "identify",
        timedelta(days=1),
        {"tier": "gold"},
    )


def test_profile_needs_an_id(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"email": "ana@example.com"}')
    with pytest.raises(SimulationError, match='needs an "id"'):
        load_profile(path)
    path.write_text('{"id": 7, "push_tokens": ["t1"], "tier": "gold"}')
    assert load_profile(path) == {"id": "7", "push_tokens": ["t1"], "tier": "gold"}


def test_a_timeline_entry_reads_the_whole_seconds_elapsed() -> None:
    # A send that took 0.6 s after its one-hour timer is at 3600 s, not 3601.
    entry = TimelineEntry(
        run="r", offset=timedelta(hours=1, milliseconds=600), step="s", action="sent"
    )
    assert entry.at_seconds == 3600


def test_at_seconds_reads_an_offset_a_millisecond_short_as_the_whole_second():
    """The time-skipping server stamps an event placed at 5h a millisecond early at
    times; a send that took half a second still reads the second it started in."""

    def at(offset: timedelta) -> int:
        return TimelineEntry(run="j/c", offset=offset, step="s", action="event").at_seconds

    assert at(timedelta(hours=5) - timedelta(milliseconds=1)) == 5 * 3600
    assert at(timedelta(hours=1, milliseconds=500)) == 3600
    assert at(timedelta(hours=1) - timedelta(milliseconds=200)) == 3599
