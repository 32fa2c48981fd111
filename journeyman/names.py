"""Names that Temporal, the worker, the API and the CLI must agree on: constants only."""

from temporalio.common import SearchAttributeKey

JOURNEY_WORKFLOW = "Journey"
# One run per segment check (a schedule tick, a broadcast): enters the matching customers.
AUDIENCE_WORKFLOW = "Audience"
EVENT_SIGNAL = "event"
STATE_QUERY = "state"
# Operator controls on one run (updates, validated in the workflow), and the signal that
# wakes a send held while its journey was paused (see docs/operations.md).
SKIP_WAIT_UPDATE = "skip_wait"
MOVE_TO_UPDATE = "move_to"
END_RUN_UPDATE = "end_run"
WAKE_SIGNAL = "wake"
DEFAULT_TASK_QUEUE = "journeyman"

# Activity types: the workflows schedule them by these names (so they import no activity
# code, with its database, HTTP and template libraries), the activities register under them.
EVALUATE_ACTIVITY = "journey.evaluate"
NEXT_LOCAL_TIME_ACTIVITY = "journey.next_local_time"
FINISH_RUN_ACTIVITY = "journey.finish_run"
RECORD_STEPS_ACTIVITY = "journey.record_steps"
UPDATE_PROFILE_ACTIVITY = "journey.update_profile"
CALL_WEBHOOK_ACTIVITY = "journey.call_webhook"
SEND_ACTIVITY = "journey.send"
BEST_SEND_TIME_ACTIVITY = "optimize.best_send_time"
SPLIT_COUNTS_ACTIVITY = "optimize.split_counts"
AUDIENCE_ENTER_ACTIVITY = "audience.enter"

JOURNEY_ID = SearchAttributeKey.for_keyword("JourneyId")
JOURNEY_VERSION = SearchAttributeKey.for_keyword("JourneyVersion")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
JOURNEY_STEP = SearchAttributeKey.for_keyword("JourneyStep")
# The interpreter's era a run was started in (`JourneyInput.era`), set at the start only:
# `journeyman runs --without-patch` counts a run of an era as having the patches it takes
# unasked (workflows/patches.py). Runs from before eras have none.
JOURNEY_ERA = SearchAttributeKey.for_int("JourneyEra")
SEARCH_ATTRIBUTES = (JOURNEY_ID, JOURNEY_VERSION, CUSTOMER_ID, JOURNEY_STEP, JOURNEY_ERA)
# As `temporal server start-dev --search-attribute NAME=TYPE` takes them (`Keyword`,
# `Int`); the operator service takes each key's `indexed_value_type`.
SEARCH_ATTRIBUTE_FLAGS = tuple(
    f"{key.name}={key.indexed_value_type.name.capitalize()}" for key in SEARCH_ATTRIBUTES
)
# Set by Temporal on every run a Schedule starts: the time the tick was due.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")

# The Temporal Schedule of a segment journey (journeyman/audiences/schedules.py) and the runs it
# starts (`audience/win_back-2026-11-30T09:00:00Z`, one per tick).
SCHEDULE_PREFIX = "audience/"
# The trigger a segment entry gives a run: `trigger.name` in its expressions.
SEGMENT_ENTRY_EVENT = "segment_entry"

# What providers report about a message, as journey events of the customer. Each carries
# `delivery_id`, `journey_id`, `step_id`, `workflow_id`, `channel`, `template` and
# `provider` (plus `url` for clicks, `reason` for failures), and reaches only the run
# that sent the message: a `wait_for: {event: email_opened}` waits for *its* email.
DELIVERY_EVENTS = frozenset(
    {
        "email_delivered",
        "email_opened",
        "email_clicked",
        "email_bounced",
        "email_spam_reported",
        "email_unsubscribed",
        "sms_sent",
        "sms_delivered",
        "sms_failed",
        "push_sent",
        "whatsapp_sent",
        "whatsapp_delivered",
        "whatsapp_read",
        "whatsapp_failed",
        "message_failed",  # any channel: bounced, dropped, undelivered, failed
    }
)


def schedule_id(journey_id: str, task_queue: str = DEFAULT_TASK_QUEUE) -> str:
    """`audience/win_back`; a worker on another task queue than the default has its own
    (`audience/<queue>/win_back`), so two deployments can share a namespace."""
    if task_queue == DEFAULT_TASK_QUEUE:
        return f"{SCHEDULE_PREFIX}{journey_id}"
    return f"{SCHEDULE_PREFIX}{task_queue}/{journey_id}"


def schedule_journey(schedule: str, task_queue: str = DEFAULT_TASK_QUEUE) -> str | None:
    """The journey id of one of this task queue's schedules; None for any other id."""
    prefix = schedule_id("", task_queue)
    rest = schedule.removeprefix(prefix) if schedule.startswith(prefix) else None
    return rest if rest and "/" not in rest else None


def workflow_id(journey_id: str, customer_id: str, entry_key: str = "") -> str:
    """`abandoned_cart/c_42/cart_9`: readable in the Temporal UI, one per customer and key.

    Each part has `%` written `%25` and `/` written `%2F`, so the `/` between parts are
    the only ones: customer `a/b` with key `c` (`j/a%2Fb/c`) and customer `a` with key
    `b/c` (`j/a/b%2Fc`) are two runs. Ids without `/` or `%` (nearly all) read as before.
    """
    base = f"{_escape(journey_id)}/{_escape(customer_id)}"
    return f"{base}/{_escape(entry_key)}" if entry_key else base


def legacy_workflow_id(journey_id: str, customer_id: str, entry_key: str = "") -> str:
    """The unescaped form runs were started under before `workflow_id` escaped its parts.
    Such runs keep their id: events reach them through the id recorded in
    `journey_runs` (journeyman/events/routing.py), never by recomputing it."""
    base = f"{journey_id}/{customer_id}"
    return f"{base}/{entry_key}" if entry_key else base


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace("/", "%2F")
