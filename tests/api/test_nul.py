"""Text with NUL characters: PostgreSQL cannot store it; the answer is a 4xx, not a 500."""

from __future__ import annotations

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


async def test_a_nul_character_is_refused_on_postgres_and_stored_elsewhere(api: Api):
    await api.start(CART)
    api.harness.customer("c1", email="ana@example.com")
    assert api.client is not None
    response = await api.client.put(
        "/v1/customers/c1/consents",
        json={"channels": {"sms": False}, "source": "form\u0000x"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    if POSTGRES:
        assert response.status_code == 400, response.text
        assert "NUL" in response.json()["error"]
    else:
        assert response.status_code == 200, response.text
