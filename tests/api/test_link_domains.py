"""Link domains: a client key cannot make the operator's messages link wherever it
likes (the phishing relay of issue 16)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.support import SERVER_KEY, Api

pytestmark = pytest.mark.temporal

NOTICE_JOURNEY = """
id: notice
name: Account notice
entry:
  event: account_notice
  key: "event.properties.notice_id"
steps:
  - id: tell
    send: {template: notice, channels: [email]}
"""

NOTICE_TEMPLATE = {
    "email.html": (
        "{% block subject %}{{ event.properties.headline }}{% endblock %}"
        '<p>Hello.</p><p><a href="{{ event.properties.link }}">Open</a></p>'
        '<p><a href="https://help.shop.example/faq">Help</a></p>'
    ),
}


async def start(api: Api, **settings: Any) -> None:
    api.harness.template("notice", NOTICE_TEMPLATE)
    api.harness.settings = api.harness.settings.model_copy(update=settings)
    await api.start(NOTICE_JOURNEY)
    identify = {"userId": "u1", "traits": {"email": "u1@example.com"}}
    assert (await api.post("/v1/identify", identify, write_key=SERVER_KEY)).status_code == 200


def notice(notice_id: str, link: str) -> dict[str, Any]:
    return {
        "userId": "u1",
        "event": "account_notice",
        "messageId": notice_id,
        "properties": {
            "notice_id": notice_id,
            "headline": "Your account is locked - verify now",
            "link": link,
        },
    }


async def outcome(api: Api, notice_id: str) -> tuple[str, str | None]:
    await api.harness.result(f"notice/u1/{notice_id}")
    [delivery] = [d for d in api.deliveries() if d.workflow_id == f"notice/u1/{notice_id}"]
    return delivery.status, delivery.reason


async def test_a_link_host_sent_with_a_client_key_must_be_on_the_link_domains(api: Api) -> None:
    await start(api, public_base_url="https://shop.example", link_domains=None)
    phishing = notice("n1", "https://evil.test/verify?account=u1")
    assert (await api.post("/v1/track", phishing)).status_code == 200
    await api.dispatch()
    status, reason = await outcome(api, "n1")
    assert status == "skipped"
    assert reason is not None and "evil.test" in reason and "JOURNEYMAN_LINK_DOMAINS" in reason
    assert api.outbox() == []
    # A link to the operator's own site (a subdomain of PUBLIC_BASE_URL's host) goes out.
    own = notice("n2", "https://www.shop.example/account")
    assert (await api.post("/v1/track", own)).status_code == 200
    await api.dispatch()
    assert (await outcome(api, "n2"))[0] == "sent"
    # The same link from the operator's server is theirs to send.
    server = notice("n3", "https://partner.test/offer")
    assert (await api.post("/v1/track", server, write_key=SERVER_KEY)).status_code == 200
    await api.dispatch()
    assert (await outcome(api, "n3"))[0] == "sent"
    assert len(api.outbox()) == 2


async def test_the_link_domains_setting_names_the_hosts_allowed(api: Api) -> None:
    await start(api, link_domains="partner.test, shop.example")
    allowed = notice("n1", "https://go.partner.test/offer")
    assert (await api.post("/v1/track", allowed)).status_code == 200
    await api.dispatch()
    assert (await outcome(api, "n1"))[0] == "sent"
    other = notice("n2", "//evil.test/x")
    assert (await api.post("/v1/track", other)).status_code == 200
    await api.dispatch()
    assert (await outcome(api, "n2"))[0] == "skipped"
