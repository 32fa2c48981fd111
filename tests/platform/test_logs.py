"""Structured logs: JSON lines with run and customer ids, and no personal data."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from journeyman.api.server import server_config
from journeyman.messaging.providers import OutgoingMessage
from journeyman.platform import logs
from journeyman.storage.models import JourneyRun
from tests.harness import Harness, actions

NEWS = """
id: news
name: News
entry: {event: go_news}
steps:
  - id: hello
    send: {template: hello, channels: [email]}
"""


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, given back as it was (pytest's capture handlers included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_time_level_logger_and_message(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream, force=True)
    logging.getLogger("journeyman.test").warning("event %s not routed", "m1")
    [line] = lines(stream)
    assert line["level"] == "WARNING"
    assert line["logger"] == "journeyman.test"
    assert line["message"] == "event m1 not routed"
    assert line["time"].endswith("+00:00")
    assert "workflow_id" not in line  # not in an activity


def test_the_api_servers_own_lines_are_json_too(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream, force=True)
    uvicorn.Config(object())  # a uvicorn with its own log set-up, as tests' stand-ins have
    server_config(object(), "127.0.0.1", 0)

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn.access").info("127.0.0.1 - GET /v1/health 200")  # below warning

    [line] = lines(stream)
    assert (line["logger"], line["level"]) == ("uvicorn.error", "ERROR")
    assert line["message"] == "Exception in ASGI application"
    assert "RuntimeError: boom" in line["exception"]


def test_text_format_is_one_readable_line(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.configure("text", stream=stream, force=True)
    logging.getLogger("journeyman.test").info("worker polling task queue %s", "journeyman")
    assert stream.getvalue().endswith(
        "INFO journeyman.test: worker polling task queue journeyman\n"
    )


def test_email_addresses_and_phone_numbers_are_redacted(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream, force=True)
    log = logging.getLogger("journeyman.test")
    log.info("to ana@example.com and +33612345678 at 2024-05-01T10:00:00")
    try:
        raise ValueError("bounced: bob@example.org")
    except ValueError:
        log.exception("send failed")
    first, second = lines(stream)
    assert first["message"] == "to [redacted] and [redacted] at 2024-05-01T10:00:00"
    assert "bob@example.org" not in json.dumps(second)
    assert "ValueError: bounced: [redacted]" in second["exception"]


class Chatty:
    """A provider that logs carelessly about whom it sends to."""

    name = "chatty"
    transactional = False

    def send(self, message: OutgoingMessage, session: Any) -> str:
        logging.getLogger("tests.chatty").info(
            "sending to %s (customer %s)", message.to, message.customer_id
        )
        return "chatty-1"


async def test_activity_lines_carry_run_and_customer_ids_and_no_email(
    harness: Harness, root_logger: logging.Logger
) -> None:
    stream = io.StringIO()
    handler = logs.configure("json", stream=stream, force=True)
    harness.providers["email"] = Chatty()
    await harness.journey(NEWS)
    harness.customer("c1", email="ana@example.com")
    await harness.event("go_news")
    result = await harness.result("news/c1")
    assert ("hello", "sent") in actions(result)
    assert handler is not None
    handler.flush()
    [line] = [line for line in lines(stream) if line["logger"] == "tests.chatty"]
    assert line["workflow_id"] == "news/c1"
    assert [line["run_id"]] == run_ids(harness)
    assert line["activity_type"] == "journey.send"
    assert line["customer_id"] == "c1"
    assert line["message"] == "sending to [redacted] (customer c1)"
    assert "ana@example.com" not in stream.getvalue()


def run_ids(harness: Harness) -> list[str]:
    with harness.db.session() as session:
        return list(session.scalars(select(JourneyRun.run_id)))


def test_configure_leaves_handlers_set_up_before_alone(root_logger: logging.Logger) -> None:
    existing = logging.NullHandler()
    root_logger.addHandler(existing)
    assert logs.configure("json") is None
    assert existing in root_logger.handlers
