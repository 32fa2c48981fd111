"""Deterministic chance: the same customer always lands in the same split arm and holdout.

Pure functions of their inputs (a hash, not a random generator), so the workflow,
the router and the analytics all agree and a replay gives the same answer.
"""

from __future__ import annotations

import hashlib

from journeyman.dsl.plan import Plan


def bucket(*parts: str) -> float:
    """A number in [0, 1) fixed by its inputs."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_holdout(plan: Plan, customer_id: str) -> bool:
    holdout = plan.journey.entry.holdout
    return holdout > 0 and bucket(plan.journey.id, customer_id, "holdout") < holdout


def split_choice(journey_id: str, customer_id: str, step_id: str, weights: list[float]) -> int:
    point = bucket(journey_id, customer_id, step_id) * sum(weights)
    for index, weight in enumerate(weights):
        if point < weight:
            return index
        point -= weight
    return len(weights) - 1
