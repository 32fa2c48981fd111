"""`send.only_if` verdicts: true lets the send go, false says which values made it
false, an error is a failure with its message (never a false)."""

from __future__ import annotations

from typing import Any

from journeyman.dsl.expressions import compile_expression
from journeyman.messaging.guards import Verdict, check_only_if

ITEMS = {"boot": {"id": "boot", "stock": 0, "price": 90}, "lamp": {"id": "lamp", "stock": 3}}


def names(**trigger: Any) -> dict[str, Any]:
    return {
        "catalog": lambda name, ident: ITEMS.get(ident) if name == "products" else None,
        "viewed_products": lambda limit=3, catalog="products", within=None: [],
        "trigger": {"properties": trigger},
    }


def verdict(text: str, **trigger: Any) -> Verdict | None:
    return check_only_if(text, compile_expression(text), names(**trigger))


def test_a_true_guard_lets_the_send_go() -> None:
    assert verdict("catalog('products', trigger.properties.sku).stock > 0", sku="lamp") is None


def test_a_false_guard_shows_each_compared_value() -> None:
    text = "catalog('products', trigger.properties.sku).price < trigger.properties['old']"
    found = verdict(text, sku="boot", old=80)
    assert found == Verdict(
        "skipped",
        f"only_if false: {text} [catalog('products', trigger.properties.sku).price = 90; "
        "trigger.properties['old'] = 80]",
    )


def test_a_missing_item_tested_first_is_shown_as_none() -> None:
    text = (
        "catalog('products', trigger.properties.sku) and "
        "catalog('products', trigger.properties.sku).stock > 0"
    )
    found = verdict(text, sku="gone")
    assert found is not None and found.status == "skipped"
    assert found.reason.startswith(f"only_if false: {text} [")
    assert "catalog('products', trigger.properties.sku) = none" in found.reason


def test_an_item_that_held_is_not_listed_as_a_reason() -> None:
    text = (
        "catalog('products', trigger.properties.sku) and "
        "catalog('products', trigger.properties.sku).stock > 0"
    )
    found = verdict(text, sku="boot")
    assert found is not None
    assert found.reason.endswith("[catalog('products', trigger.properties.sku).stock = 0]")


def test_an_empty_list_is_false_and_shown() -> None:
    assert verdict("viewed_products(3)") == Verdict(
        "skipped", "only_if false: viewed_products(3) [viewed_products(3) = []]"
    )


def test_an_expression_error_fails_the_send_rather_than_skip_it() -> None:
    found = verdict("catalog('products', trigger.properties.sku).stock > 0", sku="gone")
    assert found is not None and found.status == "failed"
    assert found.reason.startswith("only_if error: catalog('products'")
    assert "is empty (none)" in found.reason
