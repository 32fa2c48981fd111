"""`validate` checks catalog names and fields against `catalogs/*.yaml` when the project
has schemas: in journey expressions (at the YAML's file:line:col) and in templates
(a lookup's field, a variable set from one, a loop over `viewed_products`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.settings import get_settings

JOURNEY = """\
id: restock
name: Restock
entry: {event: product_back_in_stock}
steps:
  - id: notify
    send:
      template: restock
      channels: [email]
      only_if: "catalog('products', trigger.properties.product_id).stok > 0"
  - id: other
    branch:
      - when: "catalog('prodcts', trigger.properties.product_id) != none"
        goto: done
      - goto: done
  - id: done
    end: true
"""

TEMPLATE = """\
{% set item = catalog('products', trigger.properties.product_id) %}
{% block subject %}{{ item.name }} is back{% endblock %}
{% block content %}
<p>{{ item.prise }}</p>
{% for p in viewed_products(3) %}{{ p.name }} {{ p.viewed_at }} {{ p.colour }}{% endfor %}
<p>{{ catalog('products', 'x').stock }}</p>
{% endblock %}
"""

SCHEMA = """\
fields:
  name: text
  price: number
  stock: number
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "journeys").mkdir()
    (tmp_path / "templates" / "restock").mkdir(parents=True)
    (tmp_path / "journeys" / "restock.yaml").write_text(JOURNEY)
    (tmp_path / "templates" / "restock" / "email.html").write_text(TEMPLATE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOURNEYS_DIR", str(tmp_path / "journeys"))
    monkeypatch.setenv("TEMPLATES_DIR", str(tmp_path / "templates"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/journeyman.db")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_fields_and_catalogs_missing_from_the_schemas_are_errors_at_file_line(project):
    (project / "catalogs").mkdir()
    (project / "catalogs" / "products.yaml").write_text(SCHEMA)
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1, result.output
    journey = project / "journeys" / "restock.yaml"
    template = project / "templates" / "restock" / "email.html"
    fields = "(fields: id, name, price, stock)"
    assert result.stdout.splitlines() == [
        f"{journey}:9:16: catalog 'products' has no field 'stok' in "
        f"catalogs/products.yaml {fields}",
        f"{journey}:12:15: catalog 'prodcts' has no schema catalogs/prodcts.yaml "
        "(catalogs with one: products)",
        f"{template}:4:1: catalog 'products' has no field 'prise' in "
        f"catalogs/products.yaml {fields}",
        f"{template}:5:1: catalog 'products' has no field 'colour' in "
        f"catalogs/products.yaml {fields}",
    ]


def test_without_schemas_nothing_is_checked(project):
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok restock version ")


def test_a_bad_schema_file_is_an_error_at_its_line(project):
    (project / "catalogs").mkdir()
    (project / "catalogs" / "products.yaml").write_text(
        textwrap.dedent(
            """\
            fields:
              name: text
              price: money
            """
        )
    )
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1
    assert (
        "catalogs/products.yaml:3:10: kind 'money': one of text, number, boolean, list, "
        "object, date, any" in result.stdout
    )
