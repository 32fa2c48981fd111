"""SendGrid answering 500, then 429 with Retry-After, for a while, then recovering.

The real SendGridProvider, configured through settings, talks to the stand-in on the
time-skipping server (retry backoff in virtual time). Every message goes out once the
provider recovers, and exactly once.
"""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import SecretStr

from activities.provider_config import build_providers
from tests.harness import Harness
from tests.standins import SendGridStandIn

pytestmark = pytest.mark.slow

CUSTOMERS = 5
OUTAGE = [
    *[SendGridStandIn.error(500, "internal server error")] * 3,
    *[SendGridStandIn.rate_limited(retry_after=1)] * 2,
]


async def test_messages_go_out_exactly_once_after_500s_and_429s(harness: Harness) -> None:
    with SendGridStandIn() as sendgrid:
        harness.settings = harness.settings.model_copy(
            update={
                "sendgrid_api_key": SecretStr(sendgrid.api_key),
                "sendgrid_base_url": sendgrid.base_url,
                "email_from": "Shop <shop@example.com>",
            }
        )
        harness.providers = build_providers(harness.settings)
        sendgrid.script(*OUTAGE)
        await harness.journey(
            """
            id: outage
            name: One email
            entry: {event: signed_up}
            steps:
              - id: hello
                send: {template: hello, channels: [email]}
            """
        )
        customers = [f"o{n}" for n in range(CUSTOMERS)]
        for customer in customers:
            harness.customer(customer, email=f"{customer}@example.com")
            await harness.event("signed_up", customer)
        for customer in customers:
            result = await harness.result(f"outage/{customer}")
            assert [(p.step, p.action) for p in result.path if p.step == "hello"] == [
                ("hello", "sent")
            ]

    deliveries = harness.deliveries()
    assert [d.status for d in deliveries] == ["sent"] * CUSTOMERS
    # The stand-in answers requests in order: the first ones got the outage's errors,
    # every later one was accepted.
    ids = [int(r.body["custom_args"]["delivery_id"]) for r in sendgrid.received]
    failed, accepted = ids[: len(OUTAGE)], ids[len(OUTAGE) :]
    assert Counter(accepted) == dict.fromkeys((d.id for d in deliveries), 1)
    assert set(failed) <= set(accepted)  # each failure was retried until accepted
    assert all(d.provider_message_id for d in deliveries)
