"""After `DELETE /v1/customers/{id}`, the database files hold neither the email, the
phone nor the customer id: SQLite's main file, WAL and SHM searched byte by byte, and
on PostgreSQL every page of every table and index read with `pageinspect`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from journeyman.privacy.consent import address_hash, suppress, suppression
from journeyman.privacy.pseudonyms import installation_key, pseudonym
from journeyman.storage.models import Delivery, ErasureTombstone, JourneyRun, Suppression
from tests.api.support import Api
from tests.api.test_privacy import ADMIN, NEWS, SECRET

pytestmark = pytest.mark.temporal

CUSTOMER = "cust-9d41f7e2"
EMAIL = "grace.hopper.erasure@example.com"
PHONE = "+15550009876"
SECRETS = (CUSTOMER, EMAIL, PHONE, "Grace Hopper")


async def erase_a_customer_with_history(api: Api) -> dict[str, object]:
    await api.start(NEWS, secret_key=SECRET)
    api.harness.customer(CUSTOMER, email=EMAIL, phone=PHONE, first_name="Grace")
    identify = {"userId": CUSTOMER, "traits": {"name": "Grace Hopper", "phone": PHONE}}
    assert (await api.post("/v1/identify", identify)).status_code == 200
    alias = {"userId": CUSTOMER, "previousId": f"anon-{CUSTOMER}"}
    assert (await api.post("/v1/alias", alias)).status_code == 200
    track = {"userId": CUSTOMER, "event": "subscribed", "properties": {"note": EMAIL}}
    assert (await api.post("/v1/track", track)).status_code == 200
    await api.dispatch()
    await api.harness.sleep(timedelta(minutes=5))
    assert len(api.outbox()) == 1
    assert api.client is not None
    response = await api.client.delete(f"/v1/customers/{CUSTOMER}", headers=ADMIN)
    assert response.status_code == 200, response.text
    report: dict[str, object] = response.json()
    return report


async def test_the_pseudonym_is_keyed_and_the_ledger_keeps_it(api: Api) -> None:
    report = await erase_a_customer_with_history(api)
    key = installation_key(SECRET.encode())
    assert report["pseudonym"] == pseudonym(key, CUSTOMER)
    # Not the unsalted digest anyone could recompute from a suspected id.
    assert hashlib.sha256(CUSTOMER.encode()).hexdigest()[:16] not in str(report["pseudonym"])
    assert pseudonym(b"another installation", CUSTOMER) != report["pseudonym"]
    with api.db.session() as session:
        [delivery] = session.scalars(select(Delivery)).all()
        [run] = session.scalars(select(JourneyRun)).all()
        tombstones = session.scalars(select(ErasureTombstone)).all()
    assert delivery.customer_id == run.customer_id == report["pseudonym"]
    assert len(tombstones) == 2  # the customer and the anonymous id merged into it
    assert report["storage_note"] is None


async def test_no_byte_of_the_customer_is_left_in_the_database_files(api: Api) -> None:
    await erase_a_customer_with_history(api)
    if api.db.url.startswith("sqlite"):
        database = Path(api.db.url.removeprefix("sqlite:///"))
        files = sorted(database.parent.glob(database.name + "*"))
        assert database in files
        raw = {f.name: f.read_bytes() for f in files}
        for secret in SECRETS:
            for name, data in raw.items():
                assert secret.encode() not in data, (secret, name)
        return
    tuples = postgres_tuples(api)
    assert tuples  # the tables were read
    for secret in SECRETS:
        holding = sorted({name for name, data in tuples if secret.encode() in data})
        assert not holding, (secret, holding)


def postgres_tuples(api: Api) -> list[tuple[str, bytes]]:
    """The data of every tuple (live or dead, not yet pruned) in every page of every
    table, TOAST table and B-tree index of the schema, read with `pageinspect`."""
    found: list[tuple[str, bytes]] = []
    with api.db.engine.connect() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        connection.commit()
        relations = connection.execute(
            text(
                "SELECT c.oid::regclass::text, c.relkind, pg_relation_size(c.oid) / "
                "current_setting('block_size')::int FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace LEFT JOIN pg_am am ON am.oid = c.relam "
                "WHERE n.nspname IN ('public', 'pg_toast') AND c.relpersistence = 'p' AND "
                "(c.relkind IN ('r', 't') OR (c.relkind = 'i' AND am.amname = 'btree'))"
            )
        ).all()
        for name, kind, blocks in relations:
            for block in range(int(blocks)):
                if kind == "i":
                    if block == 0:
                        continue  # the metapage
                    rows = connection.execute(
                        text("SELECT data FROM bt_page_items(:name, :block)"),
                        {"name": name, "block": block},
                    ).scalars()
                    found.extend((name, bytes.fromhex(d.replace(" ", ""))) for d in rows if d)
                else:
                    rows = connection.execute(
                        text("SELECT t_data FROM heap_page_items(get_raw_page(:name, :block))"),
                        {"name": name, "block": block},
                    ).scalars()
                    found.extend((name, bytes(d)) for d in rows if d is not None)
    return found


async def test_the_erased_customers_suppressions_stay_but_only_under_the_keyed_digest(
    api: Api,
) -> None:
    await api.start(NEWS, secret_key=SECRET)
    api.harness.customer(CUSTOMER, email=EMAIL, phone=PHONE, first_name="Grace")
    with api.db.session() as session:
        # Made before digests were keyed: plain SHA-256 of the address.
        suppress(session, "sms", PHONE, "invalid", "test", datetime.now(UTC))
        session.add(
            Delivery(
                idempotency_key=f"news/{CUSTOMER}/r/first/1",
                workflow_id=f"news/{CUSTOMER}",
                journey_id="news",
                version="v",
                step_id="first",
                customer_id=CUSTOMER,
                template="hello",
                status="failed",
                decided_at=datetime.now(UTC),
                attempts=[{"channel": "email", "address": "0123456789abcdef", "error": EMAIL}],
            )
        )
    assert api.client is not None
    response = await api.client.delete(f"/v1/customers/{CUSTOMER}", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["rows_pseudonymized"]["suppressions"] == 1
    key = installation_key(SECRET.encode())
    with api.db.session() as session:
        digests = [s.address_hash for s in session.scalars(select(Suppression))]
        assert suppression(session, "sms", PHONE, key) is not None  # still suppressed
        [delivery] = session.scalars(select(Delivery)).all()
    assert digests == [address_hash("sms", PHONE, key)]
    assert hashlib.sha256(PHONE.encode()).hexdigest() not in digests
    assert delivery.attempts == [{"channel": "email", "error": "[address]"}]
