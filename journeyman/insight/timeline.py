"""What a simulation shows: each run's path on the simulation's clock, with its messages.

`TimelineEntry` is one path entry placed at its offset since the trigger, with the
message its send recorded (to, summary, body) or the webhook request it made;
`Simulation` is the whole result. `heard_entries` adds what the runs' paths leave out:
an event handed to a run that no step used when it came.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from journeyman.contracts import PathEntry
from journeyman.dsl.durations import format_duration, parse_duration
from journeyman.dsl.model import WaitForStep
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Skipped
from journeyman.storage.db import Database
from journeyman.storage.models import Delivery, OutboxMessage

# How far before a whole second an offset may fall and still read as that second.
AT_SECONDS_SLACK = 0.05


@dataclass
class TimelineEntry:
    """One path entry of a run, placed on the simulation's clock."""

    run: str  # workflow id
    offset: timedelta  # since the trigger
    step: str
    action: str
    detail: str = ""
    channel: str | None = None
    template: str | None = None
    to: str | None = None
    summary: str | None = None  # the message's subject, title or first line
    body: str | None = None  # the message's rendered text (shown with --verbose)
    request: WebhookCall | None = None  # a webhook step's request (shown with --verbose)

    @property
    def at_seconds(self) -> int:
        # Whole seconds elapsed: a send that took half a second after its 1-hour timer
        # reads 3600, not 3601. The time-skipping server's clocks agree to the
        # millisecond, not better: an event placed at 5h can be stamped a millisecond
        # before it, which reads 5h, not 4h 59m 59s.
        return math.floor(self.offset.total_seconds() + AT_SECONDS_SLACK)

    def describe(self) -> str:
        """What happened, in words: `sent on push with template cart_reminder`."""
        detail = self.detail
        match self.action:
            case "entered":
                return detail or "entered"
            case "waited":
                return f"waited {detail}"
            case "event":
                got = detail.removeprefix("got ")
                return got if " (since entry)" in got else f"{got} arrived"
            case "timeout":
                return f"timed out: {detail}"
            case "sent":
                return f"sent on {self.channel} with template {self.template}"
            case "skipped" | "failed" | "deferred" | "error":
                return f"{self.action}: {detail}"
            case "held_out":
                return f"held out: {detail}"
            case "heard":
                return f"heard {detail}"
            case "branched":
                return f"branched {detail}"
            case "split":
                return f"split {detail}"
            case "converted":
                return f"converted ({detail})"
            case "exited":
                return f"exited ({detail})"
            case "ended":
                return "ended"
            case "updated":
                return f"updated profile: {detail}"
            case "webhook":
                return f"webhook (simulated, nothing sent): {detail}"
        return f"{self.action}: {detail}" if detail else self.action

    def verbose_lines(self) -> list[str]:
        """What `--verbose` adds under the entry: the message's text, the webhook's request."""
        lines: list[str] = []
        if self.body is not None:
            lines.extend(["| " + line for line in self.body.splitlines() or [""]])
        call = self.request
        if call is not None:
            lines.append(f"{call.method} {call.url}")
            lines.extend(f"{name}: {value}" for name, value in call.headers.items())
            if call.body:
                lines.append(call.body)
        return lines

    def as_json(self, verbose: bool = False) -> dict[str, Any]:
        """The entry as JSON; `verbose` adds the message's `body` and the webhook's
        `request` (method, url, headers, body)."""
        data: dict[str, Any] = {
            "at_seconds": self.at_seconds,
            "at": format_offset(self.offset),
            "run": self.run,
            "step": self.step,
            "action": self.action,
            "detail": self.detail,
        }
        if self.channel is not None:
            data["channel"] = self.channel
        if self.template is not None:
            data["template"] = self.template
        if self.to is not None:
            data["to"] = self.to
            data["summary"] = self.summary
        if verbose and self.body is not None:
            data["body"] = self.body
        if verbose and self.request is not None:
            data["request"] = self.request.as_json()
        return data


@dataclass
class Simulation:
    journey_id: str
    journey_name: str
    version: str
    customer_id: str
    outcome: str  # the trigger's run's outcome, "not entered", or "cut"
    entries: list[TimelineEntry] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # by workflow id, in entry order
    not_entered: list[Skipped] = field(default_factory=list)  # shown as "journey: why not"
    # Track events after the trigger that entered no run and reached none (offset, name).
    unheard: list[tuple[timedelta, str]] = field(default_factory=list)
    note: str | None = None
    virtual: timedelta = timedelta(0)
    started_at: datetime | None = None  # the trigger's instant on the virtual clock
    real_seconds: float = 0.0
    messages: int = 0

    @property
    def entered(self) -> bool:
        return self.outcome != "not entered"

    def lines(self, verbose: bool = False) -> list[str]:
        """The timeline as `journeyman simulate` prints it: each entry (to whom its
        message went; with `verbose`, the message's text or the webhook's request), then
        the events that reached no run."""
        labels = run_labels([e.run for e in self.entries])
        label_width = max((len(label) + 1 for label in labels.values()), default=0)
        step_width = max((len(e.step) for e in self.entries), default=4)
        lines = []
        for entry in self.entries:
            run = f"{labels.get(entry.run, ''):<{label_width}}"
            lines.append(
                f"  {format_offset(entry.offset):<9} {run}{entry.step:<{step_width}}  "
                f"{entry.describe()}"
            )
            indent = " " * (9 + 1 + label_width + step_width + 4)
            if entry.to is not None:
                lines.append(f"  {indent}to {entry.to}: {entry.summary}")
            if verbose:
                lines += [f"  {indent}  {line}".rstrip() for line in entry.verbose_lines()]
        for offset, name in self.unheard:
            lines.append(
                f"  {format_offset(offset):<9} {name} reached no run "
                "(none was running and listening for it)"
            )
        return lines

    def footer(self) -> str:
        """The outcome (each run's, when there are several), the virtual and real time."""
        labels = run_labels(list(self.outcomes))
        outcome = (
            ", ".join(f"{labels[run]} {o}" for run, o in self.outcomes.items())
            if labels
            else self.outcome
        )
        messages = f"{self.messages} message" + ("" if self.messages == 1 else "s")
        text = (
            f"outcome: {outcome} after {format_span(self.virtual)} of virtual time, "
            f"{messages} sent, {self.real_seconds:.1f} s real"
        )
        return text + (f" ({self.note})" if self.note else "")


def run_labels(runs: list[str]) -> dict[str, str]:
    """Short names for runs when there are several: the entry key (`o1` of
    `order_ready_for_pickup/c1/o1`), else their order of entry."""
    distinct = list(dict.fromkeys(runs))
    if len(distinct) < 2:
        return {}
    keys = [run.split("/", 2)[2] if run.count("/") >= 2 else "" for run in distinct]
    if all(keys) and len(set(keys)) == len(keys):
        return {run: f"[{key}]" for run, key in zip(distinct, keys, strict=True)}
    return {run: f"[run {n}]" for n, run in enumerate(distinct, start=1)}


def format_offset(delta: timedelta) -> str:
    """`+45s`, `+15m 00s`, `+1h 00m`, `+1d 02h`: to the second below an hour, coarser above."""
    total = max(0, round(delta.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"+{days}d {hours:02d}h"
    if hours:
        return f"+{hours}h {minutes:02d}m"
    if minutes:
        return f"+{minutes}m {seconds:02d}s"
    return f"+{seconds}s"


def format_span(delta: timedelta) -> str:
    """`format_offset` without its sign: `15m 00s`, `1d 02h`."""
    return format_offset(delta).removeprefix("+")


# Path entries that use an event the moment it arrives.
_USES = {"event": "got {}", "converted": "goal {}", "exited": "exit on {}"}
_SINCE_ENTRY = re.compile(r"^got (\S+) received (.+) ago \(since entry\)$")


def heard_entries(
    plan: Plan, entries: list[TimelineEntry], delivered: list[tuple[timedelta, str, list[str]]]
) -> list[TimelineEntry]:
    """A `heard` entry for each event handed to a run that no step used when it came:
    what a later `wait_for` with `since: entry` used it for, that a condition did not
    hold, or "not awaited"."""
    found = []
    for at, name, workflow_ids in delivered:
        for workflow_id in workflow_ids:
            path = [e for e in entries if e.run == workflow_id]
            if not path or at > path[-1].offset + timedelta(seconds=1):
                continue  # the run had ended: not heard
            if any(
                abs(e.offset - at) <= timedelta(seconds=1)
                and e.action in _USES
                and e.detail == _USES[e.action].format(name)
                for e in path
            ):
                continue
            current = next((e.step for e in path if e.offset > at), path[-1].step)
            use = _unused(plan, current, name)
            for e in path:
                match = _SINCE_ENTRY.match(e.detail) if e.action == "event" else None
                if match and match[1] == name:
                    received = e.offset - _offset_or_zero(match[2])
                    # "ago" is to the minute above an hour
                    if abs(received - at) <= timedelta(seconds=61):
                        use = f"used at {format_offset(e.offset)} by {e.step} (since entry)"
                        break
            found.append(
                TimelineEntry(
                    run=workflow_id,
                    offset=at,
                    step=current,
                    action="heard",
                    detail=f"{name}: {use}",
                )
            )
    return found


def _unused(plan: Plan, step_id: str, name: str) -> str:
    """Why an event the run heard was of no use when it came."""
    journey = plan.journey
    steps = {step.id: step for step in journey.steps}
    step = steps.get(step_id)
    if isinstance(step, WaitForStep) and name in step.wait_for.events:
        return f"not used: the condition of {step_id} was false"
    if journey.goal is not None and journey.goal.event == name:
        return "not used: the goal condition was false"
    if any(rule.event == name for rule in journey.exit):
        return "not used: the exit condition was false"
    return "not awaited"


def _offset_or_zero(text: str) -> timedelta:
    try:
        return parse_duration(text) if text != "0s" else timedelta(0)
    except ValueError:
        return timedelta(0)


def attributed_entry(
    plan: Plan, workflow_id: str, at: timedelta, name: str | None
) -> TimelineEntry:
    """A goal event within `goal.within` of entry that came after the run ended."""
    goal = plan.journey.goal
    window = format_duration(goal.within) if goal is not None and goal.within else ""
    return TimelineEntry(
        run=workflow_id,
        offset=at,
        step="goal",
        action="converted",
        detail=f"goal {name} within {window} of entry, after the run ended",
    )


@dataclass(frozen=True)
class WebhookCall:
    """A webhook request a simulation answered, as it would have gone out; secrets are
    placeholders (`[secret CRM_TOKEN]`), never their values."""

    workflow_id: str
    step: str
    method: str
    url: str
    headers: dict[str, str]
    body: str

    @classmethod
    def of(cls, request: httpx.Request) -> WebhookCall:
        # The activity's idempotency key: "<workflow id>/<first run id>/<step>/<visit>".
        key = request.headers.get("Idempotency-Key", "")
        parts = key.rsplit("/", 3)
        workflow_id, step = (parts[0], parts[2]) if len(parts) == 4 else ("", "")
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in _TRANSPORT_HEADERS
        }
        return cls(
            workflow_id=workflow_id,
            step=step,
            method=request.method,
            url=str(request.url),
            headers=headers,
            body=request.content.decode("utf-8", "replace"),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
            "body": self.body,
        }


# Headers httpx adds itself: not what the journey wrote, left out of --verbose.
_TRANSPORT_HEADERS = frozenset(
    {"host", "accept", "accept-encoding", "connection", "user-agent", "content-length"}
)


def timeline(
    db: Database,
    workflow_id: str,
    path: Iterable[PathEntry],
    origin: datetime,
    calls: list[WebhookCall] | None = None,
) -> list[TimelineEntry]:
    messages = _messages(db, workflow_id)
    hooks: dict[str, list[WebhookCall]] = {}
    for call in calls or []:
        if call.workflow_id == workflow_id:
            hooks.setdefault(call.step, []).append(call)
    entries = []
    for item in path:
        entry = TimelineEntry(
            run=workflow_id,
            offset=item.at.astimezone(UTC) - origin,
            step=item.step,
            action=item.action,
            detail=item.detail,
            channel=item.channel,
            template=item.template,
        )
        sent = messages.get(item.step)
        if item.action == "sent" and sent:
            entry.to, entry.summary, entry.body = sent.pop(0)
        called = hooks.get(item.step)
        if (
            item.action in ("webhook", "failed")
            and called
            and item.detail.startswith(("webhook", called[0].method))
        ):
            # The last attempt is the one the step's outcome speaks of.
            entry.request = called[-1]
            hooks[item.step] = []
        entries.append(entry)
    return entries


def _messages(db: Database, workflow_id: str) -> dict[str, list[tuple[str, str, str]]]:
    """The recorded messages of a run by step, in send order: (to, subject or first
    line, the rendered text: the body, or the email's plain-text part)."""
    with db.session() as session:
        rows = session.execute(
            select(Delivery.step_id, OutboxMessage)
            .join(OutboxMessage, OutboxMessage.delivery_id == Delivery.id)
            .where(Delivery.workflow_id == workflow_id)
            .order_by(Delivery.id)
        ).all()
        found: dict[str, list[tuple[str, str, str]]] = {}
        for step_id, message in rows:
            found.setdefault(step_id, []).append(
                (message.to, message_summary(message), message.body or "")
            )
        return found


def message_summary(message: OutboxMessage) -> str:
    """The subject (email), title (push, inbox) or first line of the body (sms,
    whatsapp); a WhatsApp message outside the 24-hour window names its approved template."""
    content_sid = (message.data or {}).get("content_sid")
    if message.channel == "whatsapp" and content_sid:
        variables = (message.data or {}).get("content_variables") or "{}"
        return f"approved template {content_sid} {variables}"
    if message.subject:
        return message.subject
    lines = [line.strip() for line in (message.body or "").splitlines() if line.strip()]
    return lines[0] if lines else ""
