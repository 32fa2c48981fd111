"""Readable plain text from an HTML email, for its text part when the template has no
`email.txt` (journeyman/messaging/rendering.py).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK_TAGS = frozenset(
    "address article aside blockquote center dd div dl dt footer h1 h2 h3 h4 h5 h6 "  # noqa: SIM905
    "header hr main nav ol p pre section table ul".split()
)
_SKIPPED_TAGS = frozenset({"head", "script", "style", "template", "title"})
_VOID_TAGS = frozenset(
    "area base br col embed hr img input link meta param source track wbr".split()  # noqa: SIM905
)
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u034f\u00ad\ufeff"), None)


def html_to_text(document: str) -> str:
    """Readable plain text from an HTML email: no tags, links as "text (url)", hidden
    elements (preheader, `display: none`) left out, whitespace collapsed, paragraphs
    separated by one blank line."""
    parser = _TextParser()
    parser.feed(document)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    text: list[str] = []
    blank = False
    for line in lines:
        if line:
            if blank and text:
                text.append("")
            text.append(line)
            blank = False
        else:
            blank = True
    return "\n".join(text)


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._links: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_tag is not None:
            self._skip_depth += tag == self._skip_tag
            return
        attributes = {name: value or "" for name, value in attrs}
        if tag in _SKIPPED_TAGS or _hidden(attributes.get("style", "")):
            if tag not in _VOID_TAGS:
                self._skip_tag, self._skip_depth = tag, 1
            return
        if tag in ("br", "tr"):
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        if tag == "a":
            self._links.append((attributes.get("href", "").strip(), len(self.parts)))
        elif tag == "img" and attributes.get("alt", "").strip():
            self.parts.append(f" {attributes['alt'].strip()} ")

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            self._skip_depth -= tag == self._skip_tag
            if self._skip_depth == 0:
                self._skip_tag = None
            return
        if tag == "a" and self._links:
            href, start = self._links.pop()
            label = " ".join("".join(self.parts[start:]).split())
            if href and not href.startswith("#") and href != label:
                self.parts.append(f" ({href})" if label else href)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip_tag is None:
            self.parts.append(re.sub(r"\s+", " ", data.translate(_INVISIBLE)))


def _hidden(style: str) -> bool:
    compact = "".join(style.lower().split())
    return "display:none" in compact or "mso-hide:all" in compact
