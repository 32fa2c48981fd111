"""`send.only_if`: the guard checked right before a message goes out.

The send activity evaluates it with the names of the moment (the catalogs as they are
now, after waits, quiet hours, caps and pacing). False skips the send; the reason keeps
the expression and the values it compared, so stats, the journey page and simulate say
why: `only_if false: catalog('products', trigger.properties.product_id).stock > 0
[catalog('products', trigger.properties.product_id).stock = 0]`. An expression that
cannot be evaluated fails the send with its error: it never counts as false.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from journeyman.dsl.evaluate import ExpressionError, evaluate

ONLY_IF_FALSE = "only_if false"
ONLY_IF_ERROR = "only_if error"
# A reason is shown in tables: long values are cut.
MAX_VALUE_CHARS = 80
MAX_VALUES = 6


@dataclass(frozen=True)
class Verdict:
    """A guard that stopped the send: the delivery's status and reason."""

    status: Literal["skipped", "failed"]
    reason: str


def check_only_if(text: str, tree: list[Any], names: Mapping[str, Any]) -> Verdict | None:
    """None when the guard holds (the send goes on); else what to record."""
    try:
        passed = bool(evaluate(tree, names))
    except ExpressionError as exc:
        return Verdict("failed", f"{ONLY_IF_ERROR}: {text}: {exc}")
    if passed:
        return None
    values = "; ".join(_values(tree, names))
    return Verdict("skipped", f"{ONLY_IF_FALSE}: {text}" + (f" [{values}]" if values else ""))


def _values(tree: list[Any], names: Mapping[str, Any]) -> Iterator[str]:
    """`operand = value` for each operand compared in the tree that is not a literal,
    and for each value tested on its own (`catalog(...) and ...`) that was falsy."""
    seen: set[str] = set()
    for operand, bare in _operands(tree):
        shown = unparse(operand)
        if shown is None or shown in seen or len(seen) >= MAX_VALUES:
            continue
        try:
            value = evaluate(operand, names)
        except ExpressionError as exc:
            seen.add(shown)
            yield f"{shown}: {exc}"
            continue
        if bare and value:
            continue  # it held: not why the guard is false
        seen.add(shown)
        yield f"{shown} = {_show(value)}"


def _operands(node: Any) -> Iterator[tuple[list[Any], bool]]:
    """(operand, tested on its own) for what the condition is made of."""
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        return
    kind = node[0]
    if kind == "cmp":
        for operand in [node[1], *(right for _, right in node[2])]:
            if isinstance(operand, list) and operand and operand[0] != "lit":
                yield operand, False
    elif kind in ("and", "or"):
        yield from _operands(node[1])
        yield from _operands(node[2])
    elif kind == "not":
        yield from _operands(node[1])
    elif kind in ("attr", "item", "name", "call"):
        yield node, True


def unparse(node: Any) -> str | None:
    """The text of a simple operand (names, attributes, items, calls, literals); None for
    anything else (the reason then shows only the expression)."""
    if not isinstance(node, list) or not node:
        return None
    kind = node[0]
    if kind == "lit":
        return repr(node[1]) if isinstance(node[1], str) else json.dumps(node[1], default=str)
    if kind == "name":
        return str(node[1])
    if kind == "attr":
        inner = unparse(node[1])
        return None if inner is None else f"{inner}.{node[2]}"
    if kind == "item":
        inner, key = unparse(node[1]), unparse(node[2])
        return None if inner is None or key is None else f"{inner}[{key}]"
    if kind == "call":
        args = [unparse(a) for a in node[2]]
        kwargs = {k: unparse(v) for k, v in node[3].items()}
        if any(a is None for a in args) or any(v is None for v in kwargs.values()):
            return None
        parts = [str(a) for a in args] + [f"{k}={v}" for k, v in kwargs.items()]
        return f"{node[1]}({', '.join(parts)})"
    return None


def _show(value: Any) -> str:
    if value is None:
        return "none"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
