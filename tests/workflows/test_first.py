from datetime import timedelta

from tests.harness import actions


async def test_wait_then_send_goes_to_outbox(harness):
    await harness.journey(
        """
        id: hello
        name: Hello
        entry: {event: signed_up}
        steps:
          - id: pause
            wait: 1h
          - id: greet
            send: {template: greeting, channels: [email]}
        """
    )
    harness.customer("c1", email="ana@example.com")
    routed = await harness.event("signed_up")
    assert routed.entered == ["hello/c1"]
    result = await harness.result("hello/c1")
    assert actions(result) == [("entry", "entered"), ("pause", "waited"), ("greet", "sent")]
    assert result.path[2].at - result.path[0].at >= timedelta(hours=1)
    [message] = harness.outbox()
    assert message.to == "ana@example.com"
    assert message.subject == "Hello c1"
