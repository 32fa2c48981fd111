"""Phone numbers as Twilio takes them and inbound texts name them: E.164 (`+15035550142`).

Profiles arrive with numbers written every way people write them (`(503) 555-0142`,
`+33 6 12 34 56 78`, `0033612345678`). `identify` stores each in E.164, so that a text
reaches it, an inbound STOP from it finds its profile, and one person's number written
two ways is one number. A number without a country code belongs to the country
JOURNEYMAN_PHONE_REGION names (an ISO 3166 code such as `US` or `FR`); without that
setting it cannot be placed and the request says so. Numbers are checked for a possible
length in their country, not against the numbering plan: new and test ranges (the US
`555-01xx`) are accepted.
"""

from __future__ import annotations

import phonenumbers

REGION_SETTING = "JOURNEYMAN_PHONE_REGION"


def known_region(region: str) -> bool:
    return region.upper() in phonenumbers.SUPPORTED_REGIONS


def to_e164(raw: str, region: str | None) -> str:
    """`raw` in E.164; ValueError saying what is wrong with it."""
    text = raw.strip()
    if region is None and text.startswith("00"):
        text = "+" + text[2:]  # the international prefix of most countries
    if not text.startswith("+") and region is None:
        raise ValueError(
            f"{raw!r} has no country code: send it in E.164 form (+ country code and number,"
            f" such as +15035550142), or set {REGION_SETTING} to the country of such numbers"
        )
    try:
        # With a region, its own international prefix (00, 011) is understood too.
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        raise ValueError(f"{raw!r} is not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"{raw!r} is not a phone number: it has too few or too many digits")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
