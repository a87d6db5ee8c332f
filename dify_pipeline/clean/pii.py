"""Mask personal data (e-mail addresses, ID numbers, bank cards, phones) before text leaves the company.

Numbers are matched on their canonical form, not on a list of groupings: each maximal run of digits joined by
separators (spaces, dashes, dots, slashes, parentheses, zero-width characters; digits of any script, full-width
included) is cut into its groups, and from each group on the longest sequence of whole groups whose digits pass
a check (ID checksum, Luhn, phone rules, `phonenumbers`' validity for numbers written with + and for national
numbers of other countries) is masked, span and all. A pure function of one text: `PiiMasker.candidates` tells,
for an Arrow array of texts, which ones need it.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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
    if _CHINESE_LANDLINE.fullmatch(digits):
        return True
    if digits.startswith("86") and _CHINESE_LANDLINE.fullmatch("0" + digits[2:]):
        return True
    return digits.startswith("00") and 9 <= len(digits) <= 17 and is_valid_international_phone("+" + digits[2:])


# -- e-mail addresses (RFC 6531 local parts, IDNA domains) and their usual disguises --------------------------

# Letters and digits of any script (\w), combining marks of the scripts \w leaves out, and RFC 5322 atext.
_WORD = r"\w\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0900-\u0dff\u0e00-\u0eff\u1ab0-\u1aff"
_LOCAL_CHAR = rf"[{_WORD}!#$%&'*+/=?^`{{|}}~.-]"
_AT_SIGN = r"(?:\s?[@＠﹫]\s?|\s?[\[(（{<]\s?(?i:at)\s?[\])）}>]\s?)"
# The ideographic full stop ends Chinese sentences: in a domain only before a letter of a spaced script (Latin,
# Cyrillic...) or a Chinese TLD.
_DOT = (
    r"(?:\s?[.．｡]|。(?=中国|中國|公司|网络|網絡|香港|台湾|台灣|(?![\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af])[^\W\d_])"
    r"|\s?[\[(（{<]\s?(?i:dot)\s?[\])）}>]\s?|\s(?i:dot)\s)"
)
_LABEL = rf"[{_WORD}](?:[{_WORD}-]{{0,61}}[{_WORD}])?"
# The last label: ASCII letters (cut where the script changes: "qq.com谢谢"), punycode, or letters of any script.
_TLD = r"(?:[A-Za-z]{2,63}(?![A-Za-z-])|xn--[A-Za-z0-9-]{1,59}|[^\W\d_]{2,63}(?!-))"
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
_UNSPACED_SCRIPT = re.compile(
    r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]+"
)


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

# Spaces of any kind, dashes, dots, slashes, parentheses, and the zero-width characters people paste.
_SEPARATORS = r"\s\-‐‑‒–—―−－.．。·・/()（）\u00ad\u200b-\u200d\u2060\ufeff"
_NUMBER_RUN = re.compile(
    rf"(?P<lead>[+＋]\s?|[(（])?(?P<digits>\d)(?:[{_SEPARATORS}]{{0,4}}\d){{6,}}"
    rf"(?:[{_SEPARATORS}]{{0,4}}(?P<x>[XxＸｘ])(?![A-Za-z]))?"
)
_DIGITS = re.compile(r"\d+")
# Inside a run, an IPv4 address or a date is nobody's phone ("192.168.100.200 10.0.0.1", "2024-06-15 10:30"),
# unless the run starts with a + ("+49.3.0.1 20000").
_NOT_A_PHONE = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)"
    r"|(?<!\d)(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])(?!\d)"
    r"|(?<!\d)(?:0?[1-9]|[12]\d|3[01])[-./](?:0?[1-9]|1[0-2])[-./](?:19|20)\d\d(?!\d)"
)
_MAX_DIGITS = 19  # the longest value masked: a 19-digit card (E.164 numbers have 15 at most)
DEFAULT_PHONE_REGIONS = ("US",)


@dataclass(frozen=True)
class _Group:
    """The digits of a run between two separators."""

    start: int
    end: int
    digits: str  # ASCII
    may_be_phone: bool  # not part of an IP address or a date


@dataclass(frozen=True)
class _Run:
    groups: list[_Group]
    international: bool  # written with a leading +
    has_x: bool  # ends in an X, as an ID number may
    letter_before: bool
    letter_after: bool


@lru_cache(maxsize=64)
def _national_lengths(region: str) -> frozenset[int]:
    """How many digits a number of `region` has when written without its country code, trunk prefix included."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        raise ValueError(f"unknown phone region {region!r}")
    lengths = set(metadata.general_desc.possible_length or ())
    prefix = len(metadata.national_prefix or "")
    return frozenset(lengths | {length + prefix for length in lengths})


def is_national_phone(groups: Sequence[str], region: str) -> bool:
    """Digit groups that spell a valid number of `region` without its country code, written in the region's own
    grouping or a coarser one ("(212) 555-0147", "212-5550147"), never bare: a lone "2125550147" is as likely an
    order number, and "23.120.256.10" a version."""
    digits = "".join(groups)
    if len(groups) < 2 or len(digits) not in _national_lengths(region):
        return False
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    formatted = re.findall(r"\d+", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL))
    prefix = len(digits) - sum(map(len, formatted))  # a trunk prefix the format leaves out ("1-212-...")
    allowed = {prefix, *itertools.accumulate((len(group) for group in formatted), initial=prefix)}
    return set(itertools.accumulate(len(group) for group in groups[:-1])) <= allowed


def _ascii_digits(group: str) -> str:
    return group if group.isascii() else "".join(str(int(char)) for char in group)


def _is_latin_letter(text: str, position: int) -> bool:
    return 0 <= position < len(text) and text[position].isascii() and text[position].isalpha()


def _number_kind(
    groups: Sequence[str], *, international: bool, glued: bool, may_be_phone: bool, regions: tuple[str, ...]
) -> str | None:
    """What a sequence of whole groups is, judged on its digits, or None.

    A number glued to Latin letters is an order number or waybill ("SF1234567890123", "DD021234567890") unless it
    is an ID or a Chinese mobile ("V13800138000" is how people write their WeChat).
    """
    digits = "".join(groups)
    if international:
        if may_be_phone and (is_valid_international_phone("+" + digits) or is_chinese_phone(digits)):
            return "phone"
        return None
    # A 15-digit legacy ID has no check character: only unbroken is it told from two numbers side by side.
    if (len(digits) == 18 or (len(digits) == 15 and len(groups) == 1)) and is_valid_resident_id(digits):
        return "id_card"
    if may_be_phone and is_chinese_phone(digits, glued):
        return "phone"
    if glued:
        return None
    if is_valid_bank_card(digits):
        return "bank_card"
    if may_be_phone and any(is_national_phone(groups, region) for region in regions):
        return "phone"
    return None


def _number_spans(text: str, regions: tuple[str, ...]) -> Iterable[tuple[int, int, str]]:
    for match in _NUMBER_RUN.finditer(text):
        value = match.group()
        letter_before = _is_latin_letter(text, match.start("digits") - 1)
        if value.isdigit():  # the common case: one unbroken number
            if len(value) <= _MAX_DIGITS:
                glued = letter_before or _is_latin_letter(text, match.end())
                kind = _number_kind([_ascii_digits(value)], international=False, glued=glued, may_be_phone=True,
                                    regions=regions)
                if kind is not None:
                    yield match.start(), match.end(), kind
            continue
        yield from _run_spans(match, _run(text, match, letter_before), regions)


def _run(text: str, match: re.Match[str], letter_before: bool) -> _Run:
    not_phone = {i for found in _NOT_A_PHONE.finditer(match.group()) for i in range(found.start(), found.end())}
    groups = [
        _Group(m.start(), m.end(), _ascii_digits(m.group()), m.start() - match.start() not in not_phone)
        for m in _DIGITS.finditer(text, match.start(), match.end())
    ]
    has_x = match.group("x") is not None
    return _Run(groups, (match.group("lead") or "").strip() in ("+", "＋"), has_x, letter_before,
                not has_x and _is_latin_letter(text, match.end()))


def _run_spans(match: re.Match[str], run: _Run, regions: tuple[str, ...]) -> Iterable[tuple[int, int, str]]:
    """From each group on, the longest sequence of whole groups that is a valid number; then on after it."""
    first = 0
    while first < len(run.groups):
        found = _longest_valid(run, first, regions)
        if found is None:
            first += 1
            continue
        last, kind, with_x = found
        start = match.start() if first == 0 and kind == "phone" else run.groups[first].start  # with its + or (
        if kind == "phone" and start > 0 and match.string[start - 1] in "(（":
            start -= 1  # "(010) 1234 5678" after another number
        yield start, match.end() if with_x else run.groups[last].end, kind
        first = last + 1


def _longest_valid(run: _Run, first: int, regions: tuple[str, ...]) -> tuple[int, str, bool] | None:
    """The last group, kind and use of the X of the longest valid sequence of groups starting at `first`."""
    lasts, total = [], 0
    for last in range(first, len(run.groups)):
        total += len(run.groups[last].digits)
        if total > _MAX_DIGITS:
            break
        lasts.append(last)
    for last in reversed(lasts):
        groups = run.groups[first : last + 1]
        digits = [group.digits for group in groups]
        ends_run = last == len(run.groups) - 1
        if run.has_x and ends_run and sum(map(len, digits)) == 17 and is_valid_resident_id("".join(digits) + "X"):
            return last, "id_card", True
        international = run.international and first == 0
        kind = _number_kind(
            digits,
            international=international,
            glued=(first == 0 and run.letter_before) or (ends_run and run.letter_after),
            may_be_phone=international or all(group.may_be_phone for group in groups),
            regions=regions,
        )
        if kind is not None:
            return last, kind, False
    return None


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
    applied after the default kinds. `phone_regions` are the countries (ISO 3166 codes) whose numbers written
    without a country code, in their own grouping, are masked too; Chinese ones always are, and so is any number
    written with + or 00 that `phonenumbers` finds valid.
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
        for region in self.phone_regions:
            _national_lengths(region)  # an unknown region is an error now, not at the first phone
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
        text = _replace(text, _number_spans(text, self.phone_regions), found)
        for rule in self._extra:
            if rule.pattern.search(text) is not None:
                text = rule.pattern.sub(lambda match, rule=rule: _extra_placeholder(rule, match, found), text)
        return text, found

    def candidates(self, texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """Which of `texts` may hold something to mask (true) and which certainly do not (false or null), in one
        vectorised pass; only the candidates need `mask_and_find`."""
        if self._extra:
            return pc.is_valid(texts)  # a user's pattern can match anything
        digits = pc.count_substring_regex(texts, _DIGIT_RE2)
        return pc.or_kleene(pc.match_substring_regex(texts, _ADDRESS_HINT_RE2), pc.greater_equal(digits, 7))


def _extra_placeholder(rule: _ExtraRule, match: re.Match[str], found: list[tuple[str, str]]) -> str:
    found.append((rule.name, match.group()))
    return rule.placeholder


# What can trigger `mask_and_find`, in RE2 (Arrow's regex engine): an at sign or the word "at" (addresses), or
# 7 digits of any script (every number masked has 7 or more). Cheaper to compile than a pattern of digit runs.
_ADDRESS_HINT_RE2 = r"[@＠﹫]|(?i:\bat\b)"
_DIGIT_RE2 = r"\p{Nd}"
