"""Webhook secrets (`{{ secret('CRM_TOKEN') }}`): read from the environment by the
webhook activity alone, sent to the webhook, and masked everywhere else: the step's
detail and errors (which go to the history and the step log) and the logs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.journey import JourneyActivities
from journeyman.contracts import CustomerEvent, ExprContext, WebhookInput
from journeyman.dsl.expressions import compile_value
from journeyman.messaging.channels import Channels
from journeyman.messaging.journey_secrets import SecretError, check_name, mask, read_secret
from journeyman.platform import logs
from journeyman.storage.db import Database

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
TOKEN = "tok_live_8f2c1d9a"


def call(
    db: Database,
    answer: int = 200,
    url: str = "https://crm.example.com/hook?key={{ secret('CRM_TOKEN') }}",
    environ: dict[str, str] | None = None,
) -> tuple[list[httpx.Request], JourneyActivities, WebhookInput]:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(answer, text=f"refused {request.url}")

    env = {"CRM_TOKEN": TOKEN} if environ is None else environ
    activities = JourneyActivities(
        db,
        Channels(),
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        secrets=lambda name: read_secret(name, env, Path("/nonexistent/.env")),
    )
    event = CustomerEvent(message_id="m1", name="ticket_closed", timestamp=NOW)
    inp = WebhookInput(
        idempotency_key="wf/run/callback/1",
        customer_id="c1",
        url=compile_value(url),
        method="POST",
        headers={"Authorization": compile_value("Bearer {{ secret('CRM_TOKEN') }}")},
        body=compile_value({"customer": "{{ profile.id }}", "token": "{{ secret('CRM_TOKEN') }}"}),
        context=ExprContext(event=event, trigger=event, journey={"id": "j"}, now=NOW),
    )
    return sent, activities, inp


def test_the_webhook_gets_the_secret_and_the_detail_shows_only_its_name(db: Database) -> None:
    sent, activities, inp = call(db)
    outcome = activities.call_webhook(inp)
    [request] = sent
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN in str(request.url)
    assert f'"token":"{TOKEN}"' in request.content.decode()
    assert TOKEN not in outcome.detail
    assert "key=[secret CRM_TOKEN]" in outcome.detail


def test_a_rejected_call_names_the_url_without_the_secret(db: Database) -> None:
    _, activities, inp = call(db, answer=403)
    with pytest.raises(ApplicationError) as caught:
        activities.call_webhook(inp)
    assert caught.value.non_retryable
    assert TOKEN not in str(caught.value)
    assert "[secret CRM_TOKEN]" in str(caught.value)


def test_an_unset_secret_fails_the_webhook_for_good_naming_it(db: Database) -> None:
    sent, activities, inp = call(db, environ={})
    with pytest.raises(ApplicationError, match="secret CRM_TOKEN is not set") as caught:
        activities.call_webhook(inp)
    assert caught.value.non_retryable
    assert sent == []


def test_the_service_own_settings_are_not_secrets_a_journey_may_read() -> None:
    assert check_name("CRM_TOKEN") is None
    for name in ("JOURNEYMAN_ADMIN_TOKEN", "SENDGRID_API_KEY", "DATABASE_URL"):
        assert "service's own settings" in (check_name(name) or "")
        with pytest.raises(SecretError):
            read_secret(name, {name: "x" * 10})
    assert "capitals" in (check_name("crm_token") or "")


def test_a_secret_read_is_masked_in_the_logs(db: Database, caplog) -> None:
    read_secret("LOYALTY_KEY", {"LOYALTY_KEY": "lk_9d8e7f6a5b"}, Path("/nonexistent/.env"))
    assert mask("calling with lk_9d8e7f6a5b") == "calling with [secret LOYALTY_KEY]"
    record = logging.LogRecord("httpx", logging.INFO, "x", 1, "GET /?k=lk_9d8e7f6a5b", (), None)
    assert "lk_9d8e7f6a5b" not in logs.TextFormatter(logs.TEXT_FORMAT).format(record)


def test_the_env_file_is_read_when_the_environment_lacks_the_secret(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("HELPDESK_TOKEN=hd_from_file_123\n")
    assert read_secret("HELPDESK_TOKEN", {}, env_file) == "hd_from_file_123"
    assert read_secret("HELPDESK_TOKEN", {"HELPDESK_TOKEN": "hd_env"}, env_file) == "hd_env"
