"""Provider webhooks: SendGrid's Event Webhook, Twilio's status callbacks and inbound texts.

Public endpoints: the providers' signatures authenticate them (journeyman/api/
provider_auth.py). Each request is applied in one transaction by journeyman/events/feedback.py
and answered at once; journeys hear the resulting events through the dispatcher.
Bodies are limited to JOURNEYMAN_MAX_BODY_BYTES like event intake.
"""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Response
from pydantic import BaseModel

from journeyman.api.deps import DatabaseDep, DispatcherDep, IntakeRoute, SettingsDep
from journeyman.api.errors import ApiError, body_error
from journeyman.api.provider_auth import SendGridBody, TwilioForm, TwilioFormDep
from journeyman.events import feedback, inbound
from journeyman.platform import metrics
from journeyman.privacy.pseudonyms import settings_key as address_key

router = APIRouter(prefix="/webhooks", tags=["provider webhooks"], route_class=IntakeRoute)

TWIML_TYPE = "application/xml"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


class FeedbackAck(BaseModel):
    """What a SendGrid batch did: every event is acknowledged, applied or not."""

    applied: int
    duplicates: int
    ignored: int


@router.post("/sendgrid", response_model=FeedbackAck)
def sendgrid_events(
    body: SendGridBody, db: DatabaseDep, dispatcher: DispatcherDep, settings: SettingsDep
) -> FeedbackAck:
    """SendGrid's signed Event Webhook: a JSON array of events. Events about unknown
    deliveries are acknowledged and ignored, so SendGrid does not retry them."""
    events = _sendgrid_batch(body)
    for event in events:
        metrics.webhook_event(feedback.SENDGRID, event.get("event"))
    key = address_key(settings)
    outcome = feedback.transaction(
        db, lambda session: feedback.sendgrid_events(session, events, key=key)
    )
    if outcome.to_dispatch:
        dispatcher.wake()
    return FeedbackAck(
        applied=outcome.applied, duplicates=outcome.duplicates, ignored=outcome.ignored
    )


@router.post("/twilio/status", status_code=204, response_class=Response)
def twilio_status(
    form: TwilioFormDep, db: DatabaseDep, dispatcher: DispatcherDep, settings: SettingsDep
) -> Response:
    """Twilio's message status callback (set on every message sent), form-encoded."""
    callback = feedback.TwilioStatus(
        message_sid=_required(form, "MessageSid"),
        status=_required(form, "MessageStatus").lower(),
        error_code=form.get("ErrorCode").strip(),
        to=form.get("To"),
    )
    metrics.webhook_event(feedback.TWILIO, callback.status)
    key = address_key(settings)
    outcome = feedback.transaction(
        db, lambda session: feedback.twilio_status(session, callback, key=key)
    )
    if outcome.to_dispatch:
        dispatcher.wake()
    return Response(status_code=204)


@router.post(
    "/twilio/inbound",
    response_class=Response,
    responses={200: {"content": {TWIML_TYPE: {}}, "description": "TwiML"}},
)
def twilio_inbound(
    form: TwilioFormDep, db: DatabaseDep, dispatcher: DispatcherDep, settings: SettingsDep
) -> Response:
    """A text to one of our numbers: STOP / START change SMS consent, HELP is answered
    with JOURNEYMAN_SMS_HELP_TEXT, anything else is the journey event `sms_received`.
    Answered with TwiML."""
    message = inbound.InboundSms(
        message_sid=_required(form, "MessageSid"),
        from_=_required(form, "From"),
        body=form.get("Body"),
        opt_out_type=form.get("OptOutType"),
    )
    key = address_key(settings)
    outcome = feedback.transaction(
        db, lambda session: inbound.twilio_inbound(session, message, key=key)
    )
    metrics.webhook_event(feedback.TWILIO_INBOUND, outcome.intent)
    if outcome.to_dispatch:
        dispatcher.wake()
    # STOP and START get no reply of ours: Twilio's opt-out handling sends the
    # confirmation carriers require, and a second one would confuse.
    reply = settings.sms_help_text if outcome.intent == "help" else None
    return Response(twiml(reply), media_type=TWIML_TYPE)


def twiml(reply: str | None) -> str:
    """A TwiML answer: one message back, or nothing."""
    if not reply:
        return f"{XML_DECLARATION}<Response/>"
    return f"{XML_DECLARATION}<Response><Message>{escape(reply)}</Message></Response>"


def _sendgrid_batch(body: bytes) -> list[dict[str, Any]]:
    try:
        events = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise body_error(400, "malformed JSON", str(exc), "json_invalid") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise body_error(
            422,
            "the body must be a JSON array of event objects",
            "expected an array of objects",
            "list_type",
        )
    return events


def _required(form: TwilioForm, name: str) -> str:
    value = form.get(name).strip()
    if not value:
        raise ApiError(
            422,
            f"invalid field {name}: Field required",
            [{"field": name, "message": "Field required", "type": "missing"}],
        )
    return value
