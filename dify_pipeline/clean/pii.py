"""Mask personal data (ID numbers, bank cards, e-mails, phones) before text leaves the company."""

from __future__ import annotations

import datetime
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial


@dataclass(frozen=True)
class PiiRule:
    """Matches of `pattern` for which `is_valid` (if given) holds are replaced by `placeholder`."""

    name: str
    pattern: re.Pattern[str]
    placeholder: str
    is_valid: Callable[[str], bool] | None = None


_ID_CHECK_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CODES = "10X98765432"
# First two digits of a resident ID: the province (GB/T 2260), which keeps 15-digit numbers from over-matching.
_PROVINCE_CODES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82".split()
)


def _is_real_date(year: int, month: int, day: int) -> bool:
    try:
        birth = datetime.date(year, month, day)
    except ValueError:
        return False
    return birth <= datetime.date.today()


def id_check_character(first_17_digits: str) -> str:
    """The 18th character of a Chinese resident ID number (ISO 7064 MOD 11-2)."""
    total = sum(int(digit) * weight for digit, weight in zip(first_17_digits, _ID_CHECK_WEIGHTS))
    return _ID_CHECK_CODES[total % 11]


def is_valid_resident_id(number: str) -> bool:
    """An 18-character ID with a real birth date and a correct check character, or a 15-digit
    legacy ID (no check character) with a known province and a real 19xx birth date."""
    number = number.upper()
    if len(number) == 18:
        birth = (int(number[6:10]), int(number[10:12]), int(number[12:14]))
        return _is_real_date(*birth) and id_check_character(number[:17]) == number[17]
    if len(number) == 15:
        birth = (1900 + int(number[6:8]), int(number[8:10]), int(number[10:12]))
        return number[:2] in _PROVINCE_CODES and _is_real_date(*birth)
    return False


def luhn_check_digit(digits_without_check: str) -> str:
    """The Luhn check digit to append to `digits_without_check`."""
    total = 0
    for position, digit in enumerate(reversed(digits_without_check)):
        value = int(digit) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


def is_valid_bank_card(number: str) -> bool:
    """13 to 19 digits (spaces and dashes ignored) whose last digit is the Luhn check digit."""
    digits = re.sub(r"[ -]", "", number)
    return 13 <= len(digits) <= 19 and luhn_check_digit(digits[:-1]) == digits[-1]


def _has_phone_length(number: str) -> bool:
    # E.164 numbers have at most 15 digits; fewer than 7 is a short code or a quantity, not a phone.
    return 7 <= sum(char.isdigit() for char in number) <= 15


# The number patterns open with a lookahead for the characters a match can start with, which lets re
# pass over ordinary text several times faster; the digit-boundary lookarounds keep a rule from
# matching part of a longer number.
_ID_CARD = re.compile(
    r"(?=[1-9])(?<![0-9])(?:[1-9][0-9]{5}(?:18|19|20)[0-9]{2}[01][0-9][0-3][0-9]{4}[0-9Xx]"
    r"|[1-8][0-9]{5}[0-9]{2}[01][0-9][0-3][0-9]{4})(?![0-9])"
)
# Unbroken, or grouped as printed on the card: "6222 0212 3456 7890 123", "3782 822463 10005".
_BANK_CARD = re.compile(
    r"(?=[0-9])(?<![0-9])(?:[0-9]{13,19}"
    r"|[0-9]{4}(?:[ -][0-9]{4}){2,3}(?:[ -][0-9]{1,3})?"
    r"|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5})(?![0-9])"
)
# The lookbehind starts a match only where an address can start, so long words scan in linear time.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
_PHONE = re.compile(
    r"(?=[0-9+(])(?<![0-9])(?:"
    # Chinese mobile, optionally +86 / 0086 / 86: "+86 138-0013-8000", "13800138000".
    r"(?:(?:\+|00)?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}"
    # International with a leading +: "+1 415-555-0100", "+44 20 7946 0958".
    r"|\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}"
    # Area code in parentheses: "(020) 1234-5678", "(415) 555-0100".
    r"|\(0?[0-9]{2,4}\)[ -]?[0-9]{3,4}[ .-]?[0-9]{4}"
    # Chinese landline with a trunk 0: "021-12345678", "0755 1234567".
    r"|0[1-9][0-9]{1,2}[ -]?[0-9]{7,8}"
    # North American without country code, separators required: "415-555-0100".
    r"|[2-9][0-9]{2}[.-][0-9]{3}[.-][0-9]{4}"
    r")(?![0-9])"
)

# Longest, most specific numbers first so that an ID number is never taken for a card or phone.
DEFAULT_PII_RULES: tuple[PiiRule, ...] = (
    PiiRule("id_card", _ID_CARD, "[ID_CARD]", is_valid_resident_id),
    PiiRule("bank_card", _BANK_CARD, "[BANK_CARD]", is_valid_bank_card),
    PiiRule("email", _EMAIL, "[EMAIL]"),
    PiiRule("phone", _PHONE, "[PHONE]", _has_phone_length),
)


class PiiMasker:
    """Replaces personal data in text with placeholders such as "[PHONE]", rule by rule in order.

    `extra_patterns` maps a name to a regular expression; its matches become "[NAME]" (upper-cased)
    and are applied after the default rules.
    """

    def __init__(
        self,
        rules: Sequence[PiiRule] = DEFAULT_PII_RULES,
        extra_patterns: Mapping[str, str] | None = None,
    ) -> None:
        extra_rules = []
        for name, regex in (extra_patterns or {}).items():
            try:
                pattern = re.compile(regex)
            except re.error as error:
                message = f"extra PII pattern {name!r} = {regex!r} is not a valid regular expression: {error}"
                raise ValueError(message) from error
            extra_rules.append(PiiRule(name, pattern, f"[{name.upper()}]"))
        self.rules: tuple[PiiRule, ...] = (*rules, *extra_rules)
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"PII rule names must be unique, got {names}")

    @property
    def kinds(self) -> list[str]:
        """The rule names, in the order they apply."""
        return [rule.name for rule in self.rules]

    def mask(self, text: str) -> tuple[str, Counter[str]]:
        """The text with every match replaced, and how many replacements each rule made."""
        masked, found = self.mask_and_find(text)
        return masked, Counter(kind for kind, _ in found)

    def find(self, text: str) -> list[tuple[str, str]]:
        """(kind, matched text) for every value `mask` would replace, in the order it replaces them."""
        return self.mask_and_find(text)[1]

    def mask_and_find(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """The masked text and the (kind, matched text) of each replacement."""
        found: list[tuple[str, str]] = []
        for rule in self.rules:
            # Most texts hold no personal data; a plain search is the cheap way to learn that.
            if rule.pattern.search(text) is not None:
                text = rule.pattern.sub(partial(_replace_if_valid, rule, found), text)
        return text, found


def _replace_if_valid(rule: PiiRule, found: list[tuple[str, str]], match: re.Match[str]) -> str:
    value = match.group()
    if rule.is_valid is not None and not rule.is_valid(value):
        return value
    found.append((rule.name, value))
    return rule.placeholder
