"""A webhook step's URL: values put into it cannot change where it points."""

from __future__ import annotations

from journeyman.names import workflow_id
from tests.harness import actions
from tests.workflows.test_journey import WEBHOOK, _Hook, hook_server  # noqa: F401

QUERY_HOOK = """
id: crm
name: CRM
entry: {{event: signed_up}}
steps:
  - id: notify
    webhook:
      url: "{url}/customers/{{{{ profile.id }}}}?plan={{{{ event.properties.plan }}}}"
  - id: done
    end: true
"""


async def test_a_value_in_the_path_stays_one_segment(harness, hook_server):  # noqa: F811
    await harness.journey(WEBHOOK.format(url=hook_server))
    harness.customer("../admin")
    await harness.event("signed_up", "../admin", plan="pro")
    result = await harness.result(workflow_id("crm", "../admin"))
    assert ("notify", "webhook") in actions(result)
    [(_method, path, _headers, _body)] = _Hook.received
    assert path == "/customers/..%2Fadmin"


async def test_a_value_in_the_query_cannot_add_parameters(harness, hook_server):  # noqa: F811
    await harness.journey(QUERY_HOOK.format(url=hook_server))
    harness.customer("c1")
    await harness.event("signed_up", plan="pro&admin=1#x")
    await harness.result("crm/c1")
    [(_method, path, _headers, _body)] = _Hook.received
    assert path == "/customers/c1?plan=pro%26admin%3D1%23x"
