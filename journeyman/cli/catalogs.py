"""`journeyman catalog import`: catalogs from CSV or JSON files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from journeyman.cli.common import _count, _fail, command_group, migrated_database

# -- catalogs ---------------------------------------------------------------------------

catalog_app = command_group(
    "catalog", "Catalogs (products, stores...) that journeys read at send time."
)


@catalog_app.command("import")
def catalog_import(
    catalog: Annotated[str, typer.Argument(help="The catalog's name, e.g. products.")],
    file: Annotated[
        Path,
        typer.Argument(help="A .csv (a header row names the fields, one is id) or .jsonl file."),
    ],
) -> None:
    """Insert or replace the file's items in DATABASE_URL, all in one transaction: a
    file with a bad line (named file:line) changes nothing."""
    from journeyman.messaging import catalogs

    try:
        catalogs.check_name(catalog)
        items = catalogs.read_file(file)
    except catalogs.CatalogError as exc:
        _fail(str(exc))
    with migrated_database() as db, db.session() as session:
        catalogs.load(session, {catalog: items})
    typer.echo(f"{_count(len(items), 'item')} upserted into catalog {catalog}")
