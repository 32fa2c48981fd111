"""The double opt-in link of confirmation messages (JOURNEYMAN_CLIENT_CONTACTS=confirm).

The signed token (journeyman/privacy/contacts.py) names the contact point and authenticates the
request. A GET shows a page with a button and changes nothing (mail scanners follow
links); the POST of that button confirms.
"""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from journeyman.api.deps import ServicesDep
from journeyman.api.routes.unsubscribe import _page
from journeyman.privacy import contacts

router = APIRouter(prefix="/confirm", tags=["unsubscribe"])


@router.get("/{token}", response_class=HTMLResponse, responses={400: {}})
def page(token: str, services: ServicesDep) -> HTMLResponse:
    """The page behind the link: a button that confirms. Changes nothing by itself."""
    try:
        parsed = contacts.verify(services.settings.signing_key(), token)
    except contacts.BadConfirmation as exc:
        return _page("Link not valid", f"<p>{html.escape(str(exc))}.</p>", status=400)
    return _page(
        "Confirm",
        f"<p>Get our messages at <b>{html.escape(parsed.address)}</b>?</p>"
        '<form method="post"><button>Yes, confirm</button></form>',
    )


@router.post("/{token}", response_class=HTMLResponse, responses={400: {}})
def confirm(token: str, services: ServicesDep) -> HTMLResponse:
    """Confirm the contact point; confirming again is harmless."""
    try:
        row = contacts.confirm(services.db, services.settings.signing_key(), token)
    except contacts.BadConfirmation as exc:
        return _page("Link not valid", f"<p>{html.escape(str(exc))}.</p>", status=400)
    return _page("Confirmed", f"<p>Thank you: {html.escape(row.address)} is confirmed.</p>")
