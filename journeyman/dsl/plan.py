"""The compiled journey a run carries: pure data, safe to import in the workflow sandbox.

It lives apart from the compiler so that `workflows/` loads no YAML or template library
(STYLE §4); `journeyman.dsl.compiler` builds it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from journeyman.dsl.model import Journey


class Plan(BaseModel):
    """What the journey workflow runs: the validated journey, its version and its routes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    journey: Journey
    version: str
    # Where each step goes when it finishes without choosing (fall-through or `goto`);
    # None ends the journey.
    next: dict[str, str | None]
    # Every event name a run reacts to after entry (goal, exit, wait_for), for routing.
    listens: list[str]

    def step_index(self, step_id: str) -> int:
        for index, step in enumerate(self.journey.steps):
            if step.id == step_id:
                return index
        raise KeyError(step_id)
