"""Why a send did not go, or not yet: typed where the decision makes them, text where
they are kept.

The ledger (`deliveries.reason`), the send's outcome and the step log keep a reason as
text, and that text does not change: rows written before read the same, and the stats
group skips by it (journeyman/insight/stats.py `reason_kind`). A reason renders as
before: a channel's as `<channel>: <text>`, several joined by "; ".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ERASED = "customer erased"
UNKNOWN_CUSTOMER = "unknown customer"
NO_CHANNEL = "no channel"

# Why one channel of a step was passed over.
ChannelReasonKind = Literal[
    "not reachable",  # no address on the channel
    "not opted in",  # WhatsApp without the customer's opt-in
    "blocked",  # consent, a suppressed address, or a contact awaiting confirmation
    "refused",  # its provider refused it for good, or its template failed to render
    "passed over",  # a rule held it back (WhatsApp's 24-hour window)
]
# Why a send ends without going out.
NotSentKind = Literal[
    "unknown customer",
    "global holdout",
    "no channel",
    "frequency cap",
    "journey cap",
    "only_if",  # `send.only_if` false, or its error (journeyman/messaging/guards.py)
    "foreign link",  # a link from a client-sent property (journeyman/privacy/links.py)
]
# Why a send waits: the workflow sleeps on a durable timer and asks again.
HeldKind = Literal["paused", "frequency cap", "journey cap", "quiet hours", "pace"]


@dataclass(frozen=True)
class ChannelReason:
    """Why one channel of the step was passed over."""

    channel: str
    kind: ChannelReasonKind
    text: str  # as kept, after the channel's name

    def __str__(self) -> str:
        return f"{self.channel}: {self.text}"


def joined(reasons: Sequence[ChannelReason]) -> str | None:
    """The reasons as kept: "email: not reachable (no email address); sms: ..."."""
    return "; ".join(str(reason) for reason in reasons) or None


@dataclass(frozen=True)
class NotSent:
    """The send ends here, recorded with `status` and the reason's text."""

    status: Literal["skipped", "failed"]
    kind: NotSentKind
    reason: str


def no_channel(reasons: Sequence[ChannelReason]) -> NotSent:
    """No channel of the step can take the send. It failed when a provider refused one;
    passed over for rules only, it is skipped."""
    refused = any(reason.kind == "refused" for reason in reasons)
    return NotSent("failed" if refused else "skipped", "no channel", joined(reasons) or NO_CHANNEL)


@dataclass(frozen=True)
class Held:
    """The send waits until `until`, then is decided again."""

    kind: HeldKind
    reason: str
    until: datetime | None
