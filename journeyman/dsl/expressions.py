"""Compile Jinja2 expression text into the JSON tree that `evaluate` runs.

Jinja2's own parser reads the text, so the syntax is exactly Jinja2's; we keep the
part of it that makes sense for conditions and values (no statements, no method calls,
no attribute access to Python internals) and reject the rest with a message. Values
may embed expressions as `"Hello {{ profile.first_name }}"`.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from journeyman.dsl.evaluate import (
    CATALOG_FUNCTIONS,
    CUSTOMER_CLOCK_FUNCTIONS,
    FILTERS,
    HISTORY_FUNCTIONS,
    PURE_FUNCTIONS,
    SECRET_FUNCTIONS,
    TESTS,
    Node,
    names_used,
    subtrees,
)
from journeyman.dsl.sequences import FILTER_ARGUMENT, TEST_ARGUMENT

# Names an expression may read; `today` is the customer's local date.
KNOWN_NAMES = frozenset({"event", "trigger", "profile", "journey", "now", "today", "steps"})
# What `steps.<send step id>` holds once that step ran (DSL v2).
SEND_RESULT_FIELDS = ("channel", "outcome", "reason")
FUNCTIONS = (
    frozenset(PURE_FUNCTIONS)
    | frozenset(HISTORY_FUNCTIONS)
    | frozenset(CUSTOMER_CLOCK_FUNCTIONS)
    | frozenset(SECRET_FUNCTIONS)
    | frozenset(CATALOG_FUNCTIONS)
)
# What only an activity can evaluate: the profile, the history, the customer's clock,
# secrets, the catalogs.
ACTIVITY_NAMES = frozenset(
    {
        "profile",
        "today",
        *HISTORY_FUNCTIONS,
        *CUSTOMER_CLOCK_FUNCTIONS,
        *SECRET_FUNCTIONS,
        *CATALOG_FUNCTIONS,
    }
)

_ENV = SandboxedEnvironment()

_BINOPS = {
    nodes.Add: "add",
    nodes.Sub: "sub",
    nodes.Mul: "mul",
    nodes.Div: "div",
    nodes.FloorDiv: "floordiv",
    nodes.Mod: "mod",
    nodes.Pow: "pow",
}


# Trees are converted, checked and evaluated recursively; far deeper than any condition
# a marketer writes, and far short of Python's recursion limit.
MAX_DEPTH = 100
_TOO_DEEP = f"expression is nested more than {MAX_DEPTH} levels deep"


class ExpressionSyntaxError(ValueError):
    """Text that is not an expression we can run; the message says why."""


def compile_expression(text: str) -> Node:
    """`"event.properties.total >= 20"` to its tree; ExpressionSyntaxError if it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionSyntaxError("expected an expression, got an empty value")
    return _copy(_expression_tree(text.strip()))


# Trees shared by every compile of this process, keyed by the expression's text: the
# same conditions recur across journeys, and a `dev` recompiles them on every save.
# Jinja2's parser is most of what compiling an expression costs. Only trees are kept
# (an error is found again), and each caller gets a copy of its own.
_TREES = 4096


@functools.lru_cache(maxsize=_TREES)
def _expression_tree(source: str) -> Node:
    if source.startswith("{{") and source.endswith("}}") and source.count("{{") == 1:
        source = source[2:-2]
    try:
        parser = _ENV._parse(f"{{{{ {source} }}}}", None, None)  # type: ignore[attr-defined]
        body = parser.body
    except TemplateSyntaxError as exc:
        message = (exc.message or "").replace("end of print statement", "end of expression")
        raise ExpressionSyntaxError(f"expression does not parse: {message}") from None
    except SyntaxError as exc:  # a number in other digits than 0-9 (`٣.5`), from Jinja2's lexer
        raise ExpressionSyntaxError(f"expression does not parse: {exc.msg}") from None
    except RecursionError:
        raise ExpressionSyntaxError(_TOO_DEEP) from None
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        raise ExpressionSyntaxError("expected a single expression")
    return _tree(body[0].nodes[0])


def _copy(tree: Any) -> Any:
    """A copy of a tree's lists and dicts (its leaves are immutable)."""
    if isinstance(tree, list):
        return [_copy(item) for item in tree]
    if isinstance(tree, dict):
        return {key: _copy(item) for key, item in tree.items()}
    return tree


def compile_value(value: Any) -> Node:
    """A literal, or a string with `{{ ... }}` parts, to a tree that yields the value.

    `"{{ cart.total }}"` alone keeps the expression's type (a number stays a number);
    text around expressions makes a string.
    """
    if isinstance(value, dict):
        return ["dict", [[["lit", k], compile_value(v)] for k, v in value.items()]]
    if isinstance(value, list):
        return ["list", [compile_value(v) for v in value]]
    if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
        return ["lit", value]
    return _copy(_value_tree(value))


@functools.lru_cache(maxsize=_TREES)
def _value_tree(value: str) -> Node:
    try:
        template = _ENV.parse(value)
    except TemplateSyntaxError as exc:
        raise ExpressionSyntaxError(f"template value does not parse: {exc.message}") from None
    except SyntaxError as exc:
        raise ExpressionSyntaxError(f"template value does not parse: {exc.msg}") from None
    except RecursionError:
        raise ExpressionSyntaxError(_TOO_DEEP) from None
    parts: list[Node] = []
    for statement in template.body:
        if not isinstance(statement, nodes.Output):
            raise ExpressionSyntaxError("only {{ ... }} may appear in values, not {% ... %}")
        for item in statement.nodes:
            if isinstance(item, nodes.TemplateData):
                parts.append(["lit", item.data])
            else:
                parts.append(_tree(item))
    if len(parts) == 1 and parts[0][0] != "lit":
        return parts[0]
    return ["concat", parts]


def _tree(node: nodes.Node) -> Node:
    """The converted tree of one expression, refused when it is nested too deeply."""
    try:
        tree = _convert(node)
    except RecursionError:
        raise ExpressionSyntaxError(_TOO_DEEP) from None
    if _depth(tree) > MAX_DEPTH:
        raise ExpressionSyntaxError(_TOO_DEEP)
    return tree


def _depth(tree: Node) -> int:
    """How many lists deep the tree goes, counted without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(tree, 1)]
    while pending:
        item, level = pending.pop()
        deepest = max(deepest, level)
        children = item if isinstance(item, list) else item.values()
        pending.extend((c, level + 1) for c in children if isinstance(c, list | dict))
    return deepest


def _convert(node: nodes.Node) -> Node:
    """The tree of a Jinja2 expression node, by the converter of its kind."""
    for kind in type(node).__mro__:
        converter = _CONVERTERS.get(kind)
        if converter is not None:
            return converter(node)
    raise ExpressionSyntaxError(f"{type(node).__name__} is not supported in expressions")


def _getattr(node: nodes.Getattr) -> Node:
    if node.attr.startswith("_"):
        raise ExpressionSyntaxError(f"attribute {node.attr!r} is not allowed")
    return ["attr", _convert(node.node), node.attr]


def _getitem(node: nodes.Getitem) -> Node:
    if isinstance(node.arg, nodes.Slice):
        raise ExpressionSyntaxError("slices are not supported in expressions")
    return ["item", _convert(node.node), _convert(node.arg)]


def _keywords(node: nodes.Call | nodes.Filter) -> dict[Any, Node]:
    return {kw.key: _convert(kw.value) for kw in node.kwargs}


def _call(node: nodes.Call) -> Node:
    if not isinstance(node.node, nodes.Name):
        raise ExpressionSyntaxError("only functions can be called: " + ", ".join(sorted(FUNCTIONS)))
    if node.dyn_args or node.dyn_kwargs:
        raise ExpressionSyntaxError("*args and **kwargs are not supported")
    name = node.node.name
    _check_call(name, node)
    return ["call", name, [_convert(a) for a in node.args], _keywords(node)]


def _filter(node: nodes.Filter) -> Node:
    _check_filter(node)
    if node.node is None:
        raise ExpressionSyntaxError("a filter needs a value")
    return [
        "filter",
        node.name,
        _convert(node.node),
        [_convert(a) for a in node.args],
        _keywords(node),
    ]


def _test(node: nodes.Test) -> Node:
    if node.name not in TESTS:
        raise ExpressionSyntaxError(_unknown("test", node.name, TESTS))
    return ["test", node.name, _convert(node.node), [_convert(a) for a in node.args]]


def _binary(name: str) -> Callable[[Any], Node]:
    return lambda node: ["bin", name, _convert(node.left), _convert(node.right)]


# The converter of each kind of Jinja2 node an expression may hold (a subclass uses its
# parent's); any other kind is refused.
_CONVERTERS: dict[type, Callable[[Any], Node]] = {
    nodes.Const: lambda node: ["lit", node.value],
    nodes.Name: lambda node: ["name", node.name],
    nodes.Getattr: _getattr,
    nodes.Getitem: _getitem,
    nodes.Compare: lambda node: [
        "cmp",
        _convert(node.expr),
        [[operand.op, _convert(operand.expr)] for operand in node.ops],
    ],
    nodes.And: lambda node: ["and", _convert(node.left), _convert(node.right)],
    nodes.Or: lambda node: ["or", _convert(node.left), _convert(node.right)],
    nodes.Not: lambda node: ["not", _convert(node.node)],
    nodes.Neg: lambda node: ["neg", _convert(node.node)],
    nodes.Pos: lambda node: ["pos", _convert(node.node)],
    nodes.Concat: lambda node: ["concat", [_convert(n) for n in node.nodes]],
    **{kind: _binary(name) for kind, name in _BINOPS.items()},
    nodes.List: lambda node: ["list", [_convert(n) for n in node.items]],
    nodes.Tuple: lambda node: ["list", [_convert(n) for n in node.items]],
    nodes.Dict: lambda node: [
        "dict",
        [[_convert(pair.key), _convert(pair.value)] for pair in node.items],
    ],
    nodes.CondExpr: lambda node: [
        "if",
        _convert(node.test),
        _convert(node.expr1),
        _convert(node.expr2) if node.expr2 is not None else None,
    ],
    nodes.Call: _call,
    nodes.Filter: _filter,
    nodes.Test: _test,
}


def _unknown(kind: str, name: str, known: Any) -> str:
    """`unknown filter 'mapp'; did you mean 'map'?`, or the list of what there is."""
    hint = difflib.get_close_matches(name, sorted(known), n=1)
    if hint:
        return f"unknown {kind} {name!r}; did you mean {hint[0]!r}?"
    return f"unknown {kind} {name!r}; available: {', '.join(sorted(known))}"


def _check_filter(node: nodes.Filter) -> None:
    """The filter exists, and so do the tests and filters its arguments name."""
    if node.name not in FILTERS:
        if node.name in FUNCTIONS:
            raise ExpressionSyntaxError(
                f"{node.name} is a function, not a filter: write {node.name}(...)"
            )
        raise ExpressionSyntaxError(_unknown("filter", node.name, FILTERS))
    for position, kind, known in (
        (TEST_ARGUMENT.get(node.name), "test", TESTS),
        (FILTER_ARGUMENT.get(node.name), "filter", FILTERS),
    ):
        if position is None or len(node.args) <= position:
            continue
        named = node.args[position]
        if (
            isinstance(named, nodes.Const)
            and isinstance(named.value, str)
            and named.value not in known
        ):
            raise ExpressionSyntaxError(f"{node.name}: " + _unknown(kind, named.value, known))
    if node.name in ("selectattr", "rejectattr") and not node.args:
        raise ExpressionSyntaxError(
            f"{node.name} needs the attribute's name: {node.name}('price', 'lt', 10)"
        )


def _check_call(name: str, node: nodes.Call) -> None:
    """The function exists and is called as it can be: refused with how to call it."""
    if name not in FUNCTIONS:
        raise ExpressionSyntaxError(_unknown_function(name))
    usage = _USAGES.get(name)
    misused = usage is not None and usage[0](node)
    # A history function's own usage says what is wrong with its `within=`, if anything.
    if usage is not None and misused and name in HISTORY_FUNCTIONS:
        raise ExpressionSyntaxError(usage[1])
    for keyword in node.kwargs:
        if keyword.key == "within" and not _may_be_duration(keyword.value):
            raise ExpressionSyntaxError(
                f"{name}(within=...) takes a duration such as days(30), hours(6) or minutes(15)"
            )
    if usage is not None and misused:
        raise ExpressionSyntaxError(usage[1])
    if name == "secret":
        from journeyman.messaging.journey_secrets import check_name

        problem = check_name(node.args[0].value)  # type: ignore[attr-defined]
        if problem:
            raise ExpressionSyntaxError(problem)
    if name in (*HISTORY_FUNCTIONS, "catalog") and node.args and not _is_text(node.args[0]):
        what = "catalog name" if name == "catalog" else "event name"
        raise ExpressionSyntaxError(f"{name}() takes the {what} as a quoted string")


def _unknown_function(name: str) -> str:
    if name in FILTERS:
        return f"{name} is a filter, not a function: write value | {name}"
    hint = difflib.get_close_matches(name, sorted(FUNCTIONS), n=1)
    return f"unknown function {name}()" + (
        f"; did you mean {hint[0]}()?" if hint else f"; available: {', '.join(sorted(FUNCTIONS))}"
    )


def _is_text(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Const) and isinstance(node.value, str)


def _arity(count: int, keywords: frozenset[str] = frozenset()) -> Callable[[nodes.Call], bool]:
    """Whether a call has other than `count` arguments, or keywords beyond `keywords`."""
    return lambda node: len(node.args) != count or any(kw.key not in keywords for kw in node.kwargs)


# For each function with rules: whether a call breaks them, and how to call it instead.
_USAGES: dict[str, tuple[Callable[[nodes.Call], bool], str]] = {
    "last": (
        lambda node: len(node.args) != 1 or any(kw.key == "within" for kw in node.kwargs),
        "last() takes one event name and optionally property filters: "
        "last('order_placed', store='paris')",
    ),
    "count": (
        lambda node: len(node.args) != 1,
        "count() takes an event name, optionally within= and property filters: "
        "count('product_viewed', within=hours(24), sku=trigger.properties.sku)",
    ),
    "recent": (
        _arity(1, frozenset({"within", "limit"})),
        "recent() takes an event name and optionally within= and limit=: "
        "recent('product_viewed', within=days(7), limit=3)",
    ),
    **{
        unit: (_arity(1), f"{unit}() takes one number: {unit}(7)")
        for unit in ("days", "hours", "minutes")
    },
    "date": (_arity(1), "date() takes one value: date(profile.birthday)"),
    "local": (
        _arity(1),
        "local() takes a date and time: local(now).hour is the hour on the customer's clock",
    ),
    "anniversary": (
        _arity(1),
        "anniversary() takes a date: anniversary(profile.birthday) is true on its "
        "month and day, on the customer's clock",
    ),
    "secret": (
        lambda node: _arity(1)(node) or not _is_text(node.args[0]),
        "secret() takes the secret's name in quotes: secret('CRM_TOKEN')",
    ),
    "catalog": (
        _arity(2),
        "catalog() takes a catalog name and an id: "
        "catalog('products', trigger.properties.product_id)",
    ),
    "viewed_products": (
        lambda node: (
            len(node.args) > 1 or any(kw.key not in ("catalog", "within") for kw in node.kwargs)
        ),
        "viewed_products() takes how many and optionally catalog= and within=: "
        "viewed_products(3), viewed_products(3, catalog='products', within=days(7))",
    ),
}


def _may_be_duration(node: nodes.Node) -> bool:
    """False for what can never be a duration (a number, text, a list): `within=30` is
    30 what? Anything computed is checked when it is evaluated."""
    return not isinstance(node, nodes.Const | nodes.List | nodes.Tuple | nodes.Dict)


def unknown_names(tree: Node) -> list[str]:
    """Names the tree reads that no expression can ever see (a typo like `profle`)."""
    return sorted(n for n in names_used(tree) if n not in KNOWN_NAMES and n not in FUNCTIONS)


def needs_activity(tree: Node) -> bool:
    """True when the expression reads the profile, the history or the customer's clock,
    which only an activity may."""
    return bool(names_used(tree) & ACTIVITY_NAMES)


def step_references(tree: Node) -> list[tuple[str, str | None]]:
    """Each `steps.<id>` (with the field read after it, if any) the tree reads."""
    found: list[tuple[str, str | None]] = []

    def walk(item: Any, parent_field: str | None) -> None:
        if not isinstance(item, list) or not item:
            return
        if item[0] == "attr" and item[1] == ["name", "steps"]:
            found.append((item[2], parent_field))
            return
        if item[0] == "attr" and isinstance(item[1], list) and item[1][:1] == ["attr"]:
            inner = item[1]
            if inner[1] == ["name", "steps"]:
                found.append((inner[2], item[2]))
                return
        for child in item[1:] if isinstance(item[0], str) else item:
            if isinstance(child, dict):
                for value in child.values():
                    walk(value, None)
            else:
                walk(child, None)

    walk(tree, None)
    return found


def secrets_used(tree: Node) -> list[str]:
    """The names of the secrets the tree reads: `secret('CRM_TOKEN')`."""
    found: list[str] = []
    for node in subtrees(tree):
        if node[0] == "call" and node[1] == "secret" and node[2][:1]:
            argument = node[2][0]
            if argument[0] == "lit" and argument[1] not in found:
                found.append(argument[1])
    return found
