"""Catalog storage and files: upserts replace items whole on SQLite and PostgreSQL,
lookups and `viewed_products` read what is stored, and `journeyman catalog import`
applies a CSV or JSONL file whole (numbers stay numbers) or, with one bad line, not at
all, naming file:line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from journeyman.messaging import catalogs
from journeyman.messaging.catalogs import CatalogError, Item
from journeyman.storage.db import Database
from journeyman.storage.models import CatalogItem, Customer, Event

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def items(db: Database, catalog: str = "products") -> dict[str, dict[str, object]]:
    with db.session() as session:
        rows = session.scalars(select(CatalogItem).where(CatalogItem.catalog == catalog))
        return {row.item_id: row.data for row in rows}


def test_an_upsert_inserts_then_replaces_whole_items(db: Database) -> None:
    with db.session() as session:
        catalogs.upsert(session, "products", [Item("a", {"id": "a", "price": 1, "sale": True})])
    with db.session() as session:
        catalogs.upsert(
            session, "products", [Item("a", {"id": "a", "price": 2}), Item("b", {"id": "b"})]
        )
    assert items(db) == {"a": {"id": "a", "price": 2}, "b": {"id": "b"}}


def test_catalogs_are_separate(db: Database) -> None:
    with db.session() as session:
        catalogs.upsert(session, "products", [Item("1", {"id": "1", "kind": "product"})])
        catalogs.upsert(session, "stores", [Item("1", {"id": "1", "kind": "store"})])
    with db.session() as session:
        lookup = catalogs.lookup_functions(session, "c1", NOW)["catalog"]
        assert lookup("stores", 1) == {"id": "1", "kind": "store"}
        assert lookup("products", "1") == {"id": "1", "kind": "product"}
        assert lookup("products", "2") is None
        assert lookup("products", None) is None


def test_viewed_products_joins_views_with_the_catalog_newest_first(db: Database) -> None:
    with db.session() as session:
        session.add(Customer(id="c1", traits={}, push_tokens=[]))
        catalogs.upsert(
            session,
            "products",
            [Item(i, {"id": i, "name": i.upper()}) for i in ("p1", "p2", "p3", "42")],
        )
        views = [
            ("p1", {"product_id": "p1"}, 40),  # older than the default 30 days
            ("p2", {"product_id": "p2"}, 3),
            ("42", {"product_id": 42}, 2),  # a number finds the item "42"
            ("x", {"product_id": "not-in-catalog"}, 1.5),
            ("p3", {"sku": "p3"}, 1),
            ("p2b", {"product_id": "p2"}, 0.5),  # seen again: listed once, newest
            ("other", {"name": "no id"}, 0.2),
        ]
        for n, (_, properties, days_ago) in enumerate(views):
            session.add(
                Event(
                    message_id=f"m{n}",
                    type="track",
                    customer_id="c1",
                    name="product_viewed",
                    properties=properties,
                    timestamp=NOW - timedelta(days=days_ago),
                )
            )
    with db.session() as session:
        viewed = catalogs.lookup_functions(session, "c1", NOW)["viewed_products"]
        assert [p["id"] for p in viewed(10)] == ["p2", "p3", "42"]
        assert [p["id"] for p in viewed(2)] == ["p2", "p3"]
        assert viewed(1)[0]["viewed_at"] == NOW - timedelta(days=0.5)
        assert [p["id"] for p in viewed(10, within=timedelta(days=1.2))] == ["p2", "p3"]
        assert viewed(3, catalog="stores") == []


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_numbers_stay_numbers_and_other_text_stays_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "products.csv",
        "id,name,price,stock,zip,on_sale,note\n"
        'p1,"Boot, trail",129.90,3,007,true,\n'
        "2,Lamp,40,0,75001,false,12 kg\n",
    )
    assert [(i.id, i.data) for i in catalogs.read_file(path)] == [
        (
            "p1",
            {
                "id": "p1",
                "name": "Boot, trail",
                "price": 129.9,
                "stock": 3,
                "zip": "007",
                "on_sale": True,
                "note": None,
            },
        ),
        (
            "2",
            {
                "id": "2",
                "name": "Lamp",
                "price": 40,
                "stock": 0,
                "zip": 75001,
                "on_sale": False,
                "note": "12 kg",
            },
        ),
    ]


def test_jsonl_items_keep_their_json_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.jsonl",
        '{"id": "a", "price": 1.5, "tags": ["x"]}\n\n{"id": 7, "stock": 0}\n',
    )
    assert [(i.id, i.data) for i in catalogs.read_file(path)] == [
        ("a", {"id": "a", "price": 1.5, "tags": ["x"]}),
        ("7", {"id": "7", "stock": 0}),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.csv", "id,price\na,1\nb,2,3\n", "p.csv:3: 3 values for 2 columns"),
        ("p.csv", "id,price\na,1\n,2\n", "p.csv:3: id must be text"),
        ("p.csv", "name,price\na,1\n", "p.csv:1: the header row has no `id` column"),
        ("p.jsonl", '{"id": "a"}\n{"id": "b",\n', "p.jsonl:2: not JSON"),
        ("p.jsonl", '{"id": "a"}\n[1]\n', "p.jsonl:2: an item is a JSON object"),
        ("p.jsonl", '{"price": 1}\n', "p.jsonl:1: the item has no id"),
        ("p.jsonl", '{"id": "a", "price": NaN}\n', "p.jsonl:1: not JSON: NaN is not a JSON"),
        ("p.txt", "id\na\n", "not a .csv or .jsonl file"),
    ],
)
def test_a_bad_line_is_named_with_its_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(CatalogError, match=r"nothing was imported|not a \.csv") as caught:
        catalogs.read_file(path)
    assert message in str(caught.value)


def test_import_command_applies_a_file_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journeyman.cli import app
    from journeyman.settings import get_settings

    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("DATABASE_URL", url)
    get_settings.cache_clear()
    runner = CliRunner()
    good = write(tmp_path, "good.csv", "id,price,stock\na,10,1\nb,12.5,0\n")
    result = runner.invoke(app, ["catalog", "import", "products", str(good)])
    assert result.exit_code == 0, result.output
    assert "2 items upserted into catalog products" in result.output
    bad = write(tmp_path, "bad.csv", "id,price,stock\na,99,5\nc,1\n")
    result = runner.invoke(app, ["catalog", "import", "products", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: 2 values for 3 columns" in result.output
    assert "nothing was imported" in result.output
    db = Database(url)
    try:
        assert items(db) == {
            "a": {"id": "a", "price": 10, "stock": 1},
            "b": {"id": "b", "price": 12.5, "stock": 0},
        }
    finally:
        db.dispose()
        get_settings.cache_clear()
