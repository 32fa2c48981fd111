"""One-click unsubscribe (RFC 8058) and the small page behind the link.

Every email carries `List-Unsubscribe: <PUBLIC_BASE_URL/unsubscribe/TOKEN>` and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click`. Mail clients POST to the URL
(body `List-Unsubscribe=One-Click`) and the customer is unsubscribed at once, no page
involved. A person following the link in the message GETs a page that confirms with a
button (a GET never changes anything: link scanners follow links) and lets them choose
topics and the channel as a whole.

The token (journeyman.privacy.tokens) names the customer, the journey's topic (else the channel)
and is signed: it authenticates the request, so these routes need no other credentials.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from journeyman.api.deps import ServicesDep
from journeyman.customers.profiles import find_customer
from journeyman.privacy.consent import is_subscribed, set_consent
from journeyman.privacy.tokens import BadToken, UnsubscribeToken, verify

router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"])

SOURCE = "unsubscribe_link"
CHANNEL_NAMES = {
    "email": "emails",
    "sms": "text messages",
    "push": "push notifications",
    "whatsapp": "WhatsApp messages",
    "inbox": "inbox messages",
}


@router.get("/{token}", response_class=HTMLResponse, responses={400: {}})
def page(token: str, services: ServicesDep) -> HTMLResponse:
    """The page behind the link: confirm, or choose topics. Changes nothing by itself."""
    parsed = _verify(token, services)
    if isinstance(parsed, HTMLResponse):
        return parsed
    with services.db.session() as session:
        customer = find_customer(session, parsed.customer_id)
        if customer is None:
            return _page("Unsubscribed", "<p>We hold no data about you any more.</p>")
        topics = _topics(services)
        if parsed.topic and parsed.topic not in topics:
            topics.insert(0, parsed.topic)
        state = {t: is_subscribed(session, customer.id, "topic", t) for t in topics}
        channel_on = is_subscribed(session, customer.id, "channel", parsed.channel)
    what = _label(parsed)
    quick = (
        f'<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f"<button>Unsubscribe from {html.escape(what)}</button></form>"
    )
    boxes = "".join(
        f'<label><input type="checkbox" name="topic" value="{html.escape(t)}"'
        f"{' checked' if on else ''}> {html.escape(_humane(t))}</label><br>"
        for t, on in state.items()
    )
    channel = CHANNEL_NAMES.get(parsed.channel, parsed.channel)
    manage = (
        '<form method="post"><input type="hidden" name="manage" value="1">'
        f"<p>Or choose what you get:</p>{boxes}"
        f'<label><input type="checkbox" name="channel" value="on"'
        f"{' checked' if channel_on else ''}> any {html.escape(channel)} at all</label><br>"
        "<button>Save my choices</button></form>"
    )
    return _page("Unsubscribe", f"<p>Stop getting {html.escape(what)}?</p>{quick}{manage}")


@router.post("/{token}", response_class=HTMLResponse, responses={400: {}})
async def unsubscribe(token: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058), or the choices from the page's form."""
    parsed = _verify(token, services)
    if isinstance(parsed, HTMLResponse):
        return parsed
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    now = datetime.now(UTC)
    with services.db.session() as session:
        customer = find_customer(session, parsed.customer_id)
        if customer is None:  # erased meanwhile: nothing left to unsubscribe
            return _page("Unsubscribed", "<p>You will get nothing more from us.</p>")
        if "manage" in form:
            wanted = set(form.get("topic", []))
            topics = set(_topics(services)) | ({parsed.topic} if parsed.topic else set())
            for topic in sorted(topics):
                set_consent(session, customer.id, "topic", topic, topic in wanted, SOURCE, now)
            channel_on = form.get("channel") == ["on"]
            set_consent(session, customer.id, "channel", parsed.channel, channel_on, SOURCE, now)
            return _page("Saved", "<p>Your choices are saved.</p>")
        scope, name = ("topic", parsed.topic) if parsed.topic else ("channel", parsed.channel)
        set_consent(session, customer.id, scope, name, False, SOURCE, now, "one-click")
    return _page("Unsubscribed", f"<p>You will get no more {html.escape(_label(parsed))}.</p>")


def _verify(token: str, services: ServicesDep) -> UnsubscribeToken | HTMLResponse:
    try:
        days = services.settings.unsubscribe_link_days
        max_age = timedelta(days=days) if days else None
        return verify(services.settings.signing_key(), token, max_age=max_age)
    except BadToken as exc:
        return _page("Link not valid", f"<p>{html.escape(str(exc))}.</p>", status=400)


def _topics(services: ServicesDep) -> list[str]:
    """The topics of the journeys this service runs, for the choices on the page."""
    return sorted({p.journey.topic for p in services.router.catalog.plans if p.journey.topic})


def _label(token: UnsubscribeToken) -> str:
    channel = CHANNEL_NAMES.get(token.channel, token.channel)
    return f"{_humane(token.topic)} {channel}" if token.topic else channel


def _humane(topic: str) -> str:
    return topic.replace("_", " ")


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;"
        "padding:0 1rem}button{font:inherit;padding:.4rem 1rem;margin:.5rem 0}</style>"
        f"<h1>{html.escape(title)}</h1>{body}</html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
