"""Messages held in the outbox: channels with no provider configured."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from journeyman.api import queries
from journeyman.api.deps import SessionDep, require_admin
from journeyman.api.schemas import OutboxView

router = APIRouter(prefix="/v1/outbox", tags=["outbox"], dependencies=[Depends(require_admin)])


@router.get("", response_model=list[OutboxView])
def list_outbox(
    session: SessionDep,
    customer: Annotated[str | None, Query(description="only this customer's messages")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OutboxView]:
    """Newest first. A customer's messages include those of runs that started under an
    anonymous id merged into them."""
    messages = queries.outbox_messages(session, customer, limit)
    return [OutboxView.model_validate(m, from_attributes=True) for m in messages]
