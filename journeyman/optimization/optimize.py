"""Optimization: the best hour to send to a customer, and splits that learn.

Pure functions of their inputs, so that the activities (activities/optimize.py), the
workflow (for the Thompson draw, fed with the run's deterministic randomness) and the
population benchmark (bench/optimize.py) all run the same code.

Best hour (`send.timing: best`): every open and click of the customer is a vote for
the hour of the day it happened at in the customer's time zone, weighted by recency
(a vote halves every `HALF_LIFE`, a click counts `CLICK_WEIGHT` opens) and spread a
little to the neighbouring hours so that 18:55 and 19:05 agree. With fewer than
`MIN_SIGNALS` opens and clicks the customer's own votes are not trusted: the hour that
works best for the journey's audience is used, and without that the send goes when
the step is reached. The send waits for the best-scoring hour reachable within the
window (`send.within`, default 24h), the earliest of equal ones.

Optimized split (`split.optimize`): each case has a Beta posterior over its conversion
rate, Beta(1 + prior + conversions, 1 + prior' + takers - conversions), where the
weights give the prior (`PRIOR_STRENGTH` pseudo-takers spread by weight, at the mean
rate seen so far); one draw per case, the highest draw wins. A stopped case never
wins. The draws come from a `random.Random` the caller gives: the workflow passes
`workflow.random()`, so a replay takes the same case.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

HALF_LIFE = timedelta(days=30)
CLICK_WEIGHT = 2.0
MIN_SIGNALS = 3
# How far back opens and clicks are read: past ~6 half-lives a vote weighs under 2%.
LOOKBACK = timedelta(days=180)
# Each vote goes half to its hour and a quarter to each neighbour.
SPREAD = (0.25, 0.5, 0.25)
DEFAULT_WITHIN = timedelta(hours=24)
MAX_WITHIN = timedelta(days=7)
AUDIENCE_ROWS = 5000  # the journey's latest opened or clicked deliveries read

PRIOR_STRENGTH = 2.0  # pseudo-takers the weights are worth, spread over the cases
PROBABILITY_DRAWS = 4000  # Monte Carlo draws for "probability each case is best"


# -- best hour ------------------------------------------------------------------------


@dataclass
class BestTimeInput:
    customer_id: str
    journey_id: str
    now: datetime
    within_seconds: float


@dataclass
class BestTime:
    """When to send, the local hour chosen, and why: `source` is customer (their own
    opens and clicks), audience (the journey's audience's) or step (no history)."""

    at: datetime
    hour: int
    source: str
    reason: str


def hour_scores(
    signals: Iterable[tuple[datetime, bool]], tz: tzinfo, now: datetime
) -> tuple[list[float], int]:
    """The 24 local-hour scores of opens and clicks (`(at, is_click)`), and how many
    counted (those after `now - LOOKBACK`, not after `now`)."""
    raw = [0.0] * 24
    counted = 0
    half_life = HALF_LIFE.total_seconds()
    for at, is_click in signals:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        age = (now - at).total_seconds()
        if age < 0 or age > LOOKBACK.total_seconds():
            continue
        counted += 1
        weight = (CLICK_WEIGHT if is_click else 1.0) * 0.5 ** (age / half_life)
        raw[at.astimezone(tz).hour] += weight
    scores = [0.0] * 24
    for hour, value in enumerate(raw):
        if value:
            for offset, share in zip((-1, 0, 1), SPREAD, strict=True):
                scores[(hour + offset) % 24] += value * share
    return scores, counted


def best_hour(scores: Sequence[float]) -> int | None:
    """The hour with the highest score (the earliest of equal ones), None if all are 0."""
    top = max(scores, default=0.0)
    if top <= 0:
        return None
    return scores.index(top)


def send_time(
    now: datetime, tz: tzinfo, scores: Sequence[float], within: timedelta
) -> tuple[datetime, int]:
    """When to send (UTC) and the local hour it falls in: of the hours reachable from
    `now` within `within` (the one in progress counts as now), the best scoring, the
    earliest of equal ones."""
    local_now = now.astimezone(tz)
    best_at, best_hour_seen, best_score = now, local_now.hour, scores[local_now.hour]
    top = local_now.replace(minute=0, second=0, microsecond=0)
    deadline = now + within
    for step in range(1, int(within / timedelta(hours=1)) + 2):
        candidate = (top + timedelta(hours=step)).astimezone(UTC)
        if candidate > deadline:
            break
        hour = candidate.astimezone(tz).hour
        if scores[hour] > best_score:
            best_at, best_hour_seen, best_score = candidate, hour, scores[hour]
    return best_at.astimezone(UTC), best_hour_seen


# -- optimized split ------------------------------------------------------------------


@dataclass
class CaseCounts:
    """One case of an optimized split: its decided takers (converted, or their window
    over), how many converted, and its exposure: the decided takers plus, for each taker
    still inside their window, the part of it that has passed. Conversions come any
    time in the window: counting only the decided would count a case's recent converters
    before its recent non-converters and flatter the case taking the most traffic now
    (a split could lock onto the worse case); over the exposure, the rate is fair."""

    goto: str
    weight: float
    takers: int = 0
    conversions: int = 0
    stopped: bool = False
    exposure: float | None = None  # None: the decided takers alone

    @property
    def trials(self) -> float:
        return self.takers if self.exposure is None else max(self.exposure, self.conversions)


@dataclass
class SplitCountsInput:
    journey_id: str
    step_id: str
    gotos: list[str]
    weights: list[float]
    event: str
    within_seconds: float
    now: datetime


@dataclass
class SplitCounts:
    """What the counting activity read for one optimized split step, case by case."""

    cases: list[CaseCounts] = field(default_factory=list)


def posterior(case: CaseCounts, share: float, mean_rate: float) -> tuple[float, float]:
    """The Beta(alpha, beta) of a case: a flat Beta(1, 1), plus the weights' prior
    (`PRIOR_STRENGTH` pseudo-takers times `share`, the case's weight over the mean
    weight, converting at the mean rate seen so far), plus its own takers and
    conversions."""
    pseudo = PRIOR_STRENGTH * share
    trials = case.trials
    conversions = min(case.conversions, trials)
    alpha = 1.0 + pseudo * mean_rate + conversions
    beta = 1.0 + pseudo * (1.0 - mean_rate) + (trials - conversions)
    return alpha, beta


def _shares(cases: Sequence[CaseCounts]) -> list[float]:
    total = sum(c.weight for c in cases)
    return [c.weight * len(cases) / total if total > 0 else 1.0 for c in cases]


def _mean_rate(cases: Sequence[CaseCounts]) -> float:
    trials = sum(c.trials for c in cases)
    conversions = sum(min(c.conversions, c.trials) for c in cases)
    return (conversions + 0.5) / (trials + 1.0)


def thompson_choice(cases: Sequence[CaseCounts], rng: random.Random) -> tuple[int, list[float]]:
    """The index of the case chosen (the highest posterior draw among cases not
    stopped) and every case's draw (a stopped case's draw is -1). When all cases are
    stopped, they are all drawn as if none were."""
    live = [c for c in cases if not c.stopped]
    mean_rate = _mean_rate(cases)
    draws: list[float] = []
    for case, share in zip(cases, _shares(cases), strict=True):
        alpha, beta = posterior(case, share, mean_rate)
        value = rng.betavariate(alpha, beta)  # always drawn: a replay draws the same count
        draws.append(-1.0 if case.stopped and live else value)
    best = max(range(len(cases)), key=lambda i: (draws[i], -i))
    return best, draws


def probability_best(
    cases: Sequence[CaseCounts], draws: int = PROBABILITY_DRAWS, seed: int = 0
) -> list[float]:
    """Each case's probability of having the highest rate under the posteriors (Monte
    Carlo, seeded: the same counts give the same figures). Stopped cases get 0; this
    is also the share of new takers each case gets."""
    rng = random.Random(seed)
    wins = [0] * len(cases)
    for _ in range(draws):
        index, _values = thompson_choice(cases, rng)
        wins[index] += 1
    return [w / draws for w in wins]
