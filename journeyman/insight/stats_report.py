"""What `journey_stats` (journeyman/insight/stats.py) reports, and how it reads as text.

The models are the JSON of `GET /v1/journeys/{id}/stats` and `journeyman stats --json`;
`JourneyStats.lines()` is the report `journeyman stats` prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, Field

from journeyman.insight.lift import Lift
from journeyman.optimization.splits import SplitReport

NO_MESSAGE = "no message"
NO_CHANNEL = "(no channel)"

# Entry errors shown with the stats, newest first.
ENTRY_ERROR_SAMPLES = 5


class ChannelMessages(BaseModel):
    """Deliveries of one channel by outcome; provider reports count once each."""

    channel: str
    messages: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    failed: int = Field(0, description="bounced, dropped, undelivered, or failed to send")
    complained: int = 0
    unknown: int = Field(0, description="the provider call's outcome is not known")
    skipped: int = 0
    pending: int = Field(0, description="decided, not final yet (deferred or in flight)")
    skipped_reasons: dict[str, int] = Field(default_factory=dict)

    def add(self, other: ChannelMessages) -> None:
        for name in (
            "messages",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "failed",
            "complained",
            "unknown",
            "skipped",
            "pending",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped_reasons = _ordered(
            Counter(self.skipped_reasons) + Counter(other.skipped_reasons)
        )

    def message_lines(self, channels: list[ChannelMessages]) -> list[str]:
        """The messages table: `channels`, then this total; then skips by reason."""
        if not self.messages:
            return ["  none yet"]
        header = ["  channel", "sent", "delivered", "opened", "clicked", "bounced/failed"]
        header += ["complained", "unknown", "skipped", "pending"]
        rows = [header]
        for m in [*channels, self]:
            shares = (m.delivered, m.opened, m.clicked, m.failed, m.complained)
            rows.append(
                [
                    "  " + m.channel,
                    f"{m.sent:,}",
                    *(_share(n, m.sent) for n in shares),
                    f"{m.unknown:,}",
                    f"{m.skipped:,}",
                    f"{m.pending:,}",
                ]
            )
        lines = _rows(rows, right=True)
        if self.skipped_reasons:
            lines += ["", "skipped, by reason"]
            lines += _rows(
                [["  " + reason, f"{n:,}"] for reason, n in self.skipped_reasons.items()]
            )
        return lines


class Conversions(BaseModel):
    converted: int = Field(
        description="treatment runs converted: by their goal, or within goal.within after "
        "they ended"
    )
    after_end: int = Field(
        0, description="of them, converted within goal.within after the run had ended"
    )
    entered: int = Field(description="treatment runs")
    rate: float | None
    by_channel: dict[str, int] = Field(description="by the channel of the last message")
    by_step: dict[str, int] = Field(description="by the step of the last message")


class Stats(BaseModel):
    version: str | None = Field(description="None: all versions together")
    entered: int
    treatment: int
    control: int = Field(description="entrants held out (sent nothing)")
    running: int
    finished: dict[str, int] = Field(description="finished runs by outcome")
    now_at_step: dict[str, int] | None = Field(
        description="running runs by current step, from Temporal; None: unavailable"
    )
    messages: list[ChannelMessages]
    total: ChannelMessages
    conversions: Conversions
    lift: Lift | None = Field(description="None: the journey has no holdout")
    reached: dict[str, int] = Field(
        default_factory=dict,
        description="runs (held out ones too) that reached each step, from the step log: "
        "every step of the journey in order, then any other step recorded",
    )
    held_out_messages: int = Field(
        0, description="sends not made because their run is held out, from the step log"
    )
    held_out_by_step: dict[str, int] = Field(
        default_factory=dict, description="held_out_messages by send step"
    )
    errors_by_step: dict[str, int] = Field(
        default_factory=dict,
        description="expressions that failed to evaluate in runs (a branch case, a "
        "wait_for or goal/exit condition, a value), by step, from the step log",
    )
    entry_errors: int = Field(
        0,
        description="events not entered because the entry condition or key failed to "
        "evaluate (a property missing, a value of the wrong kind)",
    )
    journey_off: int = Field(
        0,
        description="entries passed by while the journey was switched off (enabled: false, "
        "or its file deleted): events on which the customer would have entered",
    )

    def conversion_lines(self) -> list[str]:
        """Conversions, what came last before them, and the holdout lift."""
        conversions = self.conversions
        lines = [
            "",
            f"conversions: {conversions.converted:,} of {conversions.entered:,} entered "
            f"({_pct(conversions.converted, conversions.entered)})"
            + (" in the treatment group" if self.control else ""),
        ]
        if conversions.after_end:
            lines.append(f"  of them after the run ended (goal.within): {conversions.after_end:,}")
        if conversions.converted:
            by_channel, by_step = _tally(conversions.by_channel), _tally(conversions.by_step)
            lines.append("  last message before converting, by channel: " + by_channel)
            lines.append("  last message before converting, by step:    " + by_step)
        if self.lift is not None:
            lift = self.lift
            lines += [
                "",
                "holdout lift: "
                f"treatment {_pct(lift.treatment_converted, lift.treatment_entered)} "
                f"({lift.treatment_converted:,}/{lift.treatment_entered:,}) vs control "
                f"{_pct(lift.control_converted, lift.control_entered)} "
                f"({lift.control_converted:,}/{lift.control_entered:,})",
                "  "
                + lift.verdict
                + (f"; relative lift {lift.relative:+.0%}" if lift.relative is not None else ""),
            ]
        return lines


class EntryErrorSample(BaseModel):
    at: datetime
    version: str
    customer_id: str
    message_id: str
    error: str


class JourneyStats(BaseModel):
    journey_id: str
    name: str | None
    holdout: float = Field(description="the control group's share in the latest version")
    overall: Stats = Field(description="all versions, or the version asked for")
    versions: list[Stats] = Field(description="each version on its own")
    recent_entry_errors: list[EntryErrorSample] = Field(
        default_factory=list,
        description=f"the latest {ENTRY_ERROR_SAMPLES} entry errors, newest first",
    )
    splits: list[SplitReport] = Field(
        default_factory=list,
        description="each optimized split of the latest version (optimization/splits.py)",
    )

    def lines(self) -> list[str]:
        """The `journeyman stats` report: what a marketer reads, aligned and in percentages."""
        overall = self.overall
        scope = f"version {overall.version}" if overall.version else "all versions"
        title = f"{self.journey_id}" + (f" — {self.name}" if self.name else "")
        lines = [f"{title} ({scope})", ""]
        groups = f"treatment {overall.treatment:,}"
        if overall.control or self.holdout:
            groups += f", control {overall.control:,}"
        if self.holdout:
            groups += f" (holdout {self.holdout:.0%})"
        finished = sum(overall.finished.values())
        outcomes = ", ".join(
            f"{outcome} {n:,} ({_pct(n, finished)})" for outcome, n in overall.finished.items()
        )
        lines += _rows(
            [
                ["entered", f"{overall.entered:,}", groups],
                ["running now", f"{overall.running:,}", ""],
                ["finished", f"{finished:,}", outcomes],
            ]
        )
        lines += self._error_lines()
        lines.append("")
        if overall.now_at_step is None:
            lines.append("now at each step: unavailable (Temporal cannot be reached)")
        else:
            lines.append("now at each step (running runs, from Temporal)")
            lines += _rows([["  " + step, f"{n:,}"] for step, n in overall.now_at_step.items()])
        lines += ["", "messages", *overall.total.message_lines(overall.messages)]
        lines += overall.conversion_lines()
        if len(self.versions) > 1 and overall.version is None:
            lines += ["", "by version"]
            rows = [["  version", "entered", "running", "converted", "rate"]]
            for v in self.versions:
                c = v.conversions
                rows.append(
                    [
                        f"  {v.version}",
                        f"{v.entered:,}",
                        f"{v.running:,}",
                        f"{c.converted:,}",
                        _pct(c.converted, c.entered),
                    ]
                )
            lines += _rows(rows, right=True)
        return lines

    def _error_lines(self) -> list[str]:
        """Entries not made (an expression failed, the journey off) and runs' errors."""
        overall, lines = self.overall, []
        if overall.entry_errors:
            events = "event" if overall.entry_errors == 1 else "events"
            lines += [
                "",
                f"not entered: {overall.entry_errors:,} {events} whose entry condition or "
                "key failed to evaluate; the latest:",
            ]
            lines += _rows(
                [
                    [f"  {e.at:%Y-%m-%d %H:%M}", e.customer_id, e.error]
                    for e in self.recent_entry_errors
                ]
            )
        if overall.journey_off:
            entries = "entry" if overall.journey_off == 1 else "entries"
            lines += [
                "",
                f"journey off: {overall.journey_off:,} {entries} passed by while switched off",
            ]
        if overall.errors_by_step:
            lines += [
                "",
                "expressions that failed in runs (each run went to on_error or ended in error)",
            ]
            lines += _rows([["  " + step, f"{n:,}"] for step, n in overall.errors_by_step.items()])
        return lines


class UnknownJourney(LookupError):
    """Nothing recorded for this journey (or this version of it)."""


def _rows(rows: list[list[str]], right: bool = False) -> list[str]:
    """Rows as aligned text: the first column left, the others right-aligned numbers
    (`right`) or, without it, all but the last column padded."""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        for i, cell in enumerate(row[1:], start=1):
            last = i == len(row) - 1 and not right
            cells.append(cell if last else cell.rjust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    return lines


def _pct(n: int, of: int) -> str:
    return f"{n / of:.1%}" if of else "-"


def _share(n: int, of: int) -> str:
    return f"{n:,} ({_pct(n, of)})" if of else f"{n:,}"


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n:,}" for key, n in counts.items())


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    """Largest first, then by name: the order a report reads best in."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
