"""A webhook step's URL: the values put into it are percent-encoded.

`url: "https://crm.example.com/contacts/{{ profile.id }}"` with a customer id of
`../admin` calls `/contacts/..%2Fadmin`, never `/admin`: each `{{ }}` value is encoded
whole (`/`, `?`, `#`, `&`, `=` included), so it stays one path segment or one query
value. Only a value that opens the URL (`"{{ event.callback }}/done"`, nothing written
before it) is taken as it is: it is the address itself, chosen by the journey's author.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from journeyman.dsl.evaluate import FILTERS, Node, evaluate


def evaluate_url(node: Node, names: Mapping[str, Any]) -> str:
    """The URL `node` (a compiled text value) makes for `names`, values encoded."""
    to_text = FILTERS["string"]
    if node[0] != "concat":
        return str(to_text(evaluate(node, names)))
    parts: list[str] = []
    for index, part in enumerate(node[1]):
        if part[0] == "lit" and isinstance(part[1], str):
            parts.append(part[1])
            continue
        value = str(to_text(evaluate(part, names)))
        parts.append(value if index == 0 else quote(value, safe=""))
    return "".join(parts)
