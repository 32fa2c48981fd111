"""Activities of optimization: when to send (`send.timing: best`).

Contract:
- `best_send_time` reads the customer's opens and clicks (`email_opened` and
  `email_clicked` events of the last `LOOKBACK`, one query on the events' index by
  customer, name and time) and answers the instant to send at, with the local hour
  chosen and why (`BestTime.reason`). With fewer than `MIN_SIGNALS` of them it uses the
  journey's audience: the opens and clicks of the journey's deliveries (one query on
  the deliveries' index by journey, the latest `AUDIENCE_ROWS`), each in its
  customer's zone; without any, the step's own time.
- `split_counts` reads, for an optimized split, each case's decided takers, their
  conversions and whether an operator stopped it (journeyman/optimization/splits.py); the workflow
  draws the case from them with its own deterministic randomness. Runs of the global
  holdout's members (`global_holdout`, the send activity's) are not counted where the
  journey is marketing: the case's message never reached them.
- The hour is computed by the pure functions of journeyman/optimization/optimize.py; the workflow
  only waits until the answer. The answer is recorded in the run's history, so a
  replay takes the same hour.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from temporalio import activity

from journeyman import names
from journeyman.customers.clock import zone
from journeyman.customers.profiles import find_customer
from journeyman.optimization.holdout import GlobalHoldout
from journeyman.optimization.optimize import (
    AUDIENCE_ROWS,
    LOOKBACK,
    MIN_SIGNALS,
    BestTime,
    BestTimeInput,
    SplitCounts,
    SplitCountsInput,
    best_hour,
    hour_scores,
    send_time,
)
from journeyman.optimization.splits import count_cases
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery, Event

OPEN_EVENTS = ("email_opened", "email_clicked")


class OptimizeActivities:
    def __init__(
        self,
        db: Database,
        default_timezone: str = "UTC",
        global_holdout: GlobalHoldout | None = None,
    ) -> None:
        self.db = db
        self.default_timezone = default_timezone
        self.global_holdout = global_holdout or GlobalHoldout()

    @activity.defn(name=names.BEST_SEND_TIME_ACTIVITY)
    def best_send_time(self, inp: BestTimeInput) -> BestTime:
        within = timedelta(seconds=inp.within_seconds)
        since = inp.now - LOOKBACK
        with self.db.session() as session:
            customer = find_customer(session, inp.customer_id)
            tz_name = (customer.timezone if customer else None) or self.default_timezone
            tz = zone(tz_name, self.default_timezone)
            history_id = customer.id if customer else inp.customer_id
            rows = session.execute(
                select(Event.timestamp, Event.name).where(
                    Event.customer_id == history_id,
                    Event.name.in_(OPEN_EVENTS),
                    Event.timestamp >= since,
                    Event.timestamp <= inp.now,
                )
            ).all()
            scores, counted = hour_scores(
                ((at, name == "email_clicked") for at, name in rows), tz, inp.now
            )
            if counted >= MIN_SIGNALS and best_hour(scores) is not None:
                at, hour = send_time(inp.now, tz, scores, within)
                return BestTime(
                    at=at,
                    hour=hour,
                    source="customer",
                    reason=f"best hour {hour:02d}:00 {tz_name} from {counted} opens and clicks",
                )
            audience, votes = self._audience_scores(session, inp)
        if best_hour(audience) is not None:
            at, hour = send_time(inp.now, tz, audience, within)
            own = f"{counted} opens and clicks" if counted else "no opens or clicks"
            return BestTime(
                at=at,
                hour=hour,
                source="audience",
                reason=f"audience's best hour {hour:02d}:00 {tz_name} ({own} of the customer, "
                f"{votes} of the journey's audience)",
            )
        return BestTime(
            at=inp.now,
            hour=inp.now.astimezone(tz).hour,
            source="step",
            reason="no opens or clicks of the customer or the journey's audience",
        )

    @activity.defn(name=names.SPLIT_COUNTS_ACTIVITY)
    def split_counts(self, inp: SplitCountsInput) -> SplitCounts:
        with self.db.session() as session:
            counts, _takers, _order = count_cases(
                session,
                inp.journey_id,
                inp.step_id,
                list(zip(inp.gotos, inp.weights, strict=True)),
                inp.event,
                timedelta(seconds=inp.within_seconds),
                inp.now,
                self.global_holdout,
            )
        return SplitCounts(cases=counts)

    def _audience_scores(self, session: Session, inp: BestTimeInput) -> tuple[list[float], int]:
        """The journey's audience's hour scores, each open or click in the zone of the
        customer who made it, and how many counted."""
        rows = session.execute(
            select(Delivery.opened_at, Delivery.clicked_at, Customer.timezone)
            .join(Customer, Customer.id == Delivery.customer_id, isouter=True)
            .where(
                Delivery.journey_id == inp.journey_id,
                or_(Delivery.opened_at.is_not(None), Delivery.clicked_at.is_not(None)),
            )
            .order_by(Delivery.id.desc())
            .limit(AUDIENCE_ROWS)
        ).all()
        total = [0.0] * 24
        counted = 0
        for opened_at, clicked_at, tz_name in rows:
            tz = zone(tz_name, self.default_timezone)
            signals = [(opened_at, False), (clicked_at, True)]
            scores, n = hour_scores(((t, c) for t, c in signals if t is not None), tz, inp.now)
            counted += n
            total = [a + b for a, b in zip(total, scores, strict=True)]
        return total, counted
