"""Phone numbers to E.164: every way people write them, and what cannot be placed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from journeyman.customers.phones import to_e164
from journeyman.settings import Settings


@pytest.mark.parametrize(
    ("written", "region", "e164"),
    [
        ("+15035550142", None, "+15035550142"),
        ("+1 (503) 555-0142", None, "+15035550142"),
        ("(503) 555-0142", "US", "+15035550142"),
        ("503.555.0142", "us", "+15035550142"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("0033 6 12 34 56 78", None, "+33612345678"),  # 00, the prefix of most countries
        ("011 33 6 12 34 56 78", "US", "+33612345678"),  # the region's own prefix
        ("+44 (0)20 7946 0958", None, "+442079460958"),  # the trunk 0 dropped
        ("+15550100", None, "+15550100"),  # test ranges are possible, if not assigned
    ],
)
def test_numbers_are_written_in_e164(written: str, region: str | None, e164: str) -> None:
    assert to_e164(written, region) == e164


@pytest.mark.parametrize(
    ("written", "region", "message"),
    [
        ("503 555 0142", None, "'503 555 0142' has no country code"),
        ("call me", "US", "'call me' is not a phone number"),
        ("+1555000001", None, "'+1555000001' is not a phone number: it has too few or too many"),
        ("+1", None, "'+1' is not a phone number"),
    ],
)
def test_what_cannot_be_placed_is_an_error_saying_why(
    written: str, region: str | None, message: str
) -> None:
    with pytest.raises(ValueError) as error:
        to_e164(written, region)
    assert str(error.value).startswith(message)


def test_the_region_setting_is_a_country_phone_numbers_know() -> None:
    assert Settings(_env_file=None, JOURNEYMAN_PHONE_REGION="fr").phone_region == "FR"  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="'XX' is not a country code"):
        Settings(_env_file=None, JOURNEYMAN_PHONE_REGION="XX")  # type: ignore[call-arg]
