"""Link domains: a message may not carry a link whose host an anonymous client chose.

Client keys are public (journeyman/api/auth.py): anyone can send an event with them,
and a template that builds a link from an event property (`{{ event.properties.url }}`)
would then send the operator's customers, from the operator's domain, to wherever that
someone pointed it. So when a rendered message has a link whose host appears in a
property of an event (the current one or the trigger) that came with a client key, the
host must be on JOURNEYMAN_LINK_DOMAINS (default: the hosts of PUBLIC_BASE_URL and
EMAIL_FROM, and their subdomains); otherwise the send is skipped with the reason.
Events sent with a server key, by a signed webhook, or stored before sources were
recorded are the operator's own and are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeyman.contracts import ExprContext
from journeyman.storage.models import Event

# Absolute and scheme-relative links, as they appear in text and in HTML attributes.
_LINK = re.compile(r"(?i)(?:\b[a-z][a-z0-9+.-]*:)?//([^/\s\"'<>?#\\]+)")


def allowed_domains(
    public_base_url: str, email_from: str, configured: str | None
) -> frozenset[str]:
    """JOURNEYMAN_LINK_DOMAINS (comma-separated), else the hosts of PUBLIC_BASE_URL and
    of EMAIL_FROM's address."""
    if configured is not None and configured.strip():
        return frozenset(d.strip().lower().lstrip(".") for d in configured.split(",") if d.strip())
    hosts = {(urlsplit(public_base_url).hostname or "").lower()}
    address = parseaddr(email_from)[1]
    if "@" in address:
        hosts.add(address.rsplit("@", 1)[1].lower())
    return frozenset(h for h in hosts if h)


def client_strings(session: Session, context: ExprContext) -> list[str]:
    """The string values of the properties of the context's events that came with a
    client key (lower-cased)."""
    events = {context.event.message_id: context.event, context.trigger.message_id: context.trigger}
    rows = session.execute(
        select(Event.message_id, Event.source).where(Event.message_id.in_(list(events)))
    ).all()
    found: list[str] = []
    for row in rows:
        if row.source == "client":
            found.extend(s.lower() for s in _strings(events[row.message_id].properties))
    return found


def foreign_link(
    texts: Iterable[str | None], sent: list[str], allowed: frozenset[str]
) -> str | None:
    """The first host of a link in `texts` that comes from a client-sent value (`sent`)
    and is not allowed; None when there is none."""
    if not sent:
        return None
    for text in texts:
        for match in _LINK.finditer(text or ""):
            host = match.group(1).rsplit("@", 1)[-1].split(":", 1)[0].lower().rstrip(".")
            if not host or _allowed(host, allowed):
                continue
            if any(host in value for value in sent):
                return host
    return None


def skip_reason(host: str) -> str:
    return (
        f"a link to {host} comes from an event property sent with a client key, and {host} "
        "is not on JOURNEYMAN_LINK_DOMAINS"
    )


def message_texts(message: Any) -> list[str | None]:
    """Everything of a rendered message a link can be in."""
    texts = [
        getattr(message, name, None)
        for name in ("subject", "title", "text", "html", "body", "preheader")
    ]
    data = getattr(message, "data", None) or {}
    texts.extend(str(v) for v in data.values())
    return [t if isinstance(t, str) else None for t in texts]


def _allowed(host: str, allowed: frozenset[str]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in allowed)


def _strings(value: Any) -> Iterable[str]:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
