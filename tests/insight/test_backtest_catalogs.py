"""backtest with catalogs: the replay reads the source database's catalogs as they are
now, and `--catalog NAME=FILE` replaces one of them (what if the stock had been...)."""

from __future__ import annotations

from pathlib import Path

from journeyman.insight.backtest import backtest
from journeyman.messaging import catalogs
from journeyman.settings import Settings
from journeyman.storage.db import Database
from tests.insight.test_backtest import SINCE, UNTIL, at, record, settings, write_journey

__all__ = ["settings"]  # the fixture, shared with tests/insight/test_backtest.py

GUARDED = """
id: nudge
name: Back in stock
entry: {event: product_back_in_stock}
steps:
  - id: remind
    send:
      template: reminder
      channels: [email]
      only_if: "catalog('products', trigger.properties.product_id).stock > 0"
"""
SOLD_OUT = (
    "only_if false: catalog('products', trigger.properties.product_id).stock > 0 "
    "[catalog('products', trigger.properties.product_id).stock = 0]"
)


def recorded_restocks(db: Database) -> None:
    record(
        db,
        [{"id": "c1", "email": "c1@example.com"}, {"id": "c2", "email": "c2@example.com"}],
        [
            ("c1", "product_back_in_stock", at(0, "10:00"), {"product_id": "boot"}),
            ("c2", "product_back_in_stock", at(1, "10:00"), {"product_id": "lamp"}),
        ],
    )
    with db.session() as session:
        catalogs.upsert(
            session,
            "products",
            [
                catalogs.Item("boot", {"id": "boot", "stock": 0}),
                catalogs.Item("lamp", {"id": "lamp", "stock": 4}),
            ],
        )


async def test_the_replay_reads_the_databases_catalogs(
    time_env, settings: Settings, db: Database, tmp_path: Path
) -> None:
    recorded_restocks(db)
    report = await backtest(
        write_journey(tmp_path, GUARDED),
        settings=settings,
        source=db,
        since=SINCE,
        until=UNTIL,
        env=time_env,
    )
    assert report.messages == {"email": {"reminder": 1}}
    assert report.skipped == {SOLD_OUT: 1}


async def test_a_catalog_file_replaces_the_databases(
    time_env, settings: Settings, db: Database, tmp_path: Path
) -> None:
    recorded_restocks(db)
    path = tmp_path / "products.jsonl"
    path.write_text('{"id": "boot", "stock": 2}\n{"id": "lamp", "stock": 0}\n')
    report = await backtest(
        write_journey(tmp_path, GUARDED),
        settings=settings,
        source=db,
        since=SINCE,
        until=UNTIL,
        env=time_env,
        catalogs=catalogs.read_catalog_files([f"products={path}"]),
    )
    assert report.messages == {"email": {"reminder": 1}}
    assert report.skipped == {SOLD_OUT: 1}
    # Not written to the source: a backtest changes nothing.
    with db.session() as session:
        assert catalogs.get(session, "products", "boot") == {"id": "boot", "stock": 0}
