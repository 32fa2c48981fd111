"""WhatsApp through Twilio's Programmable Messaging API, with the official `twilio` client.

The same Message resource as SMS (activities/sms_twilio.py), from the account's
WhatsApp sender (`TWILIO_WHATSAPP_FROM`, `whatsapp:+…`) to `whatsapp:+…`. A message
whose `data` carries `content_sid` (outside the 24-hour window, see
journeyman/messaging/whatsapp.py) is sent as that approved Content template with
`content_variables` (JSON); otherwise the free-form `body` goes.

Failures map as for SMS, plus WhatsApp's own codes:

- 63003 (the number is not on WhatsApp), 63024 (invalid recipient):
  `PermanentFailure(kind="invalid_address")`, which suppresses the number on WhatsApp
  only;
- 63016 (free-form message outside the window: our record of the window was wrong),
  63018 and the template codes: `PermanentFailure(kind="rejected")`, the next channel.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from twilio.base import values
from twilio.base.exceptions import TwilioRestException

from activities.sms_twilio import TwilioProvider
from journeyman.messaging import whatsapp
from journeyman.messaging.providers import OutgoingMessage, PermanentFailure

# Twilio error codes about the WhatsApp recipient itself.
INVALID_RECIPIENT_CODES = frozenset({63003, 63024})


class WhatsAppProvider(TwilioProvider):
    """Sends WhatsApp messages through Twilio. Thread-safe, as the SMS provider."""

    name = "twilio-whatsapp"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_: str,
        base_url: str | None = None,
        status_callback_url: str | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(
            account_sid,
            auth_token,
            from_=whatsapp.address(from_),
            base_url=base_url,
            status_callback_url=status_callback_url,
            timeout=timeout,
        )

    def send(self, message: OutgoingMessage, session: Session | None) -> str:
        """Create the Message to `whatsapp:<number>`; return its sid."""
        content_sid = message.data.get("content_sid")
        to = whatsapp.address(message.to)
        if content_sid:
            return self._create(
                to=to,
                content_sid=content_sid,
                content_variables=message.data.get("content_variables") or values.unset,
            )
        return self._create(to=to, body=message.body)

    def _create(self, **fields: Any) -> str:
        try:
            return super()._create(**fields)
        except PermanentFailure as exc:
            cause = exc.__cause__
            if isinstance(cause, TwilioRestException) and cause.code in INVALID_RECIPIENT_CODES:
                raise PermanentFailure(
                    f"Twilio refused the WhatsApp recipient {exc}", kind="invalid_address"
                ) from cause
            raise
