"""How an SMS goes out: its encoding and the segments it is sent in (3GPP TS 23.038),
and the estimate `journeyman validate` shows for a template rendered with sample data
(`Renderer.sms_estimate`, journeyman/messaging/rendering.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]
GSM7: Encoding = "GSM-7"
UCS2: Encoding = "UCS-2"

# 3GPP TS 23.038 default alphabet (without the escape code itself) and its extension
# table, whose characters take two septets (escape + character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# Room per encoding: (in a single message, in each part of a long one).
_SMS_LIMITS: dict[str, tuple[int, int]] = {GSM7: (160, 153), UCS2: (70, 67)}


def _is_gsm7(char: str) -> bool:
    return char in GSM7_BASIC or char in GSM7_EXTENSION


def _sms_units(char: str, encoding: Encoding) -> int:
    """Room a character takes: two septets for an escape pair, two UTF-16 units for a
    surrogate pair, otherwise one."""
    if encoding == GSM7:
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def segment_size(encoding: str, segments: int) -> int:
    """Characters each segment holds in a text of `segments` segments: a single message
    holds more than each part of a long one, whose header says how to join the parts."""
    single, part = _SMS_LIMITS[encoding]
    return single if segments <= 1 else part


def sms_segments(text: str) -> tuple[Encoding, int]:
    """(encoding, number of segments) an SMS is sent as.

    GSM-7 when every character is in the GSM default alphabet or its extension table
    (extension characters such as € count two); 160 characters fit one message, and a
    longer one is sent in parts of 153. Otherwise UCS-2: 70, then parts of 67 UTF-16
    units. An escape pair or a surrogate pair is never split across parts.
    """
    encoding = GSM7 if all(_is_gsm7(c) for c in text) else UCS2
    sizes = [_sms_units(c, encoding) for c in text]
    single, part = _SMS_LIMITS[encoding]
    total = sum(sizes)
    if total <= single:
        return encoding, 1 if total else 0
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return encoding, segments


@dataclass(frozen=True)
class SmsEstimate:
    """How an SMS template comes out with sample data (`Renderer.sms_estimate`)."""

    path: str
    """The file rendered, e.g. "cart_reminder/sms.fr.txt"."""
    text: str
    """The sample message, names the sample lacked shown as sample text."""
    characters: int
    encoding: str  # an `Encoding`; the CLI extends its text when it shows it
    segments: int
    first_non_gsm: str | None
    """UCS-2 only: the first character outside the GSM-7 alphabet, the one to look for."""
    segments_in_gsm7: int | None
    """UCS-2 only: the segments it would take if those characters were GSM-7 ones."""
    spare: int
    """About how many characters more fit before the text takes another segment."""

    @property
    def segment_size(self) -> int:
        """Characters each of its segments holds."""
        return segment_size(self.encoding, self.segments)


def estimate(path: str, text: str) -> SmsEstimate:
    """The estimate for `text`, an SMS rendered from `path` with sample data."""
    encoding, segments = sms_segments(text)
    single, part = _SMS_LIMITS[encoding]
    units = sum(_sms_units(c, encoding) for c in text)
    spare = (single if segments <= 1 else part * segments) - units
    first_non_gsm, segments_in_gsm7 = None, None
    if encoding == UCS2:
        first_non_gsm = next(c for c in text if not _is_gsm7(c))
        segments_in_gsm7 = sms_segments("".join(c if _is_gsm7(c) else "?" for c in text))[1]
    return SmsEstimate(
        path=path,
        text=text,
        characters=len(text),
        encoding=encoding,
        segments=segments,
        first_non_gsm=first_non_gsm,
        segments_in_gsm7=segments_in_gsm7,
        spare=max(spare, 0),
    )
