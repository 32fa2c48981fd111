"""`validate` against the project's catalog schemas: `catalogs/<name>.yaml`.

A schema names a catalog's fields (and, for the reader, their kinds):

    # catalogs/products.yaml
    fields:
      name: text
      price: number
      stock: number
      image_url: text

When the project has schema files, every `catalog('<name>', ...)` a journey or one of
its templates calls must name a catalog with a schema, and every field read from the
item (`catalog('products', id).price`; in a template also through a variable set from
it, `{% set item = catalog(...) %}{{ item.price }}`, or a loop over
`viewed_products()`) must be in it: else an error at file:line. Without schema files
nothing is checked. Pure: reads the files it is given, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, nodes

from journeyman.dsl.compiler import Compiled
from journeyman.dsl.errors import Problem
from journeyman.dsl.evaluate import subtrees
from journeyman.dsl.expressions import ExpressionSyntaxError, compile_expression
from journeyman.dsl.loader import YamlSyntaxError, load_with_positions, position_of

KINDS = ("text", "number", "boolean", "list", "object", "date", "any")
# Fields every item has: its id, and on a viewed product, when it was viewed.
ALWAYS = frozenset({"id"})
VIEWED_FIELDS = frozenset({"viewed_at"})
DEFAULT_VIEWED_CATALOG = "products"


def load_schemas(catalogs_dir: Path) -> tuple[dict[str, frozenset[str]], list[Problem]]:
    """Each schema's fields by catalog name, and the problems of the schema files."""
    schemas: dict[str, frozenset[str]] = {}
    problems: list[Problem] = []
    if not catalogs_dir.is_dir():
        return schemas, problems
    for path in sorted([*catalogs_dir.glob("*.yaml"), *catalogs_dir.glob("*.yml")]):
        name = str(path)
        try:
            data, positions = load_with_positions(path.read_text(encoding="utf-8"))
        except YamlSyntaxError as exc:
            problems.append(Problem(name, exc.line, exc.column, exc.message))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(name, 1, 1, f"cannot read the schema: {exc}"))
            continue
        fields = data.get("fields") if isinstance(data, dict) else None
        if isinstance(fields, list) and all(isinstance(f, str) for f in fields):
            schemas[path.stem] = frozenset(fields) | ALWAYS
            continue
        if not isinstance(fields, dict):
            problems.append(
                Problem(name, 1, 1, "a catalog schema has `fields:`, a mapping of field to kind")
            )
            continue
        for field_name, kind in fields.items():
            if kind not in KINDS:
                line, column = position_of(positions, ("fields", field_name))
                problems.append(
                    Problem(name, line, column, f"kind {kind!r}: one of {', '.join(KINDS)}")
                )
        schemas[path.stem] = frozenset(str(f) for f in fields) | ALWAYS
    return schemas, problems


def catalog_problems(
    compiled: list[Compiled], catalogs_dir: Path, templates_dir: Path
) -> list[Problem]:
    """Catalog names and fields the journeys and their templates use that the schemas
    in `catalogs_dir` do not have; nothing when the folder has no schema."""
    schemas, problems = load_schemas(catalogs_dir)
    if not schemas and not problems:
        return []
    checker = _Checker(schemas, catalogs_dir)
    seen_templates: set[str] = set()
    for c in compiled:
        problems += checker.journey(c.path)
        for relative, source in sorted(c.templates.items()):
            if relative in seen_templates:
                continue
            seen_templates.add(relative)
            problems += checker.template(templates_dir / relative, source)
    return sorted(set(problems))


class _Checker:
    def __init__(self, schemas: dict[str, frozenset[str]], catalogs_dir: Path) -> None:
        self.schemas = schemas
        self.catalogs_dir = catalogs_dir

    def _name(self, catalog: str) -> str | None:
        """Why `catalog` cannot be used, or None."""
        if catalog in self.schemas:
            return None
        known = ", ".join(sorted(self.schemas)) or "none"
        return (
            f"catalog {catalog!r} has no schema {self.catalogs_dir / catalog}.yaml "
            f"(catalogs with one: {known})"
        )

    def _field(self, catalog: str, field: str, extra: frozenset[str] = frozenset()) -> str | None:
        fields = self.schemas.get(catalog)
        if fields is None or field in fields or field in extra:
            return None
        return (
            f"catalog {catalog!r} has no field {field!r} in {self.catalogs_dir / catalog}.yaml "
            f"(fields: {', '.join(sorted(fields))})"
        )

    # -- journeys ---------------------------------------------------------------------

    def journey(self, path: Path) -> list[Problem]:
        try:
            data, positions = load_with_positions(path.read_text(encoding="utf-8"))
        except (YamlSyntaxError, OSError, UnicodeDecodeError):
            return []  # compiling reported it
        found = []
        for loc, text in _strings(data, ()):
            if "catalog(" not in text and "viewed_products(" not in text:
                continue
            try:
                tree = compile_expression(text)
            except ExpressionSyntaxError:
                continue
            line, column = position_of(positions, loc)
            for message in self._tree(tree):
                found.append(Problem(str(path), line, column, message))
        return found

    def _tree(self, tree: Any) -> Iterator[str]:
        for node in subtrees(tree):
            if node[0] == "call" and node[1] == "catalog" and node[2]:
                name = _literal(node[2][0])
                if isinstance(name, str) and (problem := self._name(name)):
                    yield problem
            if node[0] == "attr" and _is_call(node[1], "catalog") and node[1][2]:
                name = _literal(node[1][2][0])
                if isinstance(name, str) and (problem := self._field(name, node[2])):
                    yield problem

    # -- templates --------------------------------------------------------------------

    def template(self, path: Path, source: str) -> list[Problem]:
        try:
            tree = Environment().parse(source)
        except TemplateSyntaxError:
            return []  # compiling reported it
        variables: dict[str, tuple[str, frozenset[str]]] = {}
        for assign in tree.find_all(nodes.Assign):
            target, value = assign.target, assign.node
            catalog = _template_catalog(value)
            if isinstance(target, nodes.Name) and catalog is not None:
                variables[target.name] = (catalog, frozenset())
        for loop in tree.find_all(nodes.For):
            catalog = _viewed_catalog(loop.iter)
            if isinstance(loop.target, nodes.Name) and catalog is not None:
                variables[loop.target.name] = (catalog, VIEWED_FIELDS)
        found: list[Problem] = []
        for call in tree.find_all(nodes.Call):
            catalog = _template_catalog(call)
            if catalog is not None and (problem := self._name(catalog)):
                found.append(Problem(str(path), call.lineno, 1, problem))
            viewed = _viewed_catalog(call)
            if viewed is not None and (problem := self._name(viewed)):
                found.append(Problem(str(path), call.lineno, 1, problem))
        for getattr_node in tree.find_all(nodes.Getattr):
            owner = getattr_node.node
            if isinstance(owner, nodes.Call) and (catalog := _template_catalog(owner)):
                problem = self._field(catalog, getattr_node.attr)
            elif isinstance(owner, nodes.Name) and owner.name in variables:
                catalog, extra = variables[owner.name]
                problem = self._field(catalog, getattr_node.attr, extra)
            else:
                continue
            if problem:
                found.append(Problem(str(path), getattr_node.lineno, 1, problem))
        return found


def _strings(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))


def _literal(node: Any) -> Any:
    return node[1] if isinstance(node, list) and node and node[0] == "lit" else None


def _is_call(node: Any, name: str) -> bool:
    return isinstance(node, list) and len(node) > 1 and node[0] == "call" and node[1] == name


def _template_catalog(node: nodes.Node) -> str | None:
    """The catalog a `catalog('name', ...)` call in a template reads, if written as text."""
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "catalog"
        and node.args
        and isinstance(node.args[0], nodes.Const)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def _viewed_catalog(node: nodes.Node) -> str | None:
    """The catalog a `viewed_products(...)` call joins with (`catalog=`, else products)."""
    if not (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "viewed_products"
    ):
        return None
    for keyword in node.kwargs:
        if keyword.key == "catalog":
            value = keyword.value
            return value.value if isinstance(value, nodes.Const) else None
    return DEFAULT_VIEWED_CATALOG
