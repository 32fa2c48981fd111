"""Views filled from the rows and records they show."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

View = TypeVar("View", bound=BaseModel)


def view_of(model: type[View], source: object, **values: Any) -> View:
    """`model` with each field read from `source`'s attribute of the same name, unless
    `values` gives it (a field `source` lacks keeps its default)."""
    fields = {
        name: getattr(source, name)
        for name in model.model_fields
        if name not in values and hasattr(source, name)
    }
    return model.model_validate({**fields, **values})
