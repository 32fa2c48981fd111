"""Requests generated from the API's own OpenAPI schema never get a server error.

Schemathesis draws requests for every operation of `/openapi.json`, both valid ones
(positive) and ones that break the schema (negative), and they go to the app in
process, over the same `httpx.ASGITransport` and event loop as the other API tests, so
the endpoints that call Temporal (runs, pausing a journey, erasing a customer) reach the
test's time-skipping server. Every request carries a write key and the admin token,
so it gets past authentication to the code behind it. A customer, a journey and a
running run exist, and half the requests name them rather than random ids.

Checked for every response: no 5xx; where a status is documented, its content type,
headers and body match the schema. Undocumented statuses (401, 413, ...) are not
failures: that would be a test of the schema's completeness, not of the code.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from tests.api.support import ADMIN_TOKEN, CART_JOURNEY, WRITE_KEY, Api
from tests.harness import Harness

CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# HTTP Basic: the write key as user name (intake), the admin token as password (reads,
# operator actions).
AUTHORIZATION = "Basic " + base64.b64encode(f"{WRITE_KEY}:{ADMIN_TOKEN}".encode()).decode()
SENDGRID_PUBLIC_KEY = base64.b64encode(
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()
# What the seeded data is called, for path parameters of the same name.
KNOWN = {
    "customer_id": "u1",
    "journey_id": "cart",
    "workflow_id": "cart/u1/c9",
    "token": "not-a-token",
}


@pytest.fixture
async def seeded(harness: Harness) -> AsyncIterator[Api]:
    """The API of tests/api, with customer u1 in the cart journey."""
    api = Api(harness)
    try:
        # The provider webhooks configured, so that their requests reach the signature
        # checks (an unconfigured provider's webhook is a deliberate 503).
        await api.start(
            CART_JOURNEY,
            sendgrid_webhook_public_key=SENDGRID_PUBLIC_KEY,
            twilio_auth_token="twilio-auth-token-for-tests",
            public_base_url="https://jm.example.com",
        )
        await api.post("/v1/identify", {"userId": "u1", "traits": {"email": "ana@example.com"}})
        await api.post(
            "/v1/track",
            {"userId": "u1", "event": "cart_abandoned", "properties": {"cart_id": "c9"}},
        )
        await api.dispatch()
        yield api
    finally:
        await api.close()


def request_arguments(case: schemathesis.Case) -> dict[str, Any]:
    """The case as `httpx.AsyncClient.request` arguments (schemathesis serializes it for
    `requests`, whose names differ)."""
    kwargs = case.as_transport_kwargs(
        base_url="http://journeyman.test", headers={"Authorization": AUTHORIZATION}
    )
    arguments: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers") or {},
        "params": kwargs.get("params") or None,
        "cookies": kwargs.get("cookies") or None,
    }
    if "json" in kwargs:
        arguments["json"] = kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, bytes | str):
        arguments["content"] = data
    elif data is not None:
        arguments["data"] = data
    if kwargs.get("files"):
        arguments["files"] = kwargs["files"]
    return arguments


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    # The app, its database and the Temporal server are shared by every example on
    # purpose: requests pile up state as they would in production.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_generated_request_gets_a_server_error(
    seeded: Api, mode: GenerationMode, data: st.DataObject
) -> None:
    assert seeded.app is not None and seeded.client is not None
    schema = schemathesis.openapi.from_dict(seeded.app.openapi())
    operations = {
        op.ok().label: op.ok() for op in schema.get_all_operations() if op.ok() is not None
    }
    operation = operations[data.draw(st.sampled_from(sorted(operations)), label="operation")]
    names = {p.name for p in operation.path_parameters}
    known = {n: v for n, v in KNOWN.items() if n in names}
    fixed = known if known and data.draw(st.booleans(), label="known ids") else None
    case = data.draw(operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    try:
        response = await seeded.client.request(**request_arguments(case))
    except httpx.InvalidURL:
        return  # a request no client can send (a control character in the path)
    case.validate_response(response, checks=CHECKS)
