"""DSL v2: a condition that fails is not false (patch `v2a-condition-errors`).

A failing `branch` case, `wait_for.when` or goal/exit `when` never lets the run go on
as if it were false: the error is recorded in the path, the step log and the stats,
and the run goes to the step's `on_error`, or ends with outcome `error`. Numbers sent
as text compare as numbers, in the workflow and in the evaluate activity alike.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from journeyman.insight.stats import journey_stats
from journeyman.storage.models import JourneyRun, StepLog
from tests.harness import actions

NPS = """
id: nps
name: NPS
entry: {event: survey_answered}
steps:
  - id: score
    branch:
      - when: "event.properties.score <= 6"
        goto: detractor
      - goto: promoter
    {on_error}
  - id: detractor
    update_profile: {set: {nps: detractor}}
    goto: done
  - id: promoter
    update_profile: {set: {nps: promoter}}
    goto: done
  {broken}
  - id: done
    end: true
"""


def nps(on_error: str = "") -> str:
    broken = "- id: broken\n    update_profile: {set: {nps: unknown}}" if on_error else ""
    return NPS.replace("{on_error}", on_error).replace("{broken}", broken)


async def test_a_score_sent_as_text_compares_as_a_number(harness):
    await harness.journey(nps())
    harness.customer("c1")
    await harness.event("survey_answered", score="4")
    result = await harness.result("nps/c1")
    assert ("detractor", "updated") in actions(result)
    assert not [p for p in result.path if p.action == "error"]


async def test_a_score_read_by_an_activity_compares_as_a_number_too(harness):
    # `profile` makes the branch an activity's evaluation; the rule is the same.
    await harness.journey(nps().replace("event.properties.score <= 6", "profile.score <= 6"))
    harness.customer("c1", score="3")
    await harness.event("survey_answered")
    result = await harness.result("nps/c1")
    assert ("detractor", "updated") in actions(result)


async def test_a_failing_case_never_takes_the_default_and_ends_the_run_in_error(harness):
    await harness.journey(nps())
    harness.customer("c1")
    await harness.event("survey_answered", score="four")
    result = await harness.result("nps/c1")
    assert result.outcome == "error"
    assert ("promoter", "updated") not in actions(result)
    [error] = [p for p in result.path if p.action == "error"]
    assert error.step == "score"
    assert "cannot compare str 'four' with int 6" in error.detail
    with harness.db.session() as session:
        run = session.scalar(select(JourneyRun).where(JourneyRun.workflow_id == "nps/c1"))
        assert run is not None and run.outcome == "error"
        logged = session.scalars(select(StepLog.action).where(StepLog.step_id == "score")).all()
        assert "error" in logged
        stats = journey_stats(session, "nps")
    assert stats.overall.finished == {"error": 1}
    assert stats.overall.errors_by_step == {"score": 1}


async def test_a_failing_case_goes_to_on_error_when_given(harness):
    await harness.journey(nps("on_error: broken"))
    harness.customer("c1")
    await harness.event("survey_answered")  # no score at all
    result = await harness.result("nps/c1")
    assert result.outcome == "ended"
    steps = actions(result)
    assert steps.index(("score", "error")) < steps.index(("score", "on_error"))
    assert ("broken", "updated") in steps
    assert ("promoter", "updated") not in steps


REVIEW = """
id: review
name: Review
entry: {event: order_delivered}
goal:
  event: order_placed
  when: "event.properties.total > trigger.properties.total"
steps:
  - id: wait_review
    wait_for:
      event: review_submitted
      when: "event.properties.stars >= 4"
      timeout: 3d
      on_event: thanks
      on_error: ask_why
  - id: ask_why
    update_profile: {set: {review: unclear}}
    goto: done
  - id: thanks
    update_profile: {set: {review: good}}
  - id: done
    end: true
"""


async def test_a_failing_wait_for_when_goes_to_its_on_error(harness):
    await harness.journey(REVIEW)
    harness.customer("c1")
    await harness.event("order_delivered", total=50)
    await harness.sleep(timedelta(hours=1))
    await harness.event("review_submitted", stars="many")
    result = await harness.result("review/c1")
    steps = actions(result)
    assert ("wait_review", "error") in steps
    assert ("ask_why", "updated") in steps
    assert ("wait_review", "timeout") not in steps


async def test_a_failing_goal_condition_ends_the_run_in_error_not_as_unmet(harness):
    await harness.journey(REVIEW.replace("      on_error: ask_why\n", ""))
    harness.customer("c1")
    await harness.event("order_delivered", total=50)
    await harness.sleep(timedelta(hours=1))
    await harness.event("order_placed", total="a lot")
    result = await harness.result("review/c1")
    assert result.outcome == "error"
    [error] = [p for p in result.path if p.action == "error"]
    assert error.step == "wait_review"
    assert "event.properties.total > trigger.properties.total" in error.detail
