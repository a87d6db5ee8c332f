"""A second, independent look at what is about to be sent: personal data that the masker let through.

Different code from `pii.PiiMasker` on purpose (defence in depth): phones come from `phonenumbers`' own matcher
for every region (Chinese numbers included), ID and card numbers from a scan of the text with every separator
between two digits deleted, addresses from a permissive pattern. What counts as a valid ID, card or phone is
the same fact for both (`pii`'s check functions), so a value the masker rightly leaves is not flagged here.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from dify_pipeline.clean.pii import DEFAULT_PHONE_REGIONS, is_valid_bank_card, is_valid_resident_id

# Service numbers (400/800 lines, premium and shared-cost numbers) belong to companies, not to people.
_NOT_PERSONAL = {
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST,
    phonenumbers.PhoneNumberType.UAN,
}
_FORMAT_CHARACTERS = re.compile(r"[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
# An IPv4 address is nobody's phone, even when its digits spell one ("178.78.127.186"): the masker leaves it too.
_IPV4_ADDRESS = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_BETWEEN_DIGITS = re.compile(r"(?<=\d)[\s\-‐‑‒–—−.·()]{1,4}(?=[\dXx])")
_LONG_NUMBER = re.compile(r"(?<![\d+])(?:\d{17}[Xx]|\d{13,19})(?!\d)")
_ADDRESS = re.compile(
    r"[^\s@<>()\[\]{}\"',;:，。；：、]+\s?@\s?[^\s@<>()\[\]{}\"',;:，。；：、]+(?:\.|。(?=[A-Za-z]|中国|公司))[^\W\d_]{2,}"
    r"|[\w.+-]+\s?[\[(（{<]\s?(?i:at)\s?[\])）}>]\s?[\w-]+\s?(?:\.|[\[(（{<]\s?(?i:dot)\s?[\])）}>]|\s(?i:dot)\s)"
    r"|[\w.+-]+\s(?i:at)\s[\w-]+\s(?i:dot)\s[A-Za-z]{2,}"
)
# What a text needs to be worth a closer look, in RE2 (Arrow's regex engine).
_WORTH_A_LOOK = r"[@＠﹫]|(?i:\bat\b)|\p{Nd}(?:[^\pL\pN]{0,4}\p{Nd}){6}"
# Seven digits not glued to a letter: the matcher takes nothing else (at VALID it refuses "DD313617600133").
_PHONE_CANDIDATE = re.compile(r"(?<![A-Za-z\d])\d(?:[^\w]{0,4}\d){6}")
MAX_SAMPLES = 5


def shape(value: str) -> str:
    """The value with each digit shown as 9 and each letter as a, e.g. "9999 99 9999": what a grouping or a
    disguise looked like, without the personal data."""
    return re.sub(r"[^\W\d_]", "a", re.sub(r"\d", "9", value))


def find_personal_data(
    text: str, phone_regions: Sequence[str] = ("CN", *DEFAULT_PHONE_REGIONS)
) -> list[tuple[str, str]]:
    """(kind, value) of each e-mail address, ID, card or phone number found in `text`."""
    text = _FORMAT_CHARACTERS.sub("", unicodedata.normalize("NFKC", text))
    found = [("email", match.group()) for match in _ADDRESS.finditer(text)]
    joined = _BETWEEN_DIGITS.sub("", text)
    for match in _LONG_NUMBER.finditer(joined):
        number = match.group()
        if is_valid_resident_id(number):
            found.append(("id_card", number))
        elif not _next_to_latin_letter(joined, match.start(), match.end()) and is_valid_bank_card(number):
            found.append(("bank_card", number))
    text = _IPV4_ADDRESS.sub(lambda match: match.group() if _has_leading_zero(match.group()) else " ", text)
    if _PHONE_CANDIDATE.search(text):
        seen: set[tuple[int, int]] = set()
        for region in dict.fromkeys(phone_regions):
            # Chinese numbers in any grouping, as the masker; other countries' in their own grouping.
            leniency = phonenumbers.Leniency.VALID if region == "CN" else phonenumbers.Leniency.STRICT_GROUPING
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency):
                if (match.start, match.end) not in seen and _is_personal(match, region):
                    seen.add((match.start, match.end))
                    found.append(("phone", match.raw_string))
    return found


def _has_leading_zero(address: str) -> bool:
    return any(len(part) > 1 and part.startswith("0") or int(part) > 255 for part in address.split("."))


def _next_to_latin_letter(text: str, start: int, end: int) -> bool:
    return (start > 0 and text[start - 1].isascii() and text[start - 1].isalpha()) or (
        end < len(text) and text[end].isascii() and text[end].isalpha()
    )


def _is_personal(match: phonenumbers.PhoneNumberMatch, region: str) -> bool:
    number_type = phonenumbers.number_type(match.number)
    if number_type in _NOT_PERSONAL:
        return False
    written = match.raw_string.strip("(（) \t")
    if written.startswith("+"):
        return True
    if region == "CN":
        # A landline without its trunk 0 ("2112345678", "8639195009") is as likely an order number.
        return number_type != phonenumbers.PhoneNumberType.FIXED_LINE or written.startswith("0")
    return not written.isdigit()  # other countries' national numbers only with their grouping, never bare


class OutgoingScan:
    """Findings over the rows about to be sent, batch by batch: counts by kind and a few masked samples."""

    def __init__(self, columns: Sequence[str], phone_regions: Sequence[str] = ("CN", *DEFAULT_PHONE_REGIONS)):
        self.columns = list(columns)
        self.phone_regions = tuple(phone_regions)
        self.rows_scanned = 0
        self.rows_with_findings = 0
        self.counts: Counter[str] = Counter()
        self.samples: list[dict[str, str]] = []

    def add(self, batch: pa.Table | pa.RecordBatch, key_column: str = "record_key") -> None:
        """Scan the outgoing columns of `batch` (text, or anything else as its text form)."""
        self.rows_scanned += batch.num_rows
        if batch.num_rows == 0:  # pyarrow 16 crashes in indices_nonzero on a chunked array with no chunks
            return
        flagged: set[int] = set()
        for column in self.columns:
            values = batch.column(column)
            if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
                values = pc.cast(values, pa.string())
            worth_a_look = pc.fill_null(pc.match_substring_regex(values, _WORTH_A_LOOK), False)
            for row in pc.indices_nonzero(worth_a_look).to_pylist():
                findings = find_personal_data(values[row].as_py(), self.phone_regions)
                if not findings:
                    continue
                flagged.add(row)
                self.counts.update(kind for kind, _ in findings)
                for kind, value in findings[: MAX_SAMPLES - len(self.samples)]:
                    key = batch.column(key_column)[row].as_py() if key_column in batch.column_names else None
                    self.samples.append({"record_key": str(key), "column": column, "kind": kind, "shape": shape(value)})
        self.rows_with_findings += len(flagged)

    @property
    def passed(self) -> bool:
        return not self.counts

    def metadata(self) -> dict[str, object]:
        """What a check reports: never the personal data itself, only its kind and shape."""
        return {
            "rows_scanned": self.rows_scanned,
            "columns_scanned": ", ".join(self.columns),
            "rows_with_personal_data": self.rows_with_findings,
            "found_by_kind": dict(sorted(self.counts.items())),
            "samples": self.samples,
        }

