"""Turn whatever a ticket column holds into one line of plain, normalized text."""

from __future__ import annotations

import re
import sys
import unicodedata
from html.parser import HTMLParser

from pandas import isna


def _invisible_characters() -> re.Pattern[str]:
    """A character class of the control (Cc), format (Cf) and surrogate (Cs) code points, except whitespace."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) in ("Cc", "Cf", "Cs") and not char.isspace():
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    # Ranges rather than 2,000 single characters: re matches a short class of ranges ten times faster.
    char_class = "".join(f"{re.escape(chr(first))}-{re.escape(chr(last))}" for first, last in ranges)
    return re.compile(f"[{char_class}]")


_INVISIBLE = _invisible_characters()
# Formatting tags that sit inside words ("zhang<b>@</b>qq.com"); every other tag separates words.
_INLINE_TAGS = frozenset("a abbr b code em font i mark s small span strong sub sup u".split())
_HTML_TAG_NAME = re.compile(r"[a-z][a-z0-9]*")


def decode_bytes(raw: bytes) -> str:
    """Decode as UTF-8, else GB18030 (what older Chinese systems write), else UTF-8 with U+FFFD."""
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("utf-8", errors="replace")


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML fragment, without script and style contents."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not _HTML_TAG_NAME.fullmatch(tag):
            # "<zhang@qq.com>" is text that happens to sit in angle brackets, not a tag.
            self.parts.append(self.get_starttag_text() or "")
        elif tag in ("script", "style"):
            self._skipping = True
        elif tag not in _INLINE_TAGS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._skipping = False

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skipping = False
        elif tag not in _INLINE_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """Text content of an HTML fragment: tags removed, script/style dropped, entities unescaped."""
    if "<" not in text and "&" not in text:
        return text
    extractor = _TextExtractor()
    extractor.feed(text)
    extractor.close()
    return "".join(extractor.parts)


def normalize_text(value: object) -> str:
    """One line of clean text: decoded, HTML stripped, NFKC-normalized, invisible characters removed,
    whitespace collapsed to single spaces and trimmed. None gives "". Emoji and rare CJK are kept.

    HTML is stripped before NFKC so that text decoded from entities is normalized too.
    """
    if value is None or (not isinstance(value, (str, bytes, bytearray, memoryview)) and isna(value)):
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = decode_bytes(bytes(value))
    else:
        text = value if isinstance(value, str) else str(value)  # a number in a text column is still text
    text = unicodedata.normalize("NFKC", strip_html(_remove_invisible(text)))
    # Entities and NFKC can produce invisible characters again, e.g. "&#8203;" (zero-width space).
    return " ".join(_remove_invisible(text).split())


def _remove_invisible(text: str) -> str:
    # isprintable() is a fast C check that is true for most texts, which then have nothing to remove.
    return text if text.isprintable() else _INVISIBLE.sub("", text)


def _continues_previous(char: str) -> bool:
    """Whether `char` belongs with the character before it: a combining mark, variation selector,
    emoji skin tone or joiner."""
    return unicodedata.category(char) in ("Mn", "Mc", "Me") or char == "\u200d" or "\U0001f3fb" <= char <= "\U0001f3ff"


def truncate_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Cut `text` to at most `max_chars` code points, returning (text, was_truncated).

    The cut moves back (a few code points at most) rather than split a base character from its
    combining marks, and trailing whitespace left by the cut is dropped.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if len(text) <= max_chars:
        return text, False
    cut = max_chars
    # Step back over the combining sequence the cut would split, but never more than a few code points.
    while cut > max(max_chars - 8, 1) and (_continues_previous(text[cut]) or text[cut - 1] == "\u200d"):
        cut -= 1
    return text[:cut].rstrip(), True
