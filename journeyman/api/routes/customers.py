"""Customer profiles for operators: who they are, where they are, what they got."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import select

from journeyman.api.deps import SessionDep, require_admin
from journeyman.api.errors import ApiError
from journeyman.api.schemas import CustomerView, EventView, MessageView, RunView
from journeyman.profiles import find_customer
from journeyman.storage.models import Customer, Delivery, Event, JourneyRun, OutboxMessage

RECENT = 20

router = APIRouter(
    prefix="/v1/customers", tags=["customers"], dependencies=[Depends(require_admin)]
)


@router.get("/{customer_id}", response_model=CustomerView, responses={404: {}})
def read_customer(customer_id: str, session: SessionDep) -> CustomerView:
    """The profile (an anonymous id shows the customer it was merged into), the journeys
    under way, the last messages and the last events."""
    customer = find_customer(session, customer_id)
    if customer is None:
        raise ApiError(
            404,
            f"no customer {customer_id!r}",
            [{"field": "customer_id", "message": "unknown", "type": "not_found"}],
        )
    aliases = list(
        session.scalars(
            select(Customer.id).where(Customer.merged_into == customer.id).order_by(Customer.id)
        )
    )
    identities = [customer.id, *aliases]
    runs = session.scalars(
        select(JourneyRun)
        .where(JourneyRun.customer_id.in_(identities), JourneyRun.status == "running")
        .order_by(JourneyRun.started_at)
    )
    deliveries = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.customer_id.in_(identities))
            .order_by(Delivery.id.desc())
            .limit(RECENT)
        )
    )
    held = {
        message.delivery_id: message
        for message in session.scalars(
            select(OutboxMessage).where(OutboxMessage.delivery_id.in_([d.id for d in deliveries]))
        )
    }
    events = session.scalars(
        select(Event)
        .where(Event.customer_id.in_(identities))
        .order_by(Event.id.desc())
        .limit(RECENT)
    )
    return CustomerView(
        id=customer.id,
        email=customer.email,
        phone=customer.phone,
        timezone=customer.timezone,
        locale=customer.locale,
        push_tokens=list(customer.push_tokens or []),
        traits=dict(customer.traits or {}),
        aliases=aliases,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
        active_journeys=[RunView.model_validate(run, from_attributes=True) for run in runs],
        recent_messages=[
            MessageView(
                delivery_id=d.id,
                journey_id=d.journey_id,
                step_id=d.step_id,
                template=d.template,
                channel=d.channel,
                status=d.status,
                reason=d.reason,
                created_at=d.created_at,
                sent_at=d.sent_at,
                to=held[d.id].to if d.id in held else None,
                subject=held[d.id].subject if d.id in held else None,
            )
            for d in deliveries
        ],
        recent_events=[EventView.model_validate(e, from_attributes=True) for e in events],
    )
