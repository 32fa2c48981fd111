"""The JSON Schema of a journey file, for editors and for checks outside Python.

Generated from the pydantic model, so the two cannot drift; the copy committed at
`schema/journey.schema.json` is what journey files point at with

    # yaml-language-server: $schema=../schema/journey.schema.json

and a test keeps it equal to this output. The schema checks the shape of a file (fields,
types, spellings of durations and percentages); what only the compiler can know (step
targets, expression names, template files) is left to `journeyman validate`.
"""

from __future__ import annotations

import json
from typing import Any

from journeyman.dsl.model import Journey

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:journeyman:schema:journey:v1"
SCHEMA_PATH = "schema/journey.schema.json"


def journey_json_schema() -> dict[str, Any]:
    """The schema of one journey file (what the model accepts, not what it outputs)."""
    schema = Journey.model_json_schema(mode="validation")
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        **schema,
        "title": "Journeyman journey",
        "description": "One customer journey: who enters (entry), what happens to them "
        "(steps), and what ends it (goal, exit). See docs/journeys.md.",
    }


def schema_text() -> str:
    """The schema as committed: pretty, keys sorted, ending with a newline."""
    return json.dumps(journey_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
