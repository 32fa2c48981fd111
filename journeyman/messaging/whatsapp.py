"""WhatsApp's rules: opt-in, the 24-hour customer-service window, approved templates.

- Address: the customer's phone number, sent to Twilio as `whatsapp:+…` (`address`);
  suppressions and windows are kept under the bare number's keyed digest, as for SMS.
- Opt-in: WhatsApp requires one, unlike the other channels (subscribed until they opt
  out). A customer is opted in by the consents API (channel `whatsapp` subscribed) or
  by the trait `whatsapp_opt_in: true`; an explicit choice recorded in `consents`
  (the API, a STOP or START on WhatsApp) wins over the trait.
- The window: free-form text (`whatsapp.txt`) may go only within 24 hours of the
  customer's last message to us on WhatsApp (`whatsapp_windows`, written by the
  inbound webhook). Outside it, only a template approved by WhatsApp: the template's
  `whatsapp.yaml` names its Twilio Content SID and the expressions of its numbered
  variables::

      content_sid: HXb5b62575e6e4ff6129ad7c8efe1f983e
      variables:
        1: "{{ profile.first_name }}"
        2: "{{ event.properties.order_id }}"

  Without one, the send falls to the step's next channel with the reason.
- `validate` warns about each send step listing whatsapp whose template has no
  `whatsapp.yaml` (it could reach a customer outside the window and fall through), and
  reports a malformed one as an error at its file:line:col.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from journeyman.dsl.errors import Problem
from journeyman.dsl.loader import YamlSyntaxError, load_with_positions, position_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from journeyman.dsl.compiler import Compiled
    from journeyman.storage.models import Customer

CHANNEL = "whatsapp"
PREFIX = "whatsapp:"
WINDOW = timedelta(hours=24)
OPT_IN_TRAIT = "whatsapp_opt_in"
CONTENT_FILE = "whatsapp.yaml"
CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")
MAX_VARIABLES = 100


@dataclass(frozen=True)
class WhatsAppContent:
    """An approved WhatsApp template: Twilio's Content SID and its variables'
    expressions by number ("1" -> "{{ profile.first_name }}")."""

    content_sid: str
    variables: dict[str, str] = field(default_factory=dict)


class ContentError(ValueError):
    """A malformed `whatsapp.yaml`; `line` and `column` where known (1-based)."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.line, self.column = line, column


def parse_whatsapp_content(text: str) -> WhatsAppContent:
    """Read a `whatsapp.yaml`. Raises ContentError (a ValueError) saying what is wrong."""
    try:
        data, positions = load_with_positions(text)
    except YamlSyntaxError as exc:
        raise ContentError(exc.message, exc.line, exc.column) from None

    def fail(loc: tuple[Any, ...], message: str) -> ContentError:
        line, column = position_of(positions, loc)
        return ContentError(message, line, column)

    if not isinstance(data, dict):
        raise fail((), "whatsapp.yaml must be a mapping with content_sid and variables")
    unknown = sorted(str(k) for k in data if k not in ("content_sid", "variables"))
    if unknown:
        raise fail((unknown[0],), f"unknown field {unknown[0]!r}: expected content_sid, variables")
    sid = data.get("content_sid")
    if not isinstance(sid, str) or not CONTENT_SID.match(sid):
        raise fail(
            ("content_sid",),
            f"content_sid must be a Twilio Content SID (HX and 32 hex digits), got {sid!r}",
        )
    raw = data.get("variables") or {}
    if not isinstance(raw, dict):
        raise fail(("variables",), "variables must map numbers to text, e.g. 1: '{{ ... }}'")
    if len(raw) > MAX_VARIABLES:
        raise fail(("variables",), f"at most {MAX_VARIABLES} variables")
    variables: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(key, bool) or not re.fullmatch(r"[1-9][0-9]*", str(key)):
            raise fail(("variables", key), f"variable {key!r}: names are numbers from 1")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise fail(("variables", key), f"variable {key}: the value must be text")
        variables[str(key)] = str(value)
    return WhatsAppContent(sid, variables)


def address(number: str) -> str:
    """The `To` of a WhatsApp message: `whatsapp:+15551234567`."""
    bare = "".join(number.split())
    return bare if bare.startswith(PREFIX) else PREFIX + bare


def bare_number(value: str) -> str:
    """`whatsapp:+1 555` -> `+1555`: the number without the channel prefix or spaces."""
    value = "".join(value.split())
    return value[len(PREFIX) :] if value.lower().startswith(PREFIX) else value


def is_whatsapp(value: str) -> bool:
    return value.strip().lower().startswith(PREFIX)


# -- opt-in and window (database) -----------------------------------------------------


def opted_in(session: Session, customer: Customer) -> bool:
    """Whether the customer opted in to WhatsApp: an explicit choice, else the trait."""
    from journeyman.storage.models import Consent

    row = session.get(Consent, {"customer_id": customer.id, "scope": "channel", "name": CHANNEL})
    if row is not None:
        return bool(row.subscribed)
    return (customer.traits or {}).get(OPT_IN_TRAIT) is True


def window_open(session: Session, number: str, now: datetime, key: bytes | None = None) -> bool:
    """Whether `number` wrote to us on WhatsApp within the last 24 hours. `key`: the
    installation's address key (pseudonyms.installation_key), under which windows are
    kept, as suppressions are: a plain digest of a phone number is brute-forced at once."""
    from journeyman.privacy.consent import address_hash
    from journeyman.storage.models import WhatsAppWindow

    row = session.get(WhatsAppWindow, address_hash("sms", bare_number(number), key))
    return row is not None and now - row.last_inbound_at < WINDOW


def record_inbound(session: Session, number: str, at: datetime, key: bytes | None = None) -> None:
    """A message from `number` on WhatsApp (re)opens its window (kept under `key`, as
    `window_open` reads it)."""
    from journeyman.privacy.consent import address_hash
    from journeyman.storage.models import WhatsAppWindow

    digest = address_hash("sms", bare_number(number), key)
    row = session.get(WhatsAppWindow, digest)
    if row is None:
        session.add(WhatsAppWindow(address_hash=digest, last_inbound_at=at))
        session.flush()
    elif row.last_inbound_at < at:
        row.last_inbound_at = at


# -- validate -------------------------------------------------------------------------


def validate_warnings(compiled: list[Compiled], templates_dir: Path) -> list[Problem]:
    """Per send step listing whatsapp: a warning when its template has no approved
    Content (`whatsapp.yaml`), an error when that file is malformed."""
    from journeyman.dsl.model import SendStep

    problems: list[Problem] = []
    for c in compiled:
        positions = _positions(c.path)
        for index, step in enumerate(c.plan.journey.steps):
            if not isinstance(step, SendStep) or CHANNEL not in step.send.channels:
                continue
            at = ("steps", index, "send", "channels", step.send.channels.index(CHANNEL))
            line, column = position_of(positions, at) if positions else (1, 1)
            template = step.send.template
            sources = {
                path: text
                for path, text in c.templates.items()
                if path.startswith(f"{template}/whatsapp.") and path.endswith(".yaml")
            }
            if f"{template}/{CONTENT_FILE}" not in sources:
                fallback = _next_channel(step.send.channels)
                problems.append(
                    Problem(
                        str(c.path),
                        line,
                        column,
                        f"journey {c.plan.journey.id} step {step.id}: template {template!r} has "
                        f"no {CONTENT_FILE}, so WhatsApp can reach a customer only within 24 hours "
                        f"of their last message; outside it the send falls to {fallback}",
                        "warning",
                    )
                )
            for path, text in sorted(sources.items()):
                try:
                    parse_whatsapp_content(text)
                except ContentError as exc:
                    where = str(templates_dir / path)
                    problems.append(Problem(where, exc.line, exc.column, str(exc)))
    return list(dict.fromkeys(problems))


def _positions(path: Path) -> dict[Any, tuple[int, int]] | None:
    """Where each node of the journey file is, to point at its whatsapp channel."""
    try:
        return load_with_positions(path.read_text(encoding="utf-8"))[1]
    except (OSError, UnicodeDecodeError, YamlSyntaxError):
        return None


def _next_channel(channels: Sequence[str]) -> str:
    rest = channels[channels.index(CHANNEL) + 1 :]
    return rest[0] if rest else "no channel (skipped)"
