"""The send decision's typed reasons render as the text the ledger and the step log keep."""

from __future__ import annotations

from journeyman.insight.stats import reason_kind
from journeyman.messaging.reasons import ChannelReason, NotSent, no_channel

NO_EMAIL = ChannelReason("email", "not reachable", "not reachable (no email address)")
SUPPRESSED = ChannelReason("sms", "blocked", "address suppressed (hard bounce)")


def test_channels_passed_over_read_each_with_its_channel_joined_by_semicolons() -> None:
    assert no_channel([NO_EMAIL, SUPPRESSED]) == NotSent(
        "skipped",
        "no channel",
        "email: not reachable (no email address); sms: address suppressed (hard bounce)",
    )


def test_a_channel_its_provider_refused_fails_the_send() -> None:
    refused = ChannelReason("email", "refused", "content rejected")
    assert no_channel([refused, SUPPRESSED]).status == "failed"


def test_a_channel_passed_over_for_a_rule_only_skips_the_send() -> None:
    window = ChannelReason("whatsapp", "passed over", "outside the 24-hour window")
    assert no_channel([window]).status == "skipped"


def test_a_step_with_no_channel_to_consider_says_so() -> None:
    assert no_channel([]).reason == "no channel"


def test_the_stats_group_the_rendered_reasons_by_kind() -> None:
    assert reason_kind(no_channel([NO_EMAIL, SUPPRESSED]).reason) == (
        "address suppressed + not reachable"
    )
