"""Optimized splits in the database: who took each case, who converted, stopped cases.

Contract:
- A run that passes a split step logs `split` with detail `-> <case goto>...` in the
  step log. `count_cases` reads those entries of one journey's step (all versions,
  runs of the journey's holdout left out: they are sent nothing; one query on the step
  log's journey index, each with the taker's first `event` at or
  after the split from the events' index by customer, name and time) and counts per
  case: takers; conversions (the event within `within` of the split); decided takers
  (converted, or their window is over at `now`); and the exposure the posterior counts
  (`CaseCounts`): the decided plus the elapsed part of each open window.
- Given the installation's `GlobalHoldout`, a run of a customer it holds (the customer
  the run's id points to now, as the send activity checks) is left out too where the
  run's version has a marketing topic: its sends were skipped, so it never got the
  case's message and would only dilute each case's rate with the control group's.
- `stop_case` records an operator's stop of a case (`split_stops`, audited in
  `operator_actions`); a stopped case takes no new customer from the next choice on.
- `split_reports` gives, per optimized split of a plan, each case's takers,
  conversions, rate with its 95% Wilson interval, its share of the latest takers
  (`RECENT_TAKERS`) and its probability of being best under the posteriors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from journeyman.customers.identity import customer_behind
from journeyman.dsl.durations import parse_duration
from journeyman.optimization.holdout import GlobalHoldout
from journeyman.optimization.optimize import CaseCounts, probability_best
from journeyman.storage.db import Database
from journeyman.storage.models import (
    Customer,
    Event,
    JourneyRun,
    JourneyVersion,
    OperatorAction,
    SplitStop,
    StepLog,
)

RECENT_TAKERS = 100  # "current share": among this many latest takers


class SplitError(Exception):
    """An operator's request about a split that cannot be done; the message says why."""


def case_of(detail: Mapping[str, Any] | None) -> str | None:
    """The case (its goto) a `split` step-log entry names."""
    text = str((detail or {}).get("detail") or "")
    if not text.startswith("-> "):
        return None
    return text[3:].split(" ", 1)[0] or None


def _takers(
    session: Session,
    journey_id: str,
    step_id: str,
    event: str,
    holdout: GlobalHoldout | None = None,
) -> list[tuple[str | None, datetime, datetime | None]]:
    """(case, split at, first `event` at or after it) of every taker, oldest first;
    with `holdout`, the global holdout's members of marketing versions left out."""
    first = (
        select(func.min(Event.timestamp))
        .where(
            Event.customer_id == StepLog.customer_id,
            Event.name == event,
            Event.timestamp >= StepLog.at,
        )
        .correlate(StepLog)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            StepLog.detail,
            StepLog.at,
            first,
            StepLog.customer_id,
            StepLog.version,
            Customer.merged_into,
        )
        .join(JourneyRun, JourneyRun.run_id == StepLog.run_id, isouter=True)
        .join(Customer, Customer.id == StepLog.customer_id, isouter=True)
        .where(
            StepLog.journey_id == journey_id,
            StepLog.step_id == step_id,
            StepLog.action == "split",
            # The journey's holdout walks the split but is sent nothing: not a taker.
            or_(JourneyRun.holdout.is_(None), JourneyRun.holdout.is_(False)),
        )
        .order_by(StepLog.at, StepLog.id)
    ).all()
    held = _globally_held(session, journey_id, holdout, rows)
    return [
        (case_of(detail), at, converted)
        for detail, at, converted, customer_id, version, _merged in rows
        if (customer_id, version) not in held
    ]


def _globally_held(
    session: Session,
    journey_id: str,
    holdout: GlobalHoldout | None,
    rows: Sequence[Any],
) -> set[tuple[str, str]]:
    """The (customer, version) of takers whose marketing sends the global holdout
    skipped: the customer their id points to now is held, and the version's topic is
    marketing (as `decision.choose` decides for each send)."""
    if holdout is None or holdout.share <= 0:
        return set()
    marketing = {
        version
        for version, plan in session.execute(
            select(JourneyVersion.version, JourneyVersion.plan).where(
                JourneyVersion.journey_id == journey_id
            )
        )
        if holdout.marketing((plan.get("journey") or {}).get("topic"))
    }
    held: set[tuple[str, str]] = set()
    for _detail, _at, _converted, customer_id, version, merged_into in rows:
        if version not in marketing or (customer_id, version) in held:
            continue
        behind = customer_id
        if merged_into is not None:  # rare: an anonymous id merged into a known customer
            customer = customer_behind(session, customer_id)
            behind = customer.id if customer is not None else customer_id
        if holdout.holds(behind):
            held.add((customer_id, version))
    return held


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def count_cases(
    session: Session,
    journey_id: str,
    step_id: str,
    cases: list[tuple[str, float]],
    event: str,
    within: timedelta,
    now: datetime,
    holdout: GlobalHoldout | None = None,
) -> tuple[list[CaseCounts], dict[str, int], list[str | None]]:
    """The posterior's counts of each case (decided takers and their conversions, and
    whether stopped), all takers of each case, and the cases of every taker in order;
    with `holdout`, the takers the global holdout kept the case's message from are left
    out of all three."""
    stopped = set(
        session.scalars(
            select(SplitStop.goto).where(
                SplitStop.journey_id == journey_id, SplitStop.step_id == step_id
            )
        )
    )
    counts = {
        goto: CaseCounts(goto=goto, weight=weight, stopped=goto in stopped)
        for goto, weight in cases
    }
    takers: dict[str, int] = dict.fromkeys(counts, 0)
    order: list[str | None] = []
    for case, at, converted_at in _takers(session, journey_id, step_id, event, holdout):
        order.append(case)
        found = counts.get(case or "")
        if found is None:
            continue  # a case of another version
        takers[found.goto] += 1
        deadline = _aware(at) + within
        exposure = found.exposure or 0.0
        if converted_at is not None and _aware(converted_at) <= min(deadline, now):
            found.takers += 1
            found.conversions += 1
            exposure += 1.0
        elif deadline <= now:
            found.takers += 1
            exposure += 1.0
        else:
            exposure += max(0.0, (now - _aware(at)) / within)
        found.exposure = exposure
    return list(counts.values()), takers, order


def stop_case(db: Database, journey_id: str, step_id: str, goto: str, who: str, why: str) -> None:
    """Stop a case of an optimized split of the journey's latest registered version."""
    if not who.strip() or not why.strip():
        raise SplitError("who and why are required: the operator's name and the reason")
    with db.session() as session:
        plan = session.scalar(
            select(JourneyVersion.plan)
            .where(JourneyVersion.journey_id == journey_id)
            .order_by(JourneyVersion.created_at.desc())
            .limit(1)
        )
        if plan is None:
            raise SplitError(f"no journey {journey_id!r} is registered")
        step = _split_step(plan, step_id)
        if step is None:
            raise SplitError(f"journey {journey_id} has no split step {step_id!r}")
        gotos = [c["goto"] for c in step.get("split", [])]
        if goto not in gotos:
            raise SplitError(
                f"split {step_id} of {journey_id} has no case {goto!r}: cases are "
                + ", ".join(gotos)
            )
        if session.get(SplitStop, (journey_id, step_id, goto)) is not None:
            return  # stopped already: the stop took effect
        now = datetime.now(UTC)
        session.add(
            SplitStop(
                journey_id=journey_id,
                step_id=step_id,
                goto=goto,
                stopped_by=who,
                reason=why,
                at=now,
            )
        )
        session.add(
            OperatorAction(
                journey_id=journey_id,
                action="split_stop",
                who=who,
                why=why,
                detail=f"{step_id}: case {goto} stopped",
                at=now,
            )
        )


def _split_step(plan: Mapping[str, Any], step_id: str) -> Mapping[str, Any] | None:
    for step in (plan.get("journey") or {}).get("steps") or []:
        if step.get("id") == step_id and "split" in step:
            return dict(step)
    return None


class RateInterval(BaseModel):
    low: float
    high: float


class CaseReport(BaseModel):
    goto: str
    weight: float
    takers: int
    decided: int = Field(description="takers whose window is over, or who converted")
    conversions: int
    rate: float | None = Field(description="conversions / decided takers")
    interval: RateInterval | None = Field(description="95% Wilson interval of the rate")
    share: float | None = Field(description="share of the latest takers")
    probability_best: float
    stopped: bool


class SplitReport(BaseModel):
    step: str
    event: str
    within: str
    cases: list[CaseReport]


def split_reports(
    session: Session,
    journey_id: str,
    plan: Mapping[str, Any],
    now: datetime | None = None,
    holdout: GlobalHoldout | None = None,
) -> list[SplitReport]:
    """A report for each optimized split of `plan` (a stored plan, as JSON), counted
    as the split counts them (`holdout`: the installation's global holdout)."""
    from journeyman.insight.lift import wilson_interval

    now = now or datetime.now(UTC)
    reports = []
    for step in (plan.get("journey") or {}).get("steps") or []:
        optimize = step.get("optimize")
        if "split" not in step or not optimize:
            continue
        within = parse_duration(optimize["within"])
        cases = [(c["goto"], float(c["weight"])) for c in step["split"]]
        counts, takers, order = count_cases(
            session, journey_id, step["id"], cases, optimize["event"], within, now, holdout
        )
        recent = [c for c in order[-RECENT_TAKERS:] if c is not None]
        best = probability_best(counts)
        reports.append(
            SplitReport(
                step=step["id"],
                event=optimize["event"],
                within=str(optimize["within"]),
                cases=[
                    CaseReport(
                        goto=c.goto,
                        weight=c.weight,
                        takers=takers[c.goto],
                        decided=c.takers,
                        conversions=c.conversions,
                        rate=c.conversions / c.takers if c.takers else None,
                        interval=RateInterval(
                            **wilson_interval(c.conversions, c.takers).model_dump()
                        )
                        if c.takers
                        else None,
                        share=recent.count(c.goto) / len(recent) if recent else None,
                        probability_best=p,
                        stopped=c.stopped,
                    )
                    for c, p in zip(counts, best, strict=True)
                ],
            )
        )
    return reports


def split_lines(reports: list[SplitReport]) -> list[str]:
    """The optimized splits in `journeyman stats`: a table per split step."""
    lines: list[str] = []
    for report in reports:
        lines += [
            "",
            f"optimized split {report.step} (Thompson sampling on {report.event} "
            f"within {report.within})",
        ]
        header = ["case", "takers", "converted", "rate (95% interval)", "share now", "P(best)"]
        rows = [header]
        for case in report.cases:
            rate = "-"
            if case.rate is not None and case.interval is not None:
                rate = f"{case.rate:.1%} ({case.interval.low:.1%} to {case.interval.high:.1%})"
            rows.append(
                [
                    case.goto + (" (stopped)" if case.stopped else ""),
                    f"{case.takers:,}",
                    f"{case.conversions:,} of {case.decided:,}",
                    rate,
                    "-" if case.share is None else f"{case.share:.0%}",
                    f"{case.probability_best:.0%}",
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += [
            "  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows
        ]
    return lines


# -- best-hour sends on the journey page --------------------------------------------------

TIMING_SOURCES = {
    "best hour": "their own opens",
    "audience's best hour": "the audience's hour",
    "no opens or clicks": "at once, no history",
}


def timing_by_step(session: Session, journey_id: str, latest: int = 500) -> dict[str, str]:
    """For each `timing: best` send step, how its latest sends chose their hour: how many
    by the customer's own opens, by the audience's hour, at once; and the hours most
    chosen (from the step log's `timing` entries, one query on its journey index)."""
    rows = session.execute(
        select(StepLog.step_id, StepLog.detail)
        .where(StepLog.journey_id == journey_id, StepLog.action == "timing")
        .order_by(StepLog.id.desc())
        .limit(latest)
    ).all()
    by_step: dict[str, list[str]] = {}
    for step_id, detail in rows:
        by_step.setdefault(step_id, []).append(str((detail or {}).get("detail") or ""))
    summaries = {}
    for step_id, reasons in by_step.items():
        sources: dict[str, int] = {}
        hours: dict[str, int] = {}
        for reason in reasons:
            for prefix, label in TIMING_SOURCES.items():
                if reason.startswith(prefix):
                    sources[label] = sources.get(label, 0) + 1
                    if prefix != "no opens or clicks":
                        hour = reason.removeprefix(prefix).split()[0]
                        hours[hour] = hours.get(hour, 0) + 1
                    break
        top = sorted(hours.items(), key=lambda item: (-item[1], item[0]))[:3]
        ranked = sorted(sources.items(), key=lambda item: -item[1])
        summary = ", ".join(f"{n} by {label}" for label, n in ranked)
        if top:
            summary += "; hours " + ", ".join(f"{hour} ({n})" for hour, n in top)
        summaries[step_id] = f"latest {len(reasons)} sends: {summary}; last: {reasons[0]}"
    return summaries
