"""The global control group: a stable share of customers gets no marketing at all.

Contract:
- `JOURNEYMAN_GLOBAL_HOLDOUT` (`5%`) is the share; unset or `0%`, nobody is held out.
  A customer is in it when an HMAC-SHA256 of their id, keyed with the installation's
  signing key (`Settings.signing_key`: JOURNEYMAN_SECRET_KEY, which `dev` keeps, else
  derived from the admin token), falls below the share: stable across restarts and
  workers, not guessable from the id, and the same customers whatever the journey.
- Marketing is every send of a journey with a topic not listed in
  `JOURNEYMAN_TRANSACTIONAL_TOPICS` (comma-separated). A journey without a topic sends
  service messages (a pickup notice) that nobody can unsubscribe from: not marketing.
- The send activity skips a marketing send to a member with the reason
  "global holdout" (a skipped delivery: counted in the journey's stats like any skip);
  the run goes on, so its goal still converts it and the group can be measured.
- `global_lift` compares, per goal event of the marketing journeys, the customers who
  entered them and were not held out (treatment) against the members who entered them
  (control): a customer converts when any of their runs of a journey with that goal
  converted. A run is its customer's as the send sees it: one started under an
  anonymous id later merged into a known customer is that customer's. The interval is
  Newcombe's, as for a journey's own holdout.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from journeyman.customers.identity import customer_behind
from journeyman.insight.lift import Lift, holdout_lift
from journeyman.settings import Settings
from journeyman.storage.models import Customer, JourneyRun, JourneyVersion

REASON = "global holdout"


class HoldoutSettingsError(ValueError):
    """The global holdout is set but cannot work (no key); the message says what to set."""


@dataclass(frozen=True)
class GlobalHoldout:
    share: float = 0.0
    key: bytes = b""
    transactional: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, settings: Settings, key: bytes | None = None) -> GlobalHoldout:
        """From JOURNEYMAN_GLOBAL_HOLDOUT and JOURNEYMAN_TRANSACTIONAL_TOPICS, keyed with
        `key` (default: the settings' signing key)."""
        share = settings.global_holdout_share
        transactional = frozenset(settings.transactional_topic_list)
        if share <= 0:
            return cls(0.0, b"", transactional)
        if key is not None:
            return cls(share, key, transactional)
        try:
            key = settings.signing_key()
        except ValueError:
            raise HoldoutSettingsError(
                "JOURNEYMAN_GLOBAL_HOLDOUT needs JOURNEYMAN_SECRET_KEY (or "
                "JOURNEYMAN_ADMIN_TOKEN): membership is keyed with it"
            ) from None
        return cls(share, key, transactional)

    def holds(self, customer_id: str) -> bool:
        """Whether the customer is in the global control group."""
        if self.share <= 0:
            return False
        digest = hmac.new(
            self.key, b"global-holdout\x1f" + customer_id.encode(), hashlib.sha256
        ).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def marketing(self, topic: str | None) -> bool:
        return bool(topic) and topic not in self.transactional

    def reason(self, customer_id: str, topic: str | None) -> str | None:
        """REASON when a send of `topic` to the customer is held back, else None."""
        if self.marketing(topic) and self.holds(customer_id):
            return REASON
        return None


class GoalLift(BaseModel):
    goal: str
    journeys: list[str]
    lift: Lift


class GlobalReport(BaseModel):
    share: float
    transactional_topics: list[str]
    marketing_journeys: list[str]
    goals: list[GoalLift]


def _latest_plans(session: Session) -> dict[str, Mapping[str, Any]]:
    plans: dict[str, Mapping[str, Any]] = {}
    for journey_id, plan in session.execute(
        select(JourneyVersion.journey_id, JourneyVersion.plan).order_by(JourneyVersion.created_at)
    ):
        plans[journey_id] = plan
    return plans


def global_lift(session: Session, holdout: GlobalHoldout) -> GlobalReport:
    """All marketing against the global control group, per goal event."""
    goals: dict[str, list[str]] = {}
    marketing: list[str] = []
    for journey_id, plan in _latest_plans(session).items():
        journey = plan.get("journey") or {}
        if not holdout.marketing(journey.get("topic")):
            continue
        marketing.append(journey_id)
        goal = (journey.get("goal") or {}).get("event")
        if goal:
            goals.setdefault(str(goal), []).append(journey_id)
    results = []
    for goal, journeys in sorted(goals.items()):
        rows = session.execute(
            select(
                JourneyRun.customer_id,
                JourneyRun.holdout,
                JourneyRun.outcome,
                JourneyRun.attributed_at,
                Customer.merged_into,
            )
            .join(Customer, Customer.id == JourneyRun.customer_id, isouter=True)
            .where(JourneyRun.journey_id.in_(journeys))
        ).all()
        lift = _lift(holdout, _by_customer_behind(session, rows))
        results.append(GoalLift(goal=goal, journeys=sorted(journeys), lift=lift))
    return GlobalReport(
        share=holdout.share,
        transactional_topics=sorted(holdout.transactional),
        marketing_journeys=sorted(marketing),
        goals=results,
    )


def _by_customer_behind(session: Session, rows: Iterable[Any]) -> list[tuple[Any, ...]]:
    """The rows with each run's customer id replaced by the customer it points to now:
    a run started under an anonymous id later merged into a known customer belongs to
    that customer, whose id the send activity asks the holdout about (as the optimized
    split's counts do)."""
    behind: dict[str, str] = {}
    out: list[tuple[Any, ...]] = []
    for customer_id, journey_holdout, outcome, attributed_at, merged_into in rows:
        if merged_into is not None and customer_id not in behind:
            customer = customer_behind(session, customer_id)
            behind[customer_id] = customer.id if customer is not None else customer_id
        now_id = behind.get(customer_id, customer_id)
        out.append((now_id, journey_holdout, outcome, attributed_at))
    return out


def _lift(holdout: GlobalHoldout, rows: Iterable[Any]) -> Lift:
    treated: dict[str, bool] = {}
    control: dict[str, bool] = {}
    for customer_id, journey_holdout, outcome, attributed_at in rows:
        converted = outcome == "converted" or attributed_at is not None
        if holdout.holds(customer_id):
            control[customer_id] = control.get(customer_id, False) or converted
        elif not journey_holdout:  # a journey's own holdout got none of its messages
            treated[customer_id] = treated.get(customer_id, False) or converted
    lift = holdout_lift(len(treated), sum(treated.values()), len(control), sum(control.values()))
    lift.verdict = lift.verdict.replace("the journey ", "all marketing ")
    return lift


def global_lines(report: GlobalReport) -> list[str]:
    """`journeyman stats --global`."""
    if report.share <= 0:
        return [
            "no global holdout: set JOURNEYMAN_GLOBAL_HOLDOUT (like 5%) to keep a stable "
            "share of customers out of all marketing and measure its lift"
        ]
    exempt = ", ".join(report.transactional_topics) or "none"
    lines = [
        f"global holdout {report.share:.0%} of customers get no marketing "
        f"(transactional topics exempt: {exempt})",
        f"marketing journeys: {', '.join(report.marketing_journeys) or 'none'}",
    ]
    for goal in report.goals:
        lift = goal.lift
        lines += [
            "",
            f"goal {goal.goal} ({', '.join(goal.journeys)})",
            f"  marketing  {lift.treatment_converted:,} of {lift.treatment_entered:,} customers"
            + (f" ({lift.treatment_rate:.1%})" if lift.treatment_rate is not None else ""),
            f"  holdout    {lift.control_converted:,} of {lift.control_entered:,} customers"
            + (f" ({lift.control_rate:.1%})" if lift.control_rate is not None else ""),
            f"  {lift.verdict}",
        ]
    if not report.goals:
        lines += ["", "no marketing journey has a goal: nothing to measure"]
    return lines
