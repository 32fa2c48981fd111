"""Customer profiles for operators: who they are, where they are, what they got."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from journeyman.api import limits, queries
from journeyman.api.deps import DatabaseDep, ServicesDep, SessionDep, require_admin
from journeyman.api.errors import ApiError
from journeyman.api.schemas import (
    ConsentChangeView,
    ConsentHistoryView,
    ConsentsUpdate,
    ConsentsView,
    CustomerView,
    ErasureView,
    EventView,
    MessageView,
    RunView,
)
from journeyman.api.views import view_of
from journeyman.customers.identity import merged_ids
from journeyman.customers.profiles import find_customer
from journeyman.privacy import erasure
from journeyman.privacy.consent import consents_of, set_consent
from journeyman.privacy.pseudonyms import installation_key, settings_key
from journeyman.storage.models import Customer, Delivery, Event, OutboxMessage

RECENT = 20

router = APIRouter(
    prefix="/v1/customers", tags=["customers"], dependencies=[Depends(require_admin)]
)


@router.get("/{customer_id}", response_model=CustomerView, responses={404: {}})
def read_customer(customer_id: str, session: SessionDep) -> CustomerView:
    """The profile (an anonymous id shows the customer it was merged into), the journeys
    under way, the last messages and the last events."""
    customer = _customer(session, customer_id)
    aliases = merged_ids(session, customer.id)
    ids = [customer.id, *aliases]
    deliveries = queries.recent_deliveries(session, ids, RECENT)
    held = queries.held_messages(session, [d.id for d in deliveries])
    return view_of(
        CustomerView,
        customer,
        push_tokens=list(customer.push_tokens or []),
        traits=dict(customer.traits or {}),
        aliases=aliases,
        consents=ConsentsView.model_validate(consents_of(session, customer.id)),
        active_journeys=[
            RunView.model_validate(run, from_attributes=True)
            for run in queries.running_runs(session, ids)
        ],
        recent_messages=[_message_view(d, held.get(d.id)) for d in deliveries],
        recent_events=[_event_view(e) for e in queries.recent_events(session, ids, RECENT)],
    )


@router.get("/{customer_id}/consents", response_model=ConsentHistoryView, responses={404: {}})
def read_consents(customer_id: str, session: SessionDep) -> ConsentHistoryView:
    """Current choices and the audit trail of every change, oldest first."""
    customer = _customer(session, customer_id)
    history = queries.consent_changes(session, customer.id)
    return ConsentHistoryView(
        consents=ConsentsView.model_validate(consents_of(session, customer.id)),
        history=[ConsentChangeView.model_validate(c, from_attributes=True) for c in history],
    )


@router.put("/{customer_id}/consents", response_model=ConsentsView, responses={404: {}})
def update_consents(customer_id: str, body: ConsentsUpdate, session: SessionDep) -> ConsentsView:
    """Subscribe or unsubscribe channels (`email`, `sms`, `push`) and topics (a journey's
    `topic`). Takes effect for the next message of every running journey: sends check
    consent when they go out. Each change is recorded with `source` and the time."""
    customer = _customer(session, customer_id)
    now = datetime.now(UTC)
    for scope, choices in (("channel", body.channels), ("topic", body.topics)):
        for name, subscribed in choices.items():
            set_consent(
                session, customer.id, scope, name, subscribed, body.source, now, body.detail
            )
    return ConsentsView.model_validate(consents_of(session, customer.id))


@router.get("/{customer_id}/export", responses={404: {}})
def export_customer(customer_id: str, session: SessionDep, services: ServicesDep) -> dict[str, Any]:
    """Everything held about the customer (GDPR access request): profile, merged
    profiles, consents and their history, events, journeys and messages."""
    key = settings_key(services.settings)
    data = erasure.export(session, _customer(session, customer_id).id, key)
    assert data is not None
    clipped: dict[str, Any] = limits.clip(data, EXPORT_DEPTH)
    return clipped


@router.delete("/{customer_id}", response_model=ErasureView, responses={404: {}})
async def erase_customer(customer_id: str, services: ServicesDep, db: DatabaseDep) -> ErasureView:
    """Erasure (GDPR right to be forgotten): running journeys ended, Temporal histories
    deleted, profile, events and messages removed; statistics kept under a pseudonym.
    See docs/privacy.md."""
    key = installation_key(services.settings.signing_key())
    report = await erasure.erase(
        db, services.router.client, customer_id, requested_by="api:admin", key=key
    )
    if report is None:
        raise _unknown(customer_id)
    return ErasureView.model_validate(report, from_attributes=True)


# The export's own nesting (events, then an event's fields) above what intake allows.
EXPORT_DEPTH = limits.MAX_DEPTH + 4


def _event_view(event: Event) -> EventView:
    return view_of(EventView, event, properties=limits.clip(event.properties or {}))


def _message_view(delivery: Delivery, held: OutboxMessage | None) -> MessageView:
    """A delivery, with the message as rendered when the outbox held it."""
    return view_of(
        MessageView,
        delivery,
        delivery_id=delivery.id,
        to=held.to if held is not None else None,
        subject=held.subject if held is not None else None,
    )


def _customer(session: Session, customer_id: str) -> Customer:
    customer = find_customer(session, customer_id)
    if customer is None:
        raise _unknown(customer_id)
    return customer


def _unknown(customer_id: str) -> ApiError:
    return ApiError(
        404,
        f"no customer {customer_id!r}",
        [{"field": "customer_id", "message": "unknown", "type": "not_found"}],
    )
