"""Turn a raw export of tickets into one clean, PII-masked row per record, and quarantine the rest."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
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


def _check_columns(raw: pd.DataFrame, config: CleaningConfig) -> None:
    needed = [config.key_column, config.timestamp_column, config.updated_at_column, *config.text_columns]
    missing = [column for column in needed if column not in raw.columns]
    if missing:
        raise ValueError(f"raw tickets lack the configured columns {missing}; they have {list(raw.columns)}")
    clashing = [column for column in ADDED_COLUMNS if column in raw.columns]
    if clashing:
        raise ValueError(f"raw tickets already have columns that cleaning adds: {clashing}")


def _clean_text(
    value: str | bytes | None, max_chars: int | None, masker: PiiMasker
) -> tuple[str, bool, tuple[str, ...]]:
    """The cleaned text, whether it was truncated, and the kinds of PII masked in it."""
    # Mask after normalizing (entities can hide an @) and before truncating (a cut can split a phone).
    text, found = masker.mask_and_find(normalize_text(value))
    was_truncated = False
    if max_chars is not None:
        text, was_truncated = truncate_text(text, max_chars)
    return text, was_truncated, tuple(kind for kind, _ in found)


def _clean_column(
    values: list[object], max_chars: int | None, pii: _PiiTally
) -> tuple[list[str], list[bool], list[int]]:
    """Cleaned texts, whether each was truncated, and how many PII values each had masked."""
    inputs = [_text_input(value) for value in values]
    # Identical values are cleaned once: subjects in particular repeat a lot.
    cleaned = {text: _clean_text(text, max_chars, pii.masker) for text in dict.fromkeys(inputs)}
    results = [cleaned[text] for text in inputs]
    return (
        [text for text, _, _ in results],
        [was_truncated for _, was_truncated, _ in results],
        [pii.count(kinds) for _, _, kinds in results],
    )


def _mask_raw(value: object, pii: _PiiTally) -> str | None:
    text = _text_input(value)
    if text is None:
        return None
    masked, found = pii.masker.mask_and_find(decode_bytes(text) if isinstance(text, bytes) else text)
    pii.count(tuple(kind for kind, _ in found))
    return masked


def _quarantine(
    rows: pd.DataFrame,
    record_keys: pd.Series,
    positions_by_reason: dict[str, np.ndarray],
    config: CleaningConfig,
    pii: _PiiTally,
) -> pd.DataFrame:
    """The quarantined rows as they came, text PII-masked, with their key, reason and a short detail."""
    detail_by_reason = {
        "missing_key": f"{config.key_column} is null or blank",
        "empty_text": f"{' and '.join(config.text_columns)} empty after cleaning",
    }
    timestamp_is_null = rows[config.timestamp_column].isna().to_numpy()
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


def clean_tickets(raw: pd.DataFrame, config: CleaningConfig) -> CleanResult:
    """Clean a raw export of tickets.

    In order: rows without a key (`missing_key`) or with a null or unparseable timestamp
    (`invalid_timestamp`) are quarantined; the rest are de-duplicated by key, the latest
    `updated_at` winning (ties go to the later row; a null updated_at loses); the text columns of
    the winners are normalized, PII-masked and truncated; winners left with no text at all are
    quarantined (`empty_text`). `clean` is sorted by `record_key`. Quarantined text is PII-masked too.
    """
    _check_columns(raw, config)
    rows = raw.reset_index(drop=True)
    pii = _PiiTally(PiiMasker(extra_patterns=config.extra_pii_patterns))

    record_keys = _record_keys(rows[config.key_column])
    missing_key = record_keys.isna().to_numpy()
    invalid_timestamp = ~missing_key & _as_datetimes(rows[config.timestamp_column]).isna().to_numpy()
    usable = ~(missing_key | invalid_timestamp)

    candidates = pd.DataFrame(
        {
            "record_key": record_keys[usable],
            "updated_at": _as_datetimes(rows[config.updated_at_column])[usable],
            "position": np.flatnonzero(usable),
        }
    )
    # A stable ascending sort with nulls first leaves each key's latest update last (ties: the later row).
    latest = candidates.sort_values("updated_at", kind="stable", na_position="first").drop_duplicates(
        "record_key", keep="last"
    )
    duplicates_removed = len(candidates) - len(latest)
    survivors = rows.iloc[np.sort(latest["position"].to_numpy())]

    cleaned_text: dict[str, pd.Series] = {}
    truncated = pd.Series(False, index=survivors.index)
    pii_per_row = pd.Series(0, index=survivors.index, dtype="int64")
    for column in config.text_columns:
        max_chars = config.max_chars.get(column)
        texts, column_truncated, column_pii = _clean_column(survivors[column].tolist(), max_chars, pii)
        cleaned_text[column] = pd.Series(texts, index=survivors.index, dtype=TEXT)
        truncated |= np.array(column_truncated, dtype=bool)
        pii_per_row += np.array(column_pii, dtype=np.int64)
    empty_text = np.logical_and.reduce([(texts == "").to_numpy() for texts in cleaned_text.values()])

    kept = ~empty_text
    # Each assigned Series is cut to the kept rows: an empty frame would otherwise adopt a Series' index.
    clean = survivors[kept].assign(
        **{column: texts[kept] for column, texts in cleaned_text.items()},
        record_key=record_keys.loc[survivors.index[kept]],
        text_truncated=truncated[kept],
        pii_masked=pii_per_row[kept],
    )
    clean = clean.sort_values("record_key").reset_index(drop=True)

    quarantine_positions = {
        "missing_key": np.flatnonzero(missing_key),
        "invalid_timestamp": np.flatnonzero(invalid_timestamp),
        "empty_text": survivors.index[empty_text].to_numpy(),
    }
    quarantine = _quarantine(rows, record_keys, quarantine_positions, config, pii)
    if len(raw) != len(clean) + len(quarantine) + duplicates_removed:
        raise RuntimeError(
            f"cleaning lost track of rows: {len(raw)} raw != {len(clean)} clean + {len(quarantine)} quarantined"
            f" + {duplicates_removed} duplicates"
        )
    return CleanResult(
        clean=clean,
        quarantine=quarantine,
        duplicates_removed=duplicates_removed,
        quarantine_reasons={
            reason: count
            for reason in QUARANTINE_REASONS
            if (count := int((quarantine["quarantine_reason"] == reason).sum()))
        },
        pii_masked={kind: pii.totals[kind] for kind in pii.masker.kinds},
        truncated=int(clean["text_truncated"].sum()),
    )
