"""Journey analytics over rows written straight into the database (journeyman/insight/stats.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from journeyman.insight.lift import MIN_GROUP, holdout_lift, newcombe_interval, wilson_interval
from journeyman.insight.stats import (
    JourneyStats,
    UnknownJourney,
    journey_stats,
    reason_kind,
    running_query,
)
from journeyman.storage.db import Database
from journeyman.storage.models import Delivery, JourneyRun, JourneyVersion, StepLog

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def add_version(
    session: Session,
    version: str = "v1",
    *,
    holdout: str | None = None,
    steps: tuple[str, ...] = ("pause", "remind", "nudge"),
    sends: tuple[str, ...] = (),
    created: int = 0,
) -> None:
    entry: dict[str, Any] = {"event": "cart_abandoned"}
    if holdout:
        entry["holdout"] = holdout  # as stored: the plan's JSON writes percentages as text
    plan = {
        "journey": {"id": "cart", "name": "Cart reminder", "entry": entry},
        "version": version,
    }
    plan["journey"]["steps"] = [
        {"id": step, **({"send": {"template": step}} if step in sends else {})} for step in steps
    ]
    session.add(
        JourneyVersion(
            journey_id="cart",
            version=version,
            plan=plan,
            templates={},
            created_at=T0 + timedelta(minutes=created),
        )
    )


def add_runs(
    session: Session,
    n: int = 1,
    *,
    version: str = "v1",
    holdout: bool = False,
    outcome: str | None = None,
    customer: str | None = None,
    started: datetime = T0,
    ended: datetime | None = None,
) -> list[str]:
    """`n` runs; finished when an outcome is given. Returns their workflow ids."""
    ids = []
    for _ in range(n):
        number = next(_ids)
        workflow_id = f"cart/{customer or f'c{number}'}"
        session.add(
            JourneyRun(
                run_id=f"run-{number}",
                workflow_id=workflow_id,
                journey_id="cart",
                version=version,
                customer_id=customer or f"c{number}",
                holdout=holdout,
                status="running" if outcome is None else "completed",
                outcome=outcome,
                started_at=started,
                ended_at=None if outcome is None else (ended or started + timedelta(days=1)),
            )
        )
        ids.append(workflow_id)
    return ids


def add_delivery(
    session: Session,
    workflow_id: str,
    *,
    step: str = "remind",
    channel: str | None = "email",
    status: str = "sent",
    version: str = "v1",
    sent_at: datetime | None = None,
    **fields: Any,
) -> None:
    number = next(_ids)
    session.add(
        Delivery(
            idempotency_key=f"{workflow_id}/{step}/{number}",
            workflow_id=workflow_id,
            journey_id="cart",
            version=version,
            step_id=step,
            customer_id=workflow_id.split("/")[1],
            template=step,
            channel=channel,
            status=status,
            sent_at=sent_at if sent_at is not None or status != "sent" else T0 + timedelta(hours=1),
            **fields,
        )
    )


def add_steps(
    session: Session, run_id: str, *steps: tuple[str, str], version: str = "v1", first: int = 0
) -> None:
    """Step log rows of one run, as the workflow records them: (step, action) in order."""
    for seq, (step, action) in enumerate(steps, start=first):
        session.add(
            StepLog(
                run_id=run_id,
                seq=seq,
                journey_id="cart",
                version=version,
                customer_id=f"customer-of-{run_id}",
                step_id=step,
                action=action,
                detail={"detail": "", "channel": None, "template": None},
                at=T0 + timedelta(minutes=seq),
            )
        )


def stats(db: Database, **kwargs: Any) -> JourneyStats:
    with db.session() as session:
        return journey_stats(session, "cart", **kwargs)


# -- entries and outcomes -------------------------------------------------------------------


def test_counts_entries_running_runs_and_finished_runs_by_outcome(db: Database) -> None:
    with db.session() as session:
        add_version(session)
        add_runs(session, 3)
        add_runs(session, 2, outcome="converted")
        add_runs(session, 4, outcome="exited")
        add_runs(session, 1, outcome="ended")
        add_runs(session, 5, outcome="completed")
    overall = stats(db).overall
    assert (overall.entered, overall.treatment, overall.control) == (15, 15, 0)
    assert overall.running == 3
    assert overall.finished == {"completed": 5, "exited": 4, "converted": 2, "ended": 1}


def test_now_at_each_step_lists_every_step_of_the_journey_with_the_callers_counts(
    db: Database,
) -> None:
    with db.session() as session:
        add_version(session)
        add_runs(session, 4)
    report = stats(db, now_at_step={"remind": 3, "gone_step": 1})
    assert report.overall.now_at_step == {"pause": 0, "remind": 3, "nudge": 0, "gone_step": 1}
    assert stats(db).overall.now_at_step is None  # Temporal could not be asked


def test_running_query_asks_visibility_for_the_journeys_running_runs() -> None:
    assert running_query("cart") == (
        'WorkflowType = "Journey" AND JourneyId = "cart" AND ExecutionStatus = \'Running\''
    )
    assert running_query('a"b', "v2").endswith('AND JourneyVersion = "v2"')
    assert 'JourneyId = "a\\"b"' in running_query('a"b')


def test_unknown_journey_or_version_is_refused(db: Database) -> None:
    with db.session() as session:
        add_version(session)
    with pytest.raises(UnknownJourney, match="no journey 'nope'"), db.session() as session:
        journey_stats(session, "nope")
    with pytest.raises(UnknownJourney, match="version 'v9'"):
        stats(db, version="v9")


# -- messages ---------------------------------------------------------------------------------


def test_messages_by_channel_and_outcome(db: Database) -> None:
    at = T0 + timedelta(hours=2)
    with db.session() as session:
        add_version(session)
        [w] = add_runs(session)
        add_delivery(session, w, delivered_at=at, opened_at=at, clicked_at=at)
        add_delivery(session, w, delivered_at=at, opened_at=at, complained_at=at)
        add_delivery(session, w, failed_at=at, failure="bounce")  # sent, then bounced
        add_delivery(session, w, status="failed", reason="email: rejected")
        add_delivery(session, w, status="unknown", reason="email: timeout")
        add_delivery(session, w, channel="sms", delivered_at=at)
        add_delivery(session, w, channel="sms", status="pending")
        add_delivery(session, w, channel=None, status="skipped", reason="unknown customer")
    overall = stats(db).overall
    email, sms, none = overall.messages
    assert (email.channel, sms.channel, none.channel) == ("email", "sms", "(no channel)")
    assert email.model_dump(exclude={"channel", "skipped_reasons"}) == {
        "messages": 5,
        "sent": 3,
        "delivered": 2,
        "opened": 2,
        "clicked": 1,
        "failed": 2,
        "complained": 1,
        "unknown": 1,
        "skipped": 0,
        "pending": 0,
    }
    assert (sms.messages, sms.sent, sms.delivered, sms.pending) == (2, 1, 1, 1)
    assert (none.skipped, none.skipped_reasons) == (1, {"unknown customer": 1})
    total = overall.total
    assert (total.messages, total.sent, total.delivered, total.failed, total.skipped) == (
        8,
        4,
        3,
        2,
        1,
    )


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("email: not reachable (no email address)", "not reachable"),
        (
            "push: not reachable (no push token); email: not reachable (no email address)",
            "not reachable",
        ),
        ("email: unsubscribed from topic cart_reminders", "unsubscribed from topic cart_reminders"),
        ("sms: unsubscribed from sms", "unsubscribed from sms"),
        ("email: address suppressed (bounced)", "address suppressed"),
        ("frequency cap 3 per 1d reached; no room within a day, not sent", "frequency cap"),
        (
            "frequency cap 3 per 1d: waiting behind sends of higher priority; no room within "
            "a day, not sent",
            "frequency cap",
        ),
        ("quiet hours 21:00-08:00 for sms", "quiet hours"),
        ("unknown customer", "unknown customer"),
        ("no channel", "no channel"),
        (
            "email: unsubscribed from email; sms: not reachable (no phone number)",
            "not reachable + unsubscribed from email",
        ),
        (
            "only_if false: catalog('products', trigger.properties.product_id).stock > 0 "
            "[catalog('products', trigger.properties.product_id).stock = 0]",
            "only_if false",
        ),
        ("only_if error: x.stock > 0: x is empty (none); email: other", "only_if error"),
        ("something new", "other"),
        (None, "no reason given"),
    ],
)
def test_skip_reason_is_reduced_to_its_kind(reason: str | None, kind: str) -> None:
    assert reason_kind(reason) == kind


def test_skipped_messages_are_grouped_by_reason_kind(db: Database) -> None:
    with db.session() as session:
        add_version(session)
        [w] = add_runs(session)
        for reason in (
            "email: not reachable (no email address)",
            "email: not reachable (no email address); sms: not reachable (no phone number)",
            "email: unsubscribed from topic cart_reminders",
            "frequency cap 3 per 1d reached; no room within a day, not sent",
        ):
            add_delivery(session, w, channel=None, status="skipped", reason=reason)
        add_delivery(session, w, status="skipped", reason="frequency cap 3 per 1d reached; no room")
    total = stats(db).overall.total
    assert total.skipped == 5
    assert total.skipped_reasons == {
        "frequency cap": 2,
        "not reachable": 2,
        "unsubscribed from topic cart_reminders": 1,
    }


# -- conversions ------------------------------------------------------------------------------


def test_conversion_rate_is_converted_over_entered_in_the_treatment_group(db: Database) -> None:
    with db.session() as session:
        add_version(session, holdout="10%")
        add_runs(session, 3, outcome="converted")
        add_runs(session, 5, outcome="completed")
        add_runs(session, 2)
        add_runs(session, 1, holdout=True, outcome="converted")
        add_runs(session, 1, holdout=True, outcome="completed")
    conversions = stats(db).overall.conversions
    assert (conversions.converted, conversions.entered, conversions.rate) == (3, 10, 0.3)


def test_conversion_is_attributed_to_the_last_message_sent_before_it(db: Database) -> None:
    ended = T0 + timedelta(hours=10)
    with db.session() as session:
        add_version(session)
        [email_then_sms] = add_runs(session, outcome="converted", ended=ended)
        add_delivery(session, email_then_sms, step="remind", sent_at=T0 + timedelta(hours=1))
        add_delivery(
            session, email_then_sms, step="nudge", channel="sms", sent_at=T0 + timedelta(hours=5)
        )
        # After the conversion, failed, skipped: none of them is the last touch.
        add_delivery(
            session, email_then_sms, step="late", channel="push", sent_at=ended + timedelta(1)
        )
        add_delivery(session, email_then_sms, step="x", channel="push", status="failed")
        add_delivery(session, email_then_sms, step="y", channel=None, status="skipped")
        [email_only] = add_runs(session, outcome="converted", ended=ended)
        add_delivery(session, email_only, step="remind", sent_at=T0 + timedelta(hours=1))
        # The same customer's earlier run (same workflow id) sent a message: not this run's.
        add_runs(session, customer="again", outcome="completed", started=T0 - timedelta(days=9))
        add_delivery(session, "cart/again", step="remind", sent_at=T0 - timedelta(days=8))
        add_runs(session, customer="again", outcome="converted", ended=ended)
        # Converted without any message at all.
        add_runs(session, outcome="converted", ended=ended)
        # Not converted: never attributed, whatever it was sent.
        [exited] = add_runs(session, outcome="exited", ended=ended)
        add_delivery(session, exited, step="remind", sent_at=T0 + timedelta(hours=1))
    conversions = stats(db).overall.conversions
    assert conversions.converted == 4
    assert conversions.by_channel == {"email": 1, "no message": 2, "sms": 1}
    assert conversions.by_step == {"no message": 2, "nudge": 1, "remind": 1}


# -- holdout lift -----------------------------------------------------------------------------


def test_newcombe_interval_matches_newcombes_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II, example (a):
    # 56/70 - 48/80 = 0.2000, method 10 (hybrid score): 0.0524 to 0.3339.
    interval = newcombe_interval(56, 70, 48, 80)
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.0524, 0.3339)


def test_lift_interval_matches_a_hand_computed_example() -> None:
    # Worked by hand with z = 1.96, to 4 places: Wilson 120/400 = (0.2572, 0.3466),
    # Wilson 20/100 = (0.1334, 0.2888); d = 0.30 - 0.20 = 0.10,
    # low = 0.10 - sqrt((0.3000 - 0.2572)^2 + (0.2888 - 0.2000)^2) = 0.0014,
    # high = 0.10 + sqrt((0.3466 - 0.3000)^2 + (0.2000 - 0.1334)^2) = 0.1813.
    near = 5e-4  # the hand's rounding
    treatment, control = wilson_interval(120, 400), wilson_interval(20, 100)
    assert (treatment.low, treatment.high) == pytest.approx((0.2572, 0.3466), abs=near)
    assert (control.low, control.high) == pytest.approx((0.1334, 0.2888), abs=near)
    lift = holdout_lift(400, 120, 100, 20)
    assert lift.difference == pytest.approx(0.10)
    assert lift.interval is not None
    assert (lift.interval.low, lift.interval.high) == pytest.approx((0.0014, 0.1813), abs=near)
    assert lift.relative == pytest.approx(0.5)
    assert lift.verdict == "the journey lifts conversion by 10.0 points (95% CI 0.1 to 18.1)"


def test_lift_verdict_says_when_there_is_no_significant_difference_or_a_loss() -> None:
    assert holdout_lift(400, 84, 100, 20).verdict == (
        "no significant difference yet (+1.0 points, 95% CI -8.6 to 8.9)"
    )
    assert holdout_lift(400, 40, 100, 20).verdict == (
        "the journey lowers conversion by 10.0 points (95% CI -19.2 to -2.6)"
    )


def test_holdout_with_a_known_effect_from_the_database(db: Database) -> None:
    with db.session() as session:
        add_version(session, holdout="20%")
        add_runs(session, 120, outcome="converted")
        add_runs(session, 280, outcome="completed")
        add_runs(session, 20, holdout=True, outcome="converted")
        add_runs(session, 80, holdout=True, outcome="completed")
    report = stats(db)
    assert report.holdout == 0.2
    lift = report.overall.lift
    assert lift is not None
    assert (lift.treatment_entered, lift.treatment_converted) == (400, 120)
    assert (lift.control_entered, lift.control_converted) == (100, 20)
    assert lift.verdict == "the journey lifts conversion by 10.0 points (95% CI 0.1 to 18.1)"


def test_lift_needs_enough_customers_in_each_group(db: Database) -> None:
    with db.session() as session:
        add_version(session, holdout="10%")
        add_runs(session, 100, outcome="converted")
        add_runs(session, MIN_GROUP - 1, holdout=True, outcome="completed")
    lift = stats(db).overall.lift
    assert lift is not None
    assert not lift.enough_data
    assert (lift.difference, lift.interval, lift.relative) == (None, None, None)
    assert lift.verdict.startswith("not enough data yet: at least 30 customers")


def test_a_journey_without_holdout_has_no_lift(db: Database) -> None:
    with db.session() as session:
        add_version(session)
        add_runs(session, 50, outcome="converted")
    assert stats(db).overall.lift is None


# -- versions ---------------------------------------------------------------------------------


def test_each_version_is_reported_on_its_own_and_together(db: Database) -> None:
    with db.session() as session:
        add_version(session, "v1", created=0)
        add_version(session, "v2", steps=("pause", "remind"), created=1)
        [old] = add_runs(session, version="v1", outcome="converted", ended=T0 + timedelta(hours=3))
        add_delivery(session, old, version="v1")
        add_runs(session, 2, version="v2")
        [new] = add_runs(session, version="v2", outcome="converted", ended=T0 + timedelta(hours=3))
        add_delivery(session, new, version="v2", channel="sms", step="nudge")
    report = stats(db)
    assert [v.version for v in report.versions] == ["v1", "v2"]
    v1, v2 = report.versions
    assert (v1.entered, v1.running, v1.conversions.converted, v1.total.sent) == (1, 0, 1, 1)
    assert (v2.entered, v2.running, v2.conversions.converted, v2.total.sent) == (3, 2, 1, 1)
    assert v1.conversions.by_channel == {"email": 1}
    assert v2.conversions.by_channel == {"sms": 1}
    assert (report.overall.version, report.overall.entered) == (None, 4)
    assert report.overall.conversions.by_channel == {"email": 1, "sms": 1}

    only = stats(db, version="v2", now_at_step={"remind": 2})
    assert (only.overall.version, only.overall.entered) == ("v2", 3)
    assert [v.version for v in only.versions] == ["v2"]
    assert only.overall.now_at_step == {"pause": 0, "remind": 2}


# -- the step log -----------------------------------------------------------------------------


def test_reached_counts_the_runs_that_reached_each_step_once_each(db: Database) -> None:
    with db.session() as session:
        add_version(session)
        add_steps(session, "r1", ("entry", "entered"), ("pause", "waited"), ("remind", "sent"))
        # A loop back to a step, and a goal during a wait: each run counts once per step.
        add_steps(
            session,
            "r2",
            ("entry", "entered"),
            ("pause", "waited"),
            ("remind", "skipped"),
            ("pause", "waited"),
            ("pause", "converted"),
        )
        add_steps(session, "r3", ("entry", "entered"))  # waiting at its first step
        add_steps(session, "r4", ("entry", "entered"), ("gone_step", "waited"))
    report = stats(db)
    assert report.overall.reached == {"pause": 2, "remind": 2, "nudge": 0, "gone_step": 1}
    assert report.versions[0].reached == report.overall.reached


def test_reached_is_counted_per_version_and_added_up_across_versions(db: Database) -> None:
    with db.session() as session:
        add_version(session, "v1", created=0)
        add_version(session, "v2", steps=("pause", "remind"), created=1)
        add_steps(session, "old", ("pause", "waited"), ("nudge", "sent"), version="v1")
        add_steps(session, "new1", ("pause", "waited"), ("remind", "sent"), version="v2")
        add_steps(session, "new2", ("pause", "waited"), version="v2")
    report = stats(db)
    v1, v2 = report.versions
    assert v1.reached == {"pause": 1, "remind": 0, "nudge": 1}
    assert v2.reached == {"pause": 2, "remind": 1}
    assert report.overall.reached == {"pause": 3, "remind": 1, "nudge": 1}
    assert stats(db, version="v2").overall.reached == {"pause": 2, "remind": 1}


def test_held_out_messages_count_the_sends_not_made_for_the_control_group(
    db: Database,
) -> None:
    with db.session() as session:
        add_version(
            session, holdout="10%", steps=("remind", "hook", "nudge"), sends=("remind", "nudge")
        )
        add_steps(
            session, "control1", ("remind", "held_out"), ("hook", "held_out"), ("nudge", "held_out")
        )
        add_steps(session, "control2", ("remind", "held_out"))
        add_steps(session, "treated", ("remind", "sent"), ("hook", "webhook"), ("nudge", "sent"))
    overall = stats(db).overall
    assert overall.held_out_messages == 3  # the webhook is not a message
    assert overall.held_out_by_step == {"remind": 2, "nudge": 1}
    assert overall.reached == {"remind": 3, "hook": 2, "nudge": 2}


def test_a_journey_without_step_log_rows_reports_zero_counts(db: Database) -> None:
    with db.session() as session:
        add_version(session)
        add_runs(session, 2)
    overall = stats(db).overall
    assert overall.reached == {"pause": 0, "remind": 0, "nudge": 0}
    assert (overall.held_out_messages, overall.held_out_by_step) == (0, {})
