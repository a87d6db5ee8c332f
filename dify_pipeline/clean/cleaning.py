"""Turn a raw export of tickets into one clean, PII-masked row per record, and quarantine the rest."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, PositiveInt, field_validator, model_validator

from dify_pipeline.clean.pii import PiiMasker
from dify_pipeline.clean.text import decode_bytes, normalize_text, truncate_text
from dify_pipeline.frames import TEXT

# Columns clean_tickets adds; a raw frame that already has them would be silently overwritten.
ADDED_COLUMNS = ("record_key", "text_truncated", "pii_masked", "quarantine_reason", "quarantine_detail")
QUARANTINE_REASONS = ("missing_key", "invalid_timestamp", "empty_text")


class CleaningConfig(BaseModel):
    """Which columns hold the record key, the timestamps and the text, and how long text may be."""

    key_column: str = "id"
    updated_at_column: str = "updated_at"
    timestamp_column: str = "created_at"
    text_columns: list[str] = Field(default=["subject", "body"], min_length=1)
    # Text columns absent here are not truncated.
    max_chars: dict[str, PositiveInt] = {"subject": 200, "body": 4000}
    # Name -> regular expression; matches are replaced by "[NAME]".
    extra_pii_patterns: dict[str, str] = {}

    @field_validator("extra_pii_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: dict[str, str]) -> dict[str, str]:
        PiiMasker(extra_patterns=patterns)
        return patterns

    @model_validator(mode="after")
    def _limits_name_text_columns(self) -> CleaningConfig:
        unknown = sorted(set(self.max_chars) - set(self.text_columns))
        if unknown:
            raise ValueError(f"max_chars names columns that are not text_columns: {unknown}")
        return self


@dataclass(frozen=True)
class CleanResult:
    """The outcome of `clean_tickets`; len(raw) == len(clean) + len(quarantine) + duplicates_removed."""

    clean: pd.DataFrame  # one row per record key
    quarantine: pd.DataFrame  # rows that cannot be used, each with a reason
    duplicates_removed: int
    quarantine_reasons: dict[str, int]  # only the reasons that occurred, so {} means nothing was quarantined
    pii_masked: dict[str, int]  # replacements by kind, over clean + quarantine
    truncated: int  # clean rows with at least one text column truncated


def record_key_text(value: object) -> str | None:
    """A record key as text: 42 and 42.0 give "42", " A7 " gives "A7"; null, NaN and blank give None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bytes):
        value = decode_bytes(value)
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def _record_keys(keys: pd.Series) -> pd.Series:
    if pd.api.types.is_integer_dtype(keys):
        return keys.astype(TEXT)  # the common case, vectorized; Int64's NA becomes NaN
    return pd.Series([record_key_text(key) for key in keys.tolist()], index=keys.index, dtype=TEXT)


def _as_datetimes(values: pd.Series) -> pd.Series:
    """Datetime columns as they are; anything else parsed, with unparseable values as NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    # UTC only puts mixed offsets on one scale; the parsed values are used to validate and order, never output.
    return pd.to_datetime(values, errors="coerce", utc=True, format="mixed")


def _text_input(value: object) -> str | bytes | None:
    if isinstance(value, (str, bytes)):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


@dataclass
class _PiiTally:
    """Replacements by kind, added up over every text the result contains."""

    masker: PiiMasker
    totals: Counter[str] = field(default_factory=Counter)

    def count(self, kinds: tuple[str, ...]) -> int:
        """Add one text's replacements (their kinds) to the totals; returns how many there were."""
        if kinds:
            self.totals.update(kinds)
        return len(kinds)


def check_columns(columns: Sequence[str], config: CleaningConfig) -> None:
    """Raw tickets with these `columns` hold every configured column and none of those cleaning adds."""
    columns = list(columns)
    needed = [config.key_column, config.timestamp_column, config.updated_at_column, *config.text_columns]
    missing = [column for column in needed if column not in columns]
    if missing:
        raise ValueError(f"raw tickets lack the configured columns {missing}; they have {columns}")
    clashing = [column for column in ADDED_COLUMNS if column in columns]
    if clashing:
        raise ValueError(f"raw tickets already have columns that cleaning adds: {clashing}")


class CleanText(NamedTuple):
    """One text value as `clean_tickets` leaves it."""

    text: str
    truncated: bool
    pii_kinds: tuple[str, ...]  # the kind of each value masked in it


def clean_texts(values: Sequence[object], masker: PiiMasker, max_chars: int | None = None) -> list[CleanText]:
    """What `clean_tickets` makes of a text column's values: each normalized, PII-masked, then truncated.

    Identical values are cleaned once (subjects in particular repeat a lot). Masking comes after normalizing
    (entities can hide an @) and before truncating (a cut can split a phone).
    """
    inputs = [_text_input(value) for value in values]
    distinct = list(dict.fromkeys(inputs))
    normalized = [normalize_text(text) for text in distinct]
    # One vectorised pass tells which texts can hold PII at all; only those go through the masker.
    candidates = masker.candidates(pa.array(normalized, pa.string())).to_numpy(zero_copy_only=False)
    cleaned = {}
    for raw, text, candidate in zip(distinct, normalized, candidates):
        text, found = masker.mask_and_find(text) if candidate else (text, [])
        was_truncated = False
        if max_chars is not None:
            text, was_truncated = truncate_text(text, max_chars)
        cleaned[raw] = CleanText(text, was_truncated, tuple(kind for kind, _ in found))
    return [cleaned[text] for text in inputs]


def _mask_raw(value: object, pii: _PiiTally) -> str | None:
    text = _text_input(value)
    if text is None:
        return None
    masked, found = pii.masker.mask_and_find(decode_bytes(text) if isinstance(text, bytes) else text)
    # Markup can hide a value from the raw text ("zhang<b>@</b>qq.com"): when the normalized text still shows
    # one, the quarantine keeps the normalized, masked text instead of the raw one.
    normalized, hidden = pii.masker.mask_and_find(normalize_text(masked))
    if hidden:
        masked, found = normalized, found + hidden
    pii.count(tuple(kind for kind, _ in found))
    return masked


def _quarantine(
    rows: pd.DataFrame,
    record_keys: pd.Series,
    positions_by_reason: dict[str, np.ndarray],
    config: CleaningConfig,
    pii: _PiiTally,
    timestamp_is_null: np.ndarray,
) -> pd.DataFrame:
    """The quarantined rows as they came, text PII-masked, with their key, reason and a short detail."""
    detail_by_reason = {
        "missing_key": f"{config.key_column} is null or blank",
        "empty_text": f"{' and '.join(config.text_columns)} empty after cleaning",
    }
    reasons: list[str] = []
    details: list[str] = []
    for reason, positions in positions_by_reason.items():
        reasons += [reason] * len(positions)
        if reason == "invalid_timestamp":
            details += [
                f"{config.timestamp_column} is {'null' if is_null else 'not a date/time'}"
                for is_null in timestamp_is_null[positions]
            ]
        else:
            details += [detail_by_reason[reason]] * len(positions)
    quarantine = rows.iloc[np.concatenate(list(positions_by_reason.values())).astype(np.int64)]
    masked_text = {
        column: pd.Series([_mask_raw(value, pii) for value in quarantine[column]], index=quarantine.index, dtype=TEXT)
        for column in config.text_columns
    }
    return quarantine.assign(
        **masked_text,
        record_key=record_keys.loc[quarantine.index],
        quarantine_reason=pd.Series(reasons, index=quarantine.index, dtype=TEXT),
        quarantine_detail=pd.Series(details, index=quarantine.index, dtype=TEXT),
    ).reset_index(drop=True)


def _order_values(updated_at: pd.Series) -> np.ndarray:
    """`updated_at` as integers that order like the moments (microseconds), null and unparseable first."""
    values = _as_datetimes(updated_at)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[us]").view(np.int64)  # NaT is int64's minimum: sorts first


# What the plan keeps of each raw row: one byte of flags.
_MISSING_KEY, _INVALID_TIMESTAMP, _NULL_TIMESTAMP, _WINNER = 1, 2, 4, 8


@dataclass
class DayPlan:
    """What the key and timestamp columns alone decide about each raw row of a day, in the day's row order.

    One byte of flags per row (no key, invalid timestamp, null timestamp, the row that stands for its key),
    never the keys themselves: the cleaner reads each chunk's keys from the chunk. So a day of any size is
    planned in memory and then cleaned one batch at a time.
    """

    flags: np.ndarray  # uint8, one per raw row

    def _flag(self, bit: int) -> np.ndarray:
        return (self.flags & bit).astype(bool)

    @property
    def missing_key(self) -> np.ndarray:
        return self._flag(_MISSING_KEY)

    @property
    def invalid_timestamp(self) -> np.ndarray:
        return self._flag(_INVALID_TIMESTAMP)

    @property
    def timestamp_is_null(self) -> np.ndarray:
        return self._flag(_NULL_TIMESTAMP)

    @property
    def winner(self) -> np.ndarray:
        """The rows that stand for their key (latest updated_at; ties: the later row)."""
        return self._flag(_WINNER)

    @property
    def rows(self) -> int:
        return len(self.flags)

    @property
    def nbytes(self) -> int:
        return self.flags.nbytes

    @property
    def duplicates_removed(self) -> int:
        usable = int(np.count_nonzero((self.flags & (_MISSING_KEY | _INVALID_TIMESTAMP)) == 0))
        return usable - int(np.count_nonzero(self.flags & _WINNER))


def _identity_codes(keys: pd.Series, record_keys: pd.Series) -> np.ndarray | pa.Array:
    """What tells two rows' keys apart, as compact as the column allows: the integers themselves, else the text."""
    if pd.api.types.is_integer_dtype(keys) and not pd.api.types.is_unsigned_integer_dtype(keys):
        return keys.to_numpy(dtype=np.int64, na_value=0)  # missing keys are never compared
    return pa.array(record_keys.to_numpy(dtype=object, na_value=None), pa.string())


def plan_day(key_chunks: Iterable[pd.DataFrame], config: CleaningConfig) -> DayPlan:
    """The plan of a day from its key, timestamp and updated_at columns, given in consecutive chunks.

    Rows without a key or with a null or unparseable timestamp are out; of the rest, each key's latest
    `updated_at` wins (ties go to the later row; a null updated_at loses). Holds a key and an update time per
    usable row while planning (the integers themselves for an integer key column), one byte per row after.
    """
    flags, identities, order = [], [], []
    for chunk in key_chunks:
        record_keys = _record_keys(chunk[config.key_column])
        is_missing = record_keys.isna().to_numpy()
        timestamps = chunk[config.timestamp_column]
        is_invalid = ~is_missing & _as_datetimes(timestamps).isna().to_numpy()
        flags.append((is_missing * _MISSING_KEY | is_invalid * _INVALID_TIMESTAMP
                      | timestamps.isna().to_numpy() * _NULL_TIMESTAMP).astype(np.uint8))
        usable = np.flatnonzero(~(is_missing | is_invalid))
        identity = _identity_codes(chunk[config.key_column], record_keys)
        identities.append(identity[usable] if isinstance(identity, np.ndarray) else identity.take(pa.array(usable)))
        order.append(_order_values(chunk[config.updated_at_column])[usable])
    plan = DayPlan(np.concatenate(flags) if flags else np.zeros(0, np.uint8))
    del flags
    usable = np.flatnonzero((plan.flags & (_MISSING_KEY | _INVALID_TIMESTAMP)) == 0)
    if not len(usable):
        return plan
    # One array at a time, each list freed once joined: the planning peak is a few arrays of the usable rows.
    if all(isinstance(part, np.ndarray) for part in identities):
        codes = np.concatenate(identities)
    else:  # text keys (chunks of integers among them as their text): each distinct key once, then an integer a row
        texts = [pa.array(part).cast(pa.string()) if isinstance(part, np.ndarray) else part for part in identities]
        codes = pc.dictionary_encode(pa.chunked_array(texts, pa.string())).combine_chunks().indices
        del texts
        codes = codes.to_numpy(zero_copy_only=False)
    del identities
    updates = np.concatenate(order)
    del order
    # Sorted by key, then update (a stable sort: ties keep the row order), each key's last row is its latest update.
    ranked = np.lexsort((updates, codes))
    del updates
    sorted_codes = codes[ranked]
    del codes
    last_of_key = np.append(sorted_codes[1:] != sorted_codes[:-1], True)
    del sorted_codes
    plan.flags[usable[ranked[last_of_key]]] |= _WINNER
    return plan


@dataclass
class ChunkCleaner:
    """Cleans a planned day chunk by chunk (consecutive rows, in the day's order), adding up what it did.

    Each chunk gives its clean rows (in row order) and its quarantined rows; memory holds one chunk.
    """

    config: CleaningConfig
    plan: DayPlan
    pii: _PiiTally = None  # type: ignore[assignment]
    offset: int = 0
    clean_rows: int = 0
    quarantined_rows: int = 0
    truncated: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.pii = _PiiTally(PiiMasker(extra_patterns=self.config.extra_pii_patterns))

    def clean(self, chunk: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The chunk's clean rows and its quarantined rows; the next call takes the rows after these."""
        config, plan = self.config, self.plan
        rows = chunk.reset_index(drop=True)
        window = slice(self.offset, self.offset + len(rows))
        self.offset += len(rows)
        flags = plan.flags[window]
        record_keys = _record_keys(rows[config.key_column])
        survivors = rows.iloc[np.flatnonzero(flags & _WINNER)]

        cleaned_text: dict[str, pd.Series] = {}
        truncated = pd.Series(False, index=survivors.index)
        pii_per_row = pd.Series(0, index=survivors.index, dtype="int64")
        for column in config.text_columns:
            results = clean_texts(survivors[column].tolist(), self.pii.masker, config.max_chars.get(column))
            cleaned_text[column] = pd.Series([result.text for result in results], index=survivors.index, dtype=TEXT)
            truncated |= np.array([result.truncated for result in results], dtype=bool)
            pii_per_row += np.array([self.pii.count(result.pii_kinds) for result in results], dtype=np.int64)
        empty_text = np.logical_and.reduce([(texts == "").to_numpy() for texts in cleaned_text.values()])

        kept = ~empty_text
        # Each assigned Series is cut to the kept rows: an empty frame would otherwise adopt a Series' index.
        clean = survivors[kept].assign(
            **{column: texts[kept] for column, texts in cleaned_text.items()},
            record_key=record_keys.loc[survivors.index[kept]],
            text_truncated=truncated[kept],
            pii_masked=pii_per_row[kept],
        ).reset_index(drop=True)
        positions = {
            "missing_key": np.flatnonzero(flags & _MISSING_KEY),
            "invalid_timestamp": np.flatnonzero(flags & _INVALID_TIMESTAMP),
            "empty_text": survivors.index[empty_text].to_numpy(),
        }
        expected = sum(len(p) for p in positions.values())
        quarantine = _quarantine(rows, record_keys, positions, config, self.pii, (flags & _NULL_TIMESTAMP).astype(bool))
        if len(quarantine) != expected:
            raise RuntimeError(f"cleaning lost track of rows: {len(rows)} raw rows gave {len(clean)} clean and "
                               f"{len(quarantine)} quarantined, {expected} expected")
        self.clean_rows += len(clean)
        self.quarantined_rows += len(quarantine)
        self.truncated += int(clean["text_truncated"].sum())
        self.reasons.update(quarantine["quarantine_reason"].tolist())
        return clean, quarantine

    def result_counts(self) -> dict:
        """The day's counts once every chunk is cleaned: raw rows = clean + quarantined + duplicates removed."""
        if self.offset != self.plan.rows:
            raise RuntimeError(f"cleaned {self.offset} rows of a day of {self.plan.rows}")
        if self.plan.rows != self.clean_rows + self.quarantined_rows + self.plan.duplicates_removed:
            raise RuntimeError(
                f"cleaning lost track of rows: {self.plan.rows} raw != {self.clean_rows} clean + "
                f"{self.quarantined_rows} quarantined + {self.plan.duplicates_removed} duplicates"
            )
        return {
            "duplicates_removed": self.plan.duplicates_removed,
            "quarantine_reasons": {
                reason: self.reasons[reason] for reason in QUARANTINE_REASONS if self.reasons[reason]
            },
            "pii_masked": {kind: self.pii.totals[kind] for kind in self.pii.masker.kinds},
            "truncated": self.truncated,
        }


def clean_tickets(raw: pd.DataFrame, config: CleaningConfig, chunk_rows: int | None = None) -> CleanResult:
    """Clean a raw export of tickets.

    In order: rows without a key (`missing_key`) or with a null or unparseable timestamp
    (`invalid_timestamp`) are quarantined; the rest are de-duplicated by key, the latest
    `updated_at` winning (ties go to the later row; a null updated_at loses); the text columns of
    the winners are normalized, PII-masked and truncated; winners left with no text at all are
    quarantined (`empty_text`). `clean` is sorted by `record_key`. Quarantined text is PII-masked too.

    The same rules as the step's, which plans the day (`plan_day`) and cleans it a chunk at a time
    (`ChunkCleaner`); `chunk_rows` cuts `raw` the same way (the result does not depend on it).
    """
    check_columns(raw.columns, config)
    rows = raw.reset_index(drop=True)
    size = chunk_rows or max(len(rows), 1)
    chunks = [rows.iloc[start : start + size] for start in range(0, len(rows), size)] or [rows]
    key_columns = [config.key_column, config.timestamp_column, config.updated_at_column]
    plan = plan_day((chunk[key_columns] for chunk in chunks), config)
    cleaner = ChunkCleaner(config, plan)
    parts = [cleaner.clean(chunk) for chunk in chunks]
    counts = cleaner.result_counts()
    clean = pd.concat([part[0] for part in parts]) if len(parts) > 1 else parts[0][0]
    quarantine = pd.concat([part[1] for part in parts]) if len(parts) > 1 else parts[0][1]
    clean = clean.sort_values("record_key").reset_index(drop=True)
    return CleanResult(
        clean=clean,
        quarantine=quarantine.reset_index(drop=True),
        duplicates_removed=counts["duplicates_removed"],
        quarantine_reasons=counts["quarantine_reasons"],
        pii_masked=counts["pii_masked"],
        truncated=counts["truncated"],
    )
