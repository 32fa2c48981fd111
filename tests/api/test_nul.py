"""Text with NUL characters: PostgreSQL cannot store it; the answer is a 4xx, not a 500.

SQLite stores such text as it is: there the NUL comes back, unchanged, wherever it is read.
"""

from __future__ import annotations

from sqlalchemy import select

from journeyman.storage.models import Consent, ConsentChange
from tests.api.support import ADMIN_TOKEN, Api
from tests.conftest import POSTGRES

CART = """
id: cart
name: Cart
topic: offers
entry: {event: cart_abandoned}
steps:
  - id: remind
    send: {template: hello, channels: [email]}
"""


def consent_rows(api: Api) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """(consents, consent changes) as (customer, scope, name, subscribed, source) rows."""
    with api.db.session() as session:
        consents = [
            (c.customer_id, c.scope, c.name, c.subscribed, c.source)
            for c in session.scalars(select(Consent))
        ]
        changes = [
            (c.customer_id, c.scope, c.name, c.subscribed, c.source)
            for c in session.scalars(select(ConsentChange).order_by(ConsentChange.id))
        ]
    return consents, changes


async def test_a_nul_character_is_refused_on_postgres_and_stored_elsewhere(api: Api):
    await api.start(CART)
    api.harness.customer("c1", email="ana@example.com")
    assert api.client is not None
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await api.client.put(
        "/v1/customers/c1/consents",
        json={"channels": {"sms": False}, "source": "form\u0000x"},
        headers=admin,
    )
    if POSTGRES:
        assert response.status_code == 400, response.text
        assert response.json()["error"] == (
            "a value cannot be stored: text may not contain NUL (\\u0000) characters"
        )
        # The whole change was rolled back: no choice and no trail entry.
        assert consent_rows(api) == ([], [])
    else:
        assert response.status_code == 200, response.text
        [(channel, choice)] = response.json()["channels"].items()
        assert (channel, choice["subscribed"], choice["source"]) == ("sms", False, "form\u0000x")
        assert response.json()["topics"] == {}
        row = ("c1", "channel", "sms", False, "form\u0000x")
        assert consent_rows(api) == ([row], [row])
        history = (await api.client.get("/v1/customers/c1/consents", headers=admin)).json()
        assert [(h["name"], h["subscribed"], h["source"]) for h in history["history"]] == [
            ("sms", False, "form\u0000x")
        ]
