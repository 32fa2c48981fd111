"""The published JSON Schema: current, valid, and in agreement with the contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from journeyman.dsl.schema import SCHEMA_PATH, journey_json_schema, schema_text
from tests.dsl.conftest import EXAMPLE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(journey_json_schema())


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def test_committed_schema_equals_the_generated_one() -> None:
    committed = (ROOT / SCHEMA_PATH).read_text()

    assert committed == schema_text(), (
        f"{SCHEMA_PATH} is stale; regenerate it with: .venv/bin/python -c "
        "'import sys; from journeyman.dsl.schema import schema_text; "
        f"sys.stdout.write(schema_text())' > {SCHEMA_PATH}"
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = journey_json_schema()

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("urn:journeyman:")
    assert schema["title"] == "Journeyman journey"


def test_the_contract_example_validates(validator: jsonschema.Draft202012Validator) -> None:
    assert list(validator.iter_errors(example())) == []


def test_every_field_an_editor_offers_has_a_description() -> None:
    schema = journey_json_schema()
    models = {"Journey": schema, **schema["$defs"]}
    undescribed = [
        f"{model}.{name}"
        for model, definition in models.items()
        for name, prop in definition.get("properties", {}).items()
        if "description" not in prop
        and not any("description" in option for option in prop.get("anyOf", []))
    ]

    assert undescribed == []


def test_unknown_field_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    journey = example()
    journey["nmae"] = "typo"

    assert not validator.is_valid(journey)


def test_misspelt_duration_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    journey = example()
    journey["steps"][0]["wait"] = "1hour"

    assert not validator.is_valid(journey)


def test_percentage_without_percent_sign_is_rejected(
    validator: jsonschema.Draft202012Validator,
) -> None:
    journey = example()
    journey["entry"]["holdout"] = 0.5

    assert not validator.is_valid(journey)


def test_step_with_two_actions_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    journey = example()
    journey["steps"][0]["end"] = True

    assert not validator.is_valid(journey)


def test_wait_until_a_clock_time_is_accepted(validator: jsonschema.Draft202012Validator) -> None:
    journey = example()
    journey["steps"][0]["wait"] = {"until": "09:00"}

    assert validator.is_valid(journey)


def test_schema_defaults_are_written_as_in_a_journey_file() -> None:
    entry = journey_json_schema()["$defs"]["Entry"]["properties"]

    assert entry["reentry"]["default"] == "never"
    assert entry["holdout"]["default"] == "0%"


def test_committed_schema_is_json_with_sorted_keys() -> None:
    text = (ROOT / SCHEMA_PATH).read_text()

    assert json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text
