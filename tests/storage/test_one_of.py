"""`columns.one_of`: a column among a bound list, as each backend reads it fastest (an array
on PostgreSQL, an expanding IN elsewhere), with the same answers."""

from __future__ import annotations

from sqlalchemy import select

from journeyman.storage.columns import one_of
from journeyman.storage.db import Database
from journeyman.storage.models import Customer

_CUSTOMERS = Customer.metadata.tables[Customer.__tablename__]


def test_the_same_rows_for_lists_of_any_length(db: Database) -> None:
    with db.session() as session:
        for n in range(5):
            session.add(Customer(id=f"c{n}", traits={}, push_tokens=[]))
    with db.engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        statement = select(_CUSTOMERS.c.id).where(one_of(_CUSTOMERS.c.id, "ids", postgres))
        for ids in ([], ["c1"], ["c0", "c3", "nobody"], [f"c{n}" for n in range(5)]):
            found = connection.execute(statement, {"ids": ids}).scalars().all()
            assert sorted(found) == sorted(i for i in ids if i != "nobody")
        # On PostgreSQL the statement's text is one, whatever the length (psycopg
        # prepares it once); an expanding IN renders one per length.
        texts = {
            connection.execute(statement, {"ids": ids}).context.statement  # type: ignore[attr-defined]
            for ids in (["c1"], ["c1", "c2", "c3"])
        }
        assert len(texts) == (1 if postgres else 2)
