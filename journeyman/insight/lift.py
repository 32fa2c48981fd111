"""Holdout lift: the treatment's conversion rate against the control's, with its interval.

Used by `journeyman stats` for a journey's own holdout (journeyman/insight/stats.py) and
for the global holdout (journeyman/optimization/holdout.py); `wilson_interval` also by
optimized splits (journeyman/optimization/splits.py).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

# Below this many entrants in either group the lift is not estimated.
MIN_GROUP = 30
Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal


class Interval(BaseModel):
    low: float
    high: float


class Lift(BaseModel):
    """Treatment against control (the holdout). Rates and differences are fractions."""

    treatment_entered: int
    treatment_converted: int
    control_entered: int
    control_converted: int
    treatment_rate: float | None
    control_rate: float | None
    difference: float | None = Field(description="treatment rate - control rate")
    interval: Interval | None = Field(description="95% CI of the difference (Newcombe)")
    relative: float | None = Field(description="difference / control rate")
    enough_data: bool
    verdict: str


def wilson_interval(successes: int, n: int, z: float = Z_95) -> Interval:
    """Wilson's score interval for a proportion p = successes / n:

    (p + z²/2n ± z·√(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    """
    if n <= 0:
        raise ValueError("no trials")
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return Interval(low=(centre - spread) / scale, high=(centre + spread) / scale)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z_95) -> Interval:
    """Newcombe's hybrid score interval (his method 10, 1998) for p1 - p2.

    With (l1, u1) and (l2, u2) the Wilson intervals of p1 = k1/n1 and p2 = k2/n2 and
    d = p1 - p2:

        low  = d - √((p1 - l1)² + (u2 - p2)²)
        high = d + √((u1 - p1)² + (p2 - l2)²)

    Unlike the Wald interval d ± z·√(p1(1-p1)/n1 + p2(1-p2)/n2), it keeps its coverage
    for rates near 0 (conversion rates often are) and never leaves [-1, 1].
    """
    p1, p2 = k1 / n1, k2 / n2
    w1, w2 = wilson_interval(k1, n1, z), wilson_interval(k2, n2, z)
    d = p1 - p2
    return Interval(
        low=d - math.sqrt((p1 - w1.low) ** 2 + (w2.high - p2) ** 2),
        high=d + math.sqrt((w1.high - p1) ** 2 + (p2 - w2.low) ** 2),
    )


def holdout_lift(
    treatment: int, treatment_converted: int, control: int, control_converted: int
) -> Lift:
    """The treatment's conversion rate against the control's, with its 95% interval;
    estimated only with at least MIN_GROUP entrants in each group."""
    treatment_rate = treatment_converted / treatment if treatment else None
    control_rate = control_converted / control if control else None
    enough = treatment >= MIN_GROUP and control >= MIN_GROUP
    difference = interval = relative = None
    if enough and treatment_rate is not None and control_rate is not None:
        difference = treatment_rate - control_rate
        interval = newcombe_interval(treatment_converted, treatment, control_converted, control)
        relative = difference / control_rate if control_rate else None
    lift = Lift(
        treatment_entered=treatment,
        treatment_converted=treatment_converted,
        control_entered=control,
        control_converted=control_converted,
        treatment_rate=treatment_rate,
        control_rate=control_rate,
        difference=difference,
        interval=interval,
        relative=relative,
        enough_data=enough,
        verdict="",
    )
    lift.verdict = verdict(lift)
    return lift


def verdict(lift: Lift) -> str:
    """The lift in a sentence a marketer can act on."""
    if lift.difference is None or lift.interval is None:
        return (
            f"not enough data yet: at least {MIN_GROUP} customers are needed in each group "
            f"(treatment {lift.treatment_entered}, control {lift.control_entered})"
        )
    points = lift.difference * 100
    ci = f"95% CI {lift.interval.low * 100:.1f} to {lift.interval.high * 100:.1f}"
    if lift.interval.low > 0:
        return f"the journey lifts conversion by {points:.1f} points ({ci})"
    if lift.interval.high < 0:
        return f"the journey lowers conversion by {-points:.1f} points ({ci})"
    return f"no significant difference yet ({points:+.1f} points, {ci})"
