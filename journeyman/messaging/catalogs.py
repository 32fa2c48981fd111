"""Catalogs: items (products, stores...) kept current by other systems, read at send time.

An item is a JSON object with an `id`; it is stored whole under (catalog, id) and a new
upsert of the same id replaces it. Writers: the API (`PUT/POST /v1/catalogs/{catalog}/
items`, journeyman/api/routes/catalogs.py) and `journeyman catalog import` (a CSV or
JSONL file), each batch in one transaction. Readers: `catalog(name, id)` in expressions
and templates and `viewed_products(n)` in templates, both built here per evaluation by
whoever holds a session (an activity), never by a workflow.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from journeyman.storage.models import CatalogItem, Event, utcnow

# A catalog name is a word of the URL and of expressions: `catalog('products', ...)`.
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
MAX_ID_LENGTH = 200
# Items in one request or one file transaction; a bigger file is imported in batches.
MAX_BATCH = 10_000
# One item as JSON: a product with its texts and a few image URLs, not a database dump.
MAX_ITEM_BYTES = 64 * 1024
# Rows per INSERT ... ON CONFLICT sent to the database (one transaction still).
CHUNK = 1000
# `viewed_products(n)`: at most this many, and views this old at most.
MAX_VIEWED = 20
VIEWED_WITHIN = timedelta(days=30)
VIEWED_EVENT = "product_viewed"
# Views read for `viewed_products`: a customer who looked at one product 200 times in a
# row still gets a list, however short.
MAX_VIEWS_READ = 200
# The event property naming the product, first found wins (Segment's ecommerce spec
# has both; this project's events use product_id).
VIEWED_ID_PROPERTIES = ("product_id", "sku")


class CatalogError(ValueError):
    """Input that cannot be stored; `problems` name each bad item (`items.3.id`) or line."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass(frozen=True)
class Item:
    id: str
    data: dict[str, Any]


def check_name(catalog: str) -> str:
    if not NAME.match(catalog):
        raise CatalogError(
            f"catalog name {catalog[:120]!r} is not 1-100 letters, digits, '_', '-' or '.'",
            [("catalog", "not a catalog name")],
        )
    return catalog


def item_id(value: Any) -> str | None:
    """The id as stored: text, or a whole number written as text; None if not an id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_LENGTH:
        return value
    return None


def check_items(values: Any, where: Callable[[int], str] = lambda i: f"items.{i}") -> list[Item]:
    """The items of a request body, or CatalogError naming every bad one. A later item
    with the same id replaces an earlier one, as two requests would."""
    if not isinstance(values, list):
        raise CatalogError("send a JSON list of items, each an object with an id")
    if len(values) > MAX_BATCH:
        raise CatalogError(
            f"{len(values)} items in one batch; at most {MAX_BATCH}",
            [("items", f"at most {MAX_BATCH} items")],
        )
    problems: list[tuple[str, str]] = []
    found: dict[str, Item] = {}
    for index, value in enumerate(values):
        problem = _problem(value)
        if problem:
            problems.append((where(index), problem))
            continue
        ident = item_id(value["id"])
        assert ident is not None
        found[ident] = Item(ident, {**value, "id": ident})
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CatalogError(f"{first[0]}: {first[1]}{more}; nothing was stored", problems[:100])
    return list(found.values())


def _problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "an item is a JSON object with an id"
    if "id" not in value:
        return "the item has no id"
    if item_id(value["id"]) is None:
        return f"id must be text of 1-{MAX_ID_LENGTH} characters or a whole number"
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_ITEM_BYTES:
        return f"the item is {size} bytes as JSON; at most {MAX_ITEM_BYTES}"
    return None


# -- storage --------------------------------------------------------------------------


def upsert(session: Session, catalog: str, items: list[Item], now: datetime | None = None) -> int:
    """Insert or replace `items` in the session's transaction; the number stored."""
    if not items:
        return 0
    table: Table = CatalogItem.__table__  # type: ignore[assignment]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    statement = insert.on_conflict_do_update(
        index_elements=["catalog", "item_id"],
        set_={"data": insert.excluded.data, "updated_at": insert.excluded.updated_at},
    )
    at = now or utcnow()
    for start in range(0, len(items), CHUNK):
        rows = [
            {"catalog": catalog, "item_id": item.id, "data": item.data, "updated_at": at}
            for item in items[start : start + CHUNK]
        ]
        session.execute(statement, rows)
    return len(items)


def merge(session: Session, catalog: str, items: list[Item], now: datetime | None = None) -> int:
    """Change the fields `items` name on items that exist, keeping their other fields;
    CatalogError naming each item the catalog does not have (then nothing changes)."""
    existing: dict[str, dict[str, Any]] = {}
    ids = [item.id for item in items]
    for start in range(0, len(ids), CHUNK):
        rows = session.execute(
            select(CatalogItem.item_id, CatalogItem.data)
            .where(
                CatalogItem.catalog == catalog, CatalogItem.item_id.in_(ids[start : start + CHUNK])
            )
            .with_for_update()
        )
        existing.update({ident: data for ident, data in rows})
    missing = [
        (f"items.{n}", f"no item {item.id!r} in {catalog}: PUT creates items")
        for n, item in enumerate(items)
        if item.id not in existing
    ]
    if missing:
        raise CatalogError(f"{missing[0][0]}: {missing[0][1]}; nothing was changed", missing[:100])
    merged = [Item(item.id, {**existing[item.id], **item.data}) for item in items]
    return upsert(session, catalog, merged, now)


def get(session: Session, catalog: str, ident: str) -> dict[str, Any] | None:
    row = session.get(CatalogItem, {"catalog": catalog, "item_id": ident})
    return None if row is None else dict(row.data)


def remove(session: Session, catalog: str, ident: str) -> bool:
    result = session.execute(
        delete(CatalogItem).where(CatalogItem.catalog == catalog, CatalogItem.item_id == ident)
    )
    return bool(getattr(result, "rowcount", 0))


# -- reading at send time -------------------------------------------------------------


def lookup_functions(
    session: Session, customer_id: str, now: datetime
) -> dict[str, Callable[..., Any]]:
    """`catalog(name, id)` and `viewed_products(n)` for one evaluation.

    Lookups are remembered for the evaluation: a template that reads
    `catalog('products', id).price` and `.image_url` asks the database once.
    """
    seen: dict[tuple[str, str], dict[str, Any] | None] = {}

    def catalog(name: Any, ident: Any) -> dict[str, Any] | None:
        if not isinstance(name, str):
            raise ValueError("catalog() takes the catalog name as text: catalog('products', id)")
        key = item_id(ident)
        if key is None:
            return None  # no id (a property the event lacked) finds no item
        if (name, key) not in seen:
            seen[(name, key)] = get(session, name, key)
        return seen[(name, key)]

    def viewed_products(
        limit: Any = 3, catalog: Any = "products", within: Any = VIEWED_WITHIN
    ) -> list[dict[str, Any]]:
        """The distinct products the customer viewed most recently, newest first, each
        the catalog item with `viewed_at`; views of items not in the catalog are left out."""
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise ValueError("viewed_products() takes a number: viewed_products(3)")
        if not isinstance(within, timedelta):
            raise ValueError("viewed_products(within=...) takes a duration such as days(7)")
        count = max(1, min(int(limit), MAX_VIEWED))
        return viewed(session, customer_id, now, str(catalog), count, within)

    return {"catalog": catalog, "viewed_products": viewed_products}


def _viewed_from(
    views: Iterable[tuple[str, datetime]], items: dict[str, dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    taken: set[str] = set()
    for ident, at in views:
        if ident in taken or ident not in items:
            continue
        taken.add(ident)
        found.append({**items[ident], "viewed_at": at})
        if len(found) == count:
            break
    return found


def viewed(
    session: Session,
    customer_id: str,
    now: datetime,
    catalog: str,
    count: int,
    within: timedelta = VIEWED_WITHIN,
) -> list[dict[str, Any]]:
    """The customer's latest distinct product views joined with `catalog`, in one query:
    the join reads the product id out of each event's JSON properties (`json_extract`
    on SQLite, `->>` on PostgreSQL, as SQLAlchemy writes it for each)."""
    properties = Event.properties
    viewed_id = func.coalesce(*(properties[name].as_string() for name in VIEWED_ID_PROPERTIES))
    rows = session.execute(
        select(CatalogItem.item_id, CatalogItem.data, Event.timestamp)
        .select_from(Event)
        .join(
            CatalogItem,
            and_(CatalogItem.catalog == catalog, CatalogItem.item_id == viewed_id),
        )
        .where(
            Event.customer_id == customer_id,
            Event.name == VIEWED_EVENT,
            Event.timestamp <= now,
            Event.timestamp > now - within,
        )
        .order_by(Event.timestamp.desc(), Event.id.desc())
        .limit(MAX_VIEWS_READ)
    )
    items: dict[str, dict[str, Any]] = {}
    views: list[tuple[str, datetime]] = []
    for ident, data, at in rows:
        items[ident] = data
        views.append((ident, at))
    return _viewed_from(views, items, count)


# -- files ----------------------------------------------------------------------------


_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


def cell(text: str) -> Any:
    """A CSV cell as JSON would have it: `12` and `12.5` are numbers, `true`/`false`
    booleans, an empty cell none; anything else (`007`, `12 kg`) stays text."""
    value = text.strip()
    if value == "":
        return None
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    if value in ("true", "false"):
        return value == "true"
    return text


def read_file(path: Path) -> list[Item]:
    """The items of a `.csv` (a header row names the fields, one must be `id`) or
    `.jsonl` (one object per line) file. CatalogError names every bad line (file:line),
    and nothing is returned when there is one."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise CatalogError(f"{path}: not a .csv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: {exc}") from None
    rows = _csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text)
    problems: list[tuple[str, str]] = []
    found: dict[str, Item] = {}
    for where, value in rows:
        if isinstance(value, str):
            problems.append((where, value))
            continue
        problem = _problem(value)
        if problem:
            problems.append((where, problem))
            continue
        ident = item_id(value["id"])
        assert ident is not None
        found[ident] = Item(ident, {**value, "id": ident})
    if problems:
        lines = "\n".join(f"{where}: {problem}" for where, problem in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CatalogError(f"{lines}{more}\nnothing was imported", problems)
    return list(found.values())


def _csv_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        yield f"{path}:1", "the file is empty: a header row names the fields"
        return
    except csv.Error as exc:
        yield f"{path}:1", f"not CSV: {exc}"
        return
    names = [name.strip() for name in header]
    if "id" not in names:
        yield f"{path}:1", "the header row has no `id` column"
        return
    if len(set(names)) != len(names) or "" in names:
        yield f"{path}:1", "the header row names a column twice, or has an empty name"
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield f"{path}:{reader.line_num}", f"not CSV: {exc}"
            return
        where = f"{path}:{reader.line_num}"
        if not row or all(not value.strip() for value in row):
            continue
        if len(row) != len(names):
            yield where, f"{len(row)} values for {len(names)} columns"
            continue
        values: dict[str, Any] = {}
        for name, text_value in zip(names, row, strict=True):
            values[name] = text_value.strip() if name == "id" else cell(text_value)
        yield where, values


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any] | str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            yield f"{path}:{number}", f"not JSON: {exc.msg} (column {exc.colno})"
            continue
        except (ValueError, RecursionError) as exc:
            yield f"{path}:{number}", f"not JSON: {exc}"
            continue
        yield f"{path}:{number}", value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_catalog_files(specs: list[str]) -> dict[str, list[Item]]:
    """`NAME=FILE` pairs (simulate and backtest `--catalog`): each catalog's items."""
    catalogs: dict[str, list[Item]] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not file:
            raise CatalogError(f"--catalog {spec!r}: give NAME=FILE, e.g. products=products.csv")
        check_name(name)
        catalogs.setdefault(name, []).extend(read_file(Path(file)))
    return catalogs


def load(session: Session, catalogs: dict[str, list[Item]]) -> None:
    """Store whole catalogs (read by `read_catalog_files`), in batches, in this session."""
    for name, items in catalogs.items():
        for start in range(0, len(items), MAX_BATCH):
            upsert(session, name, items[start : start + MAX_BATCH])


def copy_catalogs(source: Session, target: Session, skip: set[str]) -> None:
    """Every catalog of `source` but those in `skip`, into `target` (backtest: the
    replay reads the catalogs as they are now)."""
    rows = source.execute(
        select(CatalogItem.catalog, CatalogItem.item_id, CatalogItem.data)
        .where(CatalogItem.catalog.not_in(sorted(skip)))
        .order_by(CatalogItem.catalog)
        .execution_options(yield_per=MAX_BATCH)
    )
    batch: dict[str, list[Item]] = {}
    size = 0
    for catalog, ident, data in rows:
        batch.setdefault(catalog, []).append(Item(ident, data))
        size += 1
        if size == MAX_BATCH:
            load(target, batch)
            batch, size = {}, 0
    load(target, batch)
