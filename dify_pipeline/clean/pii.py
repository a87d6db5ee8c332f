"""Mask personal data (e-mail addresses, ID numbers, bank cards, phones) before text leaves the company.

Numbers are matched on their canonical form, not on a list of groupings: each maximal run of digits joined by
separators (spaces, dashes, dots, parentheses, zero-width characters; digits of any script, full-width
included) is cut into its groups, and the longest sequence of whole groups whose digits pass a check (ID
checksum, Luhn, phone rules) is masked, span and all. Phones of other countries in their national format come
from `phonenumbers`, which only sees texts that still hold a candidate after that.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

# -- the checks a value must pass: facts about the numbers, shared with the outgoing check ------------------

_ID_CHECK_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CODES = "10X98765432"
# First two digits of a resident ID: the province (GB/T 2260).
_PROVINCE_CODES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82".split()
)
# Card networks' first digits (ISO/IEC 7812): 3-9, and 22-27 for Mastercard's 2-series. Leaving out 0, 1, 20
# and 21 keeps date stamps (2024061510...) and Unix millisecond times (17184...) from passing for cards.
_CARD_PREFIX = re.compile(r"[3-9]|2[2-7]")
_CHINESE_MOBILE = re.compile(r"(?:0086|86)?1[3-9][0-9]{9}")
# Trunk 0, a 2-3 digit area code and a 7-8 digit number: 010-12345678, 0755 1234567.
_CHINESE_LANDLINE = re.compile(r"0[1-9][0-9]{8,10}")


def _is_real_date(year: int, month: int, day: int) -> bool:
    try:
        birth = datetime.date(year, month, day)
    except ValueError:
        return False
    return datetime.date(1900, 1, 1) <= birth <= datetime.date.today()


def id_check_character(first_17_digits: str) -> str:
    """The 18th character of a Chinese resident ID number (ISO 7064 MOD 11-2)."""
    total = sum(int(digit) * weight for digit, weight in zip(first_17_digits, _ID_CHECK_WEIGHTS))
    return _ID_CHECK_CODES[total % 11]


def is_valid_resident_id(number: str) -> bool:
    """An 18-character ID (ASCII digits, X last) with a province code, a real birth date and a correct check
    character, or a 15-digit legacy ID (no check character) with a province code and a real 19xx birth date."""
    number = number.upper()
    if number[:2] not in _PROVINCE_CODES:
        return False
    if len(number) == 18 and number[:17].isdigit():
        birth = (int(number[6:10]), int(number[10:12]), int(number[12:14]))
        return _is_real_date(*birth) and id_check_character(number[:17]) == number[17]
    if len(number) == 15 and number.isdigit():
        return _is_real_date(1900 + int(number[6:8]), int(number[8:10]), int(number[10:12]))
    return False


def luhn_check_digit(digits_without_check: str) -> str:
    """The Luhn check digit to append to `digits_without_check`."""
    total = 0
    for position, digit in enumerate(reversed(digits_without_check)):
        value = int(digit) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


def is_valid_bank_card(number: str) -> bool:
    """13 to 19 digits (anything else ignored), a card network's first digits and a valid Luhn check digit."""
    digits = "".join(char for char in number if char.isdigit())
    return (
        13 <= len(digits) <= 19
        and _CARD_PREFIX.match(digits) is not None
        and luhn_check_digit(digits[:-1]) == digits[-1]
    )


@lru_cache(maxsize=4096)
def is_valid_international_phone(number: str) -> bool:
    """A number written with its country code ("+44 20 7946 0958") that `phonenumbers` knows to be valid."""
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False


def is_chinese_phone(digits: str, glued_to_letters: bool = False) -> bool:
    """A Chinese mobile (optionally after 86 or 0086) or landline (with its trunk 0, or after 86), or an
    international number dialled with 00. A landline glued to Latin letters is an order number
    ("DD021234567890"); a mobile is not ("V13800138000" is how people write their WeChat)."""
    if _CHINESE_MOBILE.fullmatch(digits):
        return True
    if glued_to_letters:
        return False
    if _CHINESE_LANDLINE.fullmatch(digits) or (digits.startswith("86") and _CHINESE_LANDLINE.fullmatch("0" + digits[2:])):
        return True
    return digits.startswith("00") and 9 <= len(digits) <= 17 and is_valid_international_phone("+" + digits[2:])


# -- e-mail addresses (RFC 6531 local parts, IDNA domains) and their usual disguises --------------------------

# Letters and digits of any script (\w), combining marks of the scripts \w leaves out, and RFC 5322 atext.
_WORD = r"\w\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0900-\u0dff\u0e00-\u0eff\u1ab0-\u1aff"
_LOCAL_CHAR = rf"[{_WORD}!#$%&'*+/=?^`{{|}}~.-]"
_AT_SIGN = r"(?:\s?[@＠﹫]\s?|\s?[\[(（{<]\s?(?i:at)\s?[\])）}>]\s?)"
_DOT = r"(?:\s?[.。．｡]|\s?[\[(（{<]\s?(?i:dot)\s?[\])）}>]\s?|\s(?i:dot)\s)"
_LABEL = rf"[{_WORD}](?:[{_WORD}-]{{0,61}}[{_WORD}])?"
# The last label: ASCII letters (cut where the script changes: "qq.com谢谢"), punycode, or letters of any script.
_TLD = r"(?:[A-Za-z]{2,63}(?![A-Za-z0-9-])|xn--[A-Za-z0-9-]{1,59}(?![\w-])|[^\W\d_]{2,63}(?![\w-]))"
_DOMAIN = rf"(?:{_LABEL}{_DOT})+{_TLD}"
# The lookbehind starts a match only where a local part can start, so long words scan in linear time.
_LOCAL = rf"(?<!{_LOCAL_CHAR})(?P<local>{_LOCAL_CHAR}+)"
_EMAIL = re.compile(rf"{_LOCAL}{_AT_SIGN}{_DOMAIN}")
# "zhang at qq.com"; but "... available at amazon.com" is a shop, not an address: the plain word "at" needs a
# local part that is not one of the words that usually stand before it.
_EMAIL_WITH_WORD_AT = re.compile(rf"{_LOCAL}\s(?i:at)\s{_DOMAIN}")
_WORDS_BEFORE_AT = frozenset(
    "i me you he him she her it we us they them one this that here there is are was were be been am arrived "
    "available bought buy sold found look looking order ordered purchased shop shopping stay staying live lives "
    "online sale store email mail".split()
)
_EMAIL_HINT = re.compile(r"[@＠﹫]|(?i:\bat\b)")
# Chinese, Japanese, Korean and Thai: scripts written without spaces between words.
_UNSPACED_SCRIPT = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]+")


def _email_spans(pattern: re.Pattern[str], text: str) -> Iterable[tuple[int, int, str]]:
    for match in pattern.finditer(text):
        local = match.group("local")
        if pattern is _EMAIL_WITH_WORD_AT and local.lower().strip(".") in _WORDS_BEFORE_AT:
            continue
        start = match.start()
        # "联系zhang@qq.com": after text written without spaces, the address starts where the script changes.
        unspaced = list(_UNSPACED_SCRIPT.finditer(local))
        if unspaced and any(char.isalnum() for char in local[unspaced[-1].end() :]):
            start += unspaced[-1].end()
        # A local part has 64 characters at most; a longer run is a sentence written without spaces before it.
        yield max(start, match.start("local") + len(local) - 64), match.end(), "email"


# -- numbers: maximal runs of digits and separators, judged on their digits ----------------------------------

# Spaces of any kind, dashes, dots, parentheses, and the zero-width characters people paste.
_SEPARATORS = r"\s\-‐‑‒–—―−－.．。·・()（）\u00ad\u200b-\u200d\u2060\ufeff"
_NUMBER_RUN = re.compile(
    rf"(?P<lead>[+＋]\s?|[(（])?\d(?:[{_SEPARATORS}]{{0,4}}\d){{6,}}(?:[{_SEPARATORS}]{{0,2}}(?P<x>[XxＸｘ])(?![A-Za-z]))?"
)
_DIGITS = re.compile(r"\d+")
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\.?\d)")
_MAX_DIGITS = 19  # the longest value masked: a 19-digit card (E.164 numbers have 15 at most)


def _ascii_digits(group: str) -> str:
    return group if group.isascii() else "".join(str(int(char)) for char in group)


def _number_kind(digits: str, international: bool, with_x: bool, glued_to_letters: bool) -> str | None:
    """What a sequence of whole groups is, from its canonical digits (and X), or None."""
    if with_x:
        return "id_card" if len(digits) == 17 and is_valid_resident_id(digits + "X") else None
    if international:
        return "phone" if is_valid_international_phone("+" + digits) or is_chinese_phone(digits) else None
    if len(digits) in (15, 18) and is_valid_resident_id(digits):
        return "id_card"
    # Waybills and order numbers are letters glued to digits ("SF1234567890123"): never a card.
    if not glued_to_letters and is_valid_bank_card(digits):
        return "bank_card"
    return "phone" if is_chinese_phone(digits, glued_to_letters) else None


def _is_latin_letter(text: str, position: int) -> bool:
    return 0 <= position < len(text) and text[position].isascii() and text[position].isalpha()


def _number_spans(text: str) -> Iterable[tuple[int, int, str]]:
    for run in _NUMBER_RUN.finditer(text):
        value = run.group()
        letter_before = _is_latin_letter(text, run.start() - 1)
        if value.isdigit():  # the common case, one unbroken number
            if len(value) <= _MAX_DIGITS:
                glued = letter_before or _is_latin_letter(text, run.end())
                kind = _number_kind(_ascii_digits(value), False, False, glued)
                if kind is not None:
                    yield run.start(), run.end(), kind
            continue
        groups = [(m.start(), m.end(), _ascii_digits(m.group())) for m in _DIGITS.finditer(text, run.start(), run.end())]
        # An IPv4 address inside the run ("192.168.100.200 10.0.0.1") is nobody's phone: its groups are left out.
        in_address = {start for match in _IPV4.finditer(value) for start in range(match.start(), match.end())}
        groups = [group if group[0] - run.start() not in in_address else None for group in groups]
        lead = run.group("lead") or ""
        x_end = run.end("x") if run.group("x") else None
        letter_after = x_end is None and _is_latin_letter(text, run.end())
        first = 0
        while first < len(groups):
            if groups[first] is None:
                first += 1
                continue
            found = _longest_valid(groups, first, lead, x_end is not None, letter_before, letter_after)
            if found is None:
                first += 1
                continue
            last, kind, with_x = found
            start = run.start() if first == 0 and lead and kind == "phone" else groups[first][0]
            end = x_end if with_x else groups[last][1]
            yield start, end, kind
            first = last + 1


def _longest_valid(
    groups: list[tuple[int, int, str]], first: int, lead: str, run_has_x: bool, letter_before: bool, letter_after: bool
) -> tuple[int, str, bool] | None:
    """The last group, kind and use of the X of the longest valid sequence of groups starting at `first`."""
    lasts, total = [], 0
    for last in range(first, len(groups)):
        if groups[last] is None:
            break
        total += len(groups[last][2])
        if total > _MAX_DIGITS:
            break
        lasts.append(last)
    international = first == 0 and lead.strip() in ("+", "＋")
    for last in reversed(lasts):
        digits = "".join(group[2] for group in groups[first : last + 1])
        glued = (first == 0 and letter_before) or (last == len(groups) - 1 and letter_after)
        if run_has_x and last == len(groups) - 1 and _number_kind(digits, False, True, glued):
            return last, "id_card", True
        kind = _number_kind(digits, international, False, glued)
        if kind is not None:
            return last, kind, False
    return None


# -- phones of other countries, in their national format ------------------------------------------------------

# Seven digits or more, not glued to a letter: what is left that a phone matcher could take.
_PHONE_HINT = re.compile(rf"(?<![A-Za-z\d])[+＋(（]?\d(?:[{_SEPARATORS}]{{0,4}}\d){{6,}}")
DEFAULT_PHONE_REGIONS = ("US",)


def _national_phone_spans(text: str, regions: tuple[str, ...]) -> Iterable[tuple[int, int]]:
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            yield match.start, match.end


# -- the masker ---------------------------------------------------------------------------------------------

DEFAULT_KINDS = ("email", "id_card", "bank_card", "phone")
_PLACEHOLDERS = {"email": "[EMAIL]", "id_card": "[ID_CARD]", "bank_card": "[BANK_CARD]", "phone": "[PHONE]"}


@dataclass(frozen=True)
class _ExtraRule:
    name: str
    pattern: re.Pattern[str]
    placeholder: str


def _replace(text: str, spans: Iterable[tuple[int, int, str]], found: list[tuple[str, str]]) -> str:
    """`text` with each (start, end, kind) span replaced by its kind's placeholder; spans in text order."""
    pieces, position = [], 0
    for start, end, kind in spans:
        if start < position:
            continue  # overlaps a span already replaced
        pieces += [text[position:start], _PLACEHOLDERS[kind]]
        found.append((kind, text[start:end]))
        position = end
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


class PiiMasker:
    """Replaces personal data in text with placeholders ("[EMAIL]", "[ID_CARD]", "[BANK_CARD]", "[PHONE]"), kind
    by kind in that order.

    `extra_patterns` maps a name to a regular expression; its matches become "[NAME]" (upper-cased) and are
    applied after the default kinds. `phone_regions` are the countries whose phones written without a country
    code are looked for with `phonenumbers` (Chinese ones always are; any number written with + is too).
    """

    def __init__(
        self, extra_patterns: Mapping[str, str] | None = None, phone_regions: Iterable[str] = DEFAULT_PHONE_REGIONS
    ) -> None:
        self._extra: list[_ExtraRule] = []
        for name, regex in (extra_patterns or {}).items():
            try:
                pattern = re.compile(regex)
            except re.error as error:
                message = f"extra PII pattern {name!r} = {regex!r} is not a valid regular expression: {error}"
                raise ValueError(message) from error
            self._extra.append(_ExtraRule(name, pattern, f"[{name.upper()}]"))
        self.phone_regions = tuple(phone_regions)
        names = self.kinds
        if len(set(names)) != len(names):
            raise ValueError(f"PII rule names must be unique, got {names}")

    @property
    def kinds(self) -> list[str]:
        """The kinds masked, in the order they apply."""
        return [*DEFAULT_KINDS, *(rule.name for rule in self._extra)]

    def mask(self, text: str) -> tuple[str, Counter[str]]:
        """The text with every match replaced, and how many replacements each kind made."""
        masked, found = self.mask_and_find(text)
        return masked, Counter(kind for kind, _ in found)

    def find(self, text: str) -> list[tuple[str, str]]:
        """(kind, matched text) for every value `mask` would replace, in the order it replaces them."""
        return self.mask_and_find(text)[1]

    def mask_and_find(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """The masked text and the (kind, matched text) of each replacement."""
        found: list[tuple[str, str]] = []
        # Addresses first: "13800138000@163.com" is one address, not a phone and a domain.
        if _EMAIL_HINT.search(text):
            text = _replace(text, _email_spans(_EMAIL, text), found)
            text = _replace(text, _email_spans(_EMAIL_WITH_WORD_AT, text), found)
        text = _replace(text, _number_spans(text), found)
        if self.phone_regions and _PHONE_HINT.search(text):
            spans = sorted(set(_national_phone_spans(text, self.phone_regions)))
            text = _replace(text, ((start, end, "phone") for start, end in spans), found)
        for rule in self._extra:
            if rule.pattern.search(text) is not None:
                text = rule.pattern.sub(lambda match, rule=rule: _extra_placeholder(rule, match, found), text)
        return text, found

    def candidates(self, texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """Which of `texts` may hold something to mask (true) and which certainly do not (false or null), in one
        vectorised pass; only the candidates need `mask_and_find`."""
        if self._extra:
            return pc.is_valid(texts)  # a user's pattern can match anything
        return pc.match_substring_regex(texts, _CANDIDATE_RE2)


def _extra_placeholder(rule: _ExtraRule, match: re.Match[str], found: list[tuple[str, str]]) -> str:
    found.append((rule.name, match.group()))
    return rule.placeholder


# The triggers of `mask_and_find` in RE2 syntax (which Arrow uses): an at sign, the word "at", or 7 digits of any
# script with at most 4 separators between each two. RE2's \s is ASCII only, hence \p{Z}.
_CANDIDATE_RE2 = (
    r"[@＠﹫]|(?i:\bat\b)"
    r"|\p{Nd}(?:[\s\p{Z}\x{0b}\x{1c}-\x{1f}\x{85}\-‐‑‒–—―−－.．。·・()（）\x{00ad}\x{200b}-\x{200d}\x{2060}\x{feff}]{0,4}\p{Nd}){6}"
)
