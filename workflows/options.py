"""The interpreter's timeouts, retry policies, limits and small pure helpers.

Pure: no state, no I/O. `workflows/journey.py` imports this module (and the other
helpers of the interpreter) passed through the workflow sandbox, so a new run does not
execute it again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from journeyman.dsl.durations import format_duration

MIN_DEFERRAL = timedelta(minutes=1)
# A send held for its provider's pace waits for its slot to the moment (a minute would
# ruin a pace of 10 a second); this floor only keeps a past slot from spinning.
MIN_PACED_DEFERRAL = timedelta(milliseconds=10)
PATH_KEPT = 200  # path entries carried across continue-as-new
SEEN_KEPT = 500  # message ids remembered for de-duplication
HEARD_KEPT = 100  # events received since entry kept for `wait_for` with `since: entry`

ACTIVITY_TIMEOUT = timedelta(seconds=30)
SEND_TIMEOUT = timedelta(minutes=2)
# A send heartbeats around its provider call (providers time out after 10 s): when the
# worker dies mid-send, the retry starts after this, not after SEND_TIMEOUT.
SEND_HEARTBEAT = timedelta(seconds=20)
LOCAL_TIMEOUT = timedelta(seconds=10)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    # Giving up would lose a message; the ledger keeps retries harmless. Permanent
    # failures are non-retryable ApplicationErrors and stop at once.
    maximum_attempts=0,
)
# The step log serves statistics: a record that cannot be written in a few tries waits
# for the next step rather than hold up the run. The attempts bound it besides the
# deadline: the SDK retries a local activity failing fast past its schedule_to_close.
RECORD_DEADLINE = timedelta(minutes=1)
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
# A webhook is the journey author's outside system: retry a while, then record and go on.
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=8,
)


class Finished(Exception):
    """Raised inside the step loop when a goal or exit event ends the run."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class Moved(Exception):
    """Raised inside the step loop when an operator moved the run to another step."""

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self.step_id = step_id


def cause(exc: ActivityError) -> str:
    return exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc.cause)


def ago(delta: timedelta) -> str:
    """How long ago an event came: to the second below an hour, to the minute above (an
    event's timestamp is its sender's clock, a little off the workflow's)."""
    seconds = max(0, round(delta.total_seconds()))
    if seconds >= 3600:
        seconds = round(seconds / 60) * 60
    return format_duration(timedelta(seconds=seconds)) if seconds else "0s"


def fmt(delta: timedelta) -> str:
    return format_duration(delta)


def journey_cap_input(settings: Any) -> dict[str, Any] | None:
    """`settings.journey_cap` for the send activity (an input, not a command: no patch)."""
    cap = getattr(settings, "journey_cap", None)
    return None if cap is None else dict(cap.model_dump(mode="json"))


def cap_input(cap: Any) -> dict[str, Any] | str | None:
    """The journey's cap for the send activity: `{"count", "per"}`, "none" or None."""
    if cap is None or isinstance(cap, str):
        return cap
    return dict(cap.model_dump(mode="json"))
