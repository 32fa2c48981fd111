"""A customer and its merged ids: the two directions of a merge, answered once.

When an anonymous visitor identifies, intake merges the anonymous profile into the
known customer by setting `merged_into` on the anonymous row
(journeyman/events/intake.py), and keeps merges one hop long. Two questions follow:

- The ids merged INTO a customer (`merged_ids`, `identities`, and `merged_ids_query`,
  `identities_query` as subqueries): runs, messages and events stored under any of
  them are the customer's.
- The customer a merged id now points TO (`customer_behind`): a run that started under
  an anonymous id keeps that id, and reads the known customer's profile from here on.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import CompoundSelect, Select, String, bindparam, select, union_all
from sqlalchemy.orm import Session

from journeyman.storage.models import Customer

# Merges keep `merged_into` one hop long (journeyman/events/intake.py); this bounds the walk.
MERGE_DEPTH = 8


def merged_ids_query(customer_id: Any) -> Select[str]:
    """The ids merged into `customer_id` (a value or a bound parameter), as a subquery."""
    return select(Customer.id).where(Customer.merged_into == customer_id)


def identities_query(parameter: str) -> CompoundSelect:
    """The customer and the ids merged into it, as one subquery over the bound
    parameter `parameter` (a statement prepared once, run for each customer)."""
    customer_id = bindparam(parameter, type_=String)
    return union_all(select(customer_id), merged_ids_query(customer_id))


def merged_ids(session: Session, customer_id: str) -> list[str]:
    """The ids merged into `customer_id`, in id order."""
    return list(session.scalars(merged_ids_query(customer_id).order_by(Customer.id)))


def identities(session: Session, customer_id: str) -> list[str]:
    """The customer and the ids merged into it: what was stored under any of them
    belongs to this customer."""
    return [customer_id, *merged_ids(session, customer_id)]


def owners(session: Session, customer_ids: Collection[str]) -> dict[str, str]:
    """Each of `customer_ids`, and each id merged into one of them, to its customer."""
    owner = {customer_id: customer_id for customer_id in customer_ids}
    for merged, known in session.execute(
        select(Customer.id, Customer.merged_into).where(Customer.merged_into.in_(customer_ids))
    ):
        if known is not None:
            owner[merged] = known
    return owner


def customer_behind(session: Session, customer_id: str) -> Customer | None:
    """The customer `customer_id` points to now: itself, or the customer it was merged
    into; None when there is no such row."""
    customer = session.get(Customer, customer_id)
    for _ in range(MERGE_DEPTH):
        if customer is None or customer.merged_into is None:
            break
        customer = session.get(Customer, customer.merged_into)
    return customer
