"""Erasure against the real dev server, which can delete workflow executions."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError, RPCStatusCode

from journeyman.contracts import CustomerEvent
from journeyman.dsl import compile_file
from journeyman.events.routing import Catalog, Router
from journeyman.privacy.erasure import erase
from journeyman.privacy.pseudonyms import installation_key
from journeyman.settings import Settings
from journeyman.storage.models import Customer
from journeyman.wiring import build_worker, journey_activities
from tests.waiting import eventually

JOURNEY = """
id: erase_me
name: Erase me
entry: {event: signed_up}
steps:
  - id: hello
    send: {template: hello, channels: [email]}
  - id: later
    wait: 1d
"""


@pytest.mark.slow
async def test_erasure_deletes_the_customers_histories(local_env, db, tmp_path: Path):
    (tmp_path / "journeys").mkdir()
    (tmp_path / "templates" / "hello").mkdir(parents=True)
    (tmp_path / "templates" / "hello" / "email.html").write_text(
        "{% block subject %}Hi {{ profile.first_name }}{% endblock %}<p>Hello</p>"
    )
    path = tmp_path / "journeys" / "erase_me.yaml"
    path.write_text(textwrap.dedent(JOURNEY))
    catalog = Catalog([compile_file(path, tmp_path / "templates")])
    catalog.register(db)
    customer = f"c-{uuid.uuid4().hex[:8]}"
    with db.session() as session:
        session.add(
            Customer(
                id=customer,
                email="grace.hopper@example.com",
                traits={"first_name": "Grace"},
                push_tokens=[],
            )
        )
    task_queue = f"tq-{uuid.uuid4()}"
    settings = Settings(database_url=db.url, secret_key="erasure-test-secret")
    client = local_env.client
    async with build_worker(client, task_queue, journey_activities(db, settings)):
        router = Router(client, db, catalog, task_queue)
        event = CustomerEvent(
            message_id=str(uuid.uuid4()),
            name="signed_up",
            properties={"referrer": "grace.hopper@example.com"},
        )
        [workflow_id] = (await router.route(customer, event)).entered
        handle = client.get_workflow_handle(workflow_id)

        async def at_its_wait() -> bool:
            return "later" in str(await handle.query("state"))

        await eventually(at_its_wait, what="the run reached its wait")
        history = await handle.fetch_history()
        assert any(
            e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED for e in history.events
        )

        async def listed() -> bool:
            return bool([w async for w in client.list_workflows(f"CustomerId = '{customer}'")])

        # Visibility is eventually consistent: wait until the run is listed.
        await eventually(listed, what="the run listed in visibility")

        key = installation_key(settings.signing_key())
        report = await erase(db, client, customer, requested_by="test", key=key)

    assert report is not None
    assert report.runs_terminated == [workflow_id]
    assert report.executions_deleted >= 1
    assert report.histories_note is None
    # The server accepted the deletion and carries it out in the background, which is
    # why payloads are encrypted besides (docs/encryption.md). The customer's run is no
    # longer running at once.
    description = await handle.describe()
    assert description.status is not None and description.status.name == "TERMINATED"

    async def gone() -> bool:
        try:
            await handle.describe()
        except RPCError as exc:
            return exc.status == RPCStatusCode.NOT_FOUND
        return False

    # Temporal holds no execution of the customer once its background deletion ran.
    await eventually(gone, what="the execution deleted by the server", within=120)

    async def unlisted() -> bool:
        return not [w async for w in client.list_workflows(f"CustomerId = '{customer}'")]

    # Visibility follows the deletion a moment later (eventually consistent, as above).
    await eventually(unlisted, what="the execution gone from visibility", within=120)
