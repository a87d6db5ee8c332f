"""Pure pieces of the export: identifier validation, the day's query, and DB-type → Arrow-type mapping."""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import sqlalchemy as sa

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def validate_identifier(name: str, what: str) -> str:
    """Table and column names come from configuration: accept plain identifiers only."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):  # match() lets "name\n" through
        raise ValueError(f"{what} must be a plain SQL identifier (letters, digits, underscore), got {name!r}")
    return name


def local_naive(moment: datetime, source_timezone: str) -> datetime:
    """A DATETIME column holds wall-clock time in the source's zone: convert an aware bound to it."""
    return moment.astimezone(ZoneInfo(source_timezone)).replace(tzinfo=None)


def day_query(table: sa.Table, timestamp_column: str) -> sa.Select:
    """SELECT every column of the rows whose timestamp lies in [:window_start, :window_end)."""
    column = table.c[timestamp_column]
    return sa.select(table).where(
        column >= sa.bindparam("window_start"), column < sa.bindparam("window_end")
    )


def arrow_type(sql_type: sa.types.TypeEngine) -> pa.DataType:
    """The Arrow type that keeps a column's meaning: ids stay integers, timestamps stay timestamps."""
    if isinstance(sql_type, sa.Boolean):
        return pa.bool_()
    if isinstance(sql_type, sa.Integer):
        return pa.int64()
    if isinstance(sql_type, sa.Numeric) and not isinstance(sql_type, sa.Float):
        scale = sql_type.scale if sql_type.scale is not None else 0
        precision = sql_type.precision or 38
        return pa.decimal128(min(precision, 38), scale) if scale or sql_type.precision else pa.float64()
    if isinstance(sql_type, sa.Float):
        return pa.float64()
    if isinstance(sql_type, sa.DateTime):
        # timestamptz values arrive aware (already instants); only naive wall-clock needs the source zone
        return pa.timestamp("us", tz="UTC") if sql_type.timezone else pa.timestamp("us")
    if isinstance(sql_type, sa.Date):
        return pa.date32()
    if isinstance(sql_type, (sa.LargeBinary, sa.types._Binary)):
        return pa.binary()
    return pa.string()


def to_record_batch(rows: list, columns: list[str], types: list[pa.DataType], source_timezone: str) -> pa.RecordBatch:
    """Transpose fetched rows into a record batch; naive timestamps become aware (source zone → UTC)."""
    return columns_to_record_batch(list(zip(*rows)) or [[] for _ in columns], columns, types, source_timezone)


def columns_to_record_batch(
    values_by_column: list, columns: list[str], types: list[pa.DataType], source_timezone: str
) -> pa.RecordBatch:
    """A record batch from each column's values, built column by column in Arrow.

    Each column takes Arrow's fast path when its values already fit the type, and falls back to Python
    value by value only when they do not (bytes in a broken encoding, parsed JSON, Decimal in a float
    column). Timestamps and dates may arrive as text (`2026-11-20 01:26:36.191643`, as MySQL sends them):
    they are parsed in Arrow, and MySQL's zero dates (`0000-00-00`), which are no moment, become null.
    """
    arrays = []
    for values, arrow in zip(values_by_column, types):
        if pa.types.is_string(arrow):
            array = _fast_or(values, arrow, lambda v: [_as_text(x) for x in v])
        elif pa.types.is_floating(arrow):  # NUMERIC without precision: drivers hand back Decimal
            array = _fast_or(values, arrow, lambda v: [float(x) if isinstance(x, Decimal) else x for x in v])
        elif pa.types.is_timestamp(arrow) or pa.types.is_date(arrow):
            array = _temporal(values, arrow)
        else:
            array = pa.array(values, type=arrow)
        if pa.types.is_timestamp(arrow) and arrow.tz is None:
            array = pa.compute.assume_timezone(array, source_timezone, ambiguous="earliest", nonexistent="earliest")
            array = array.cast(pa.timestamp("us", tz="UTC"))
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=columns)


def arrow_schema(columns: list[str], types: list[pa.DataType]) -> pa.Schema:
    return pa.schema(
        pa.field(name, pa.timestamp("us", tz="UTC") if pa.types.is_timestamp(type_) else type_)
        for name, type_ in zip(columns, types)
    )


def _fast_or(values, arrow: pa.DataType, slow) -> pa.Array:
    try:
        return pa.array(values, type=arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(slow(values), type=arrow)


def _temporal(values, arrow: pa.DataType) -> pa.Array:
    first = next((v for v in values if v is not None), None)
    if not isinstance(first, (str, bytes)):  # datetime/date objects (SQLite, PostgreSQL, default converters)
        try:
            return pa.array(values, type=arrow)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a driver's text among them (PyMySQL's zero dates)
            values = [v if isinstance(v, (str, bytes)) or v is None else str(v) for v in values]
    text = pa.array(values, type=pa.string())
    text = pa.compute.if_else(pa.compute.starts_with(text, "0000-00-00"), pa.scalar(None, pa.string()), text)
    try:
        return text.cast(arrow)
    except pa.ArrowInvalid:  # e.g. 2026-11-00, which MySQL accepts in lenient modes: not a moment either
        return pa.array([_parsed_or_none(v, arrow) for v in text.to_pylist()], type=arrow)


def _parsed_or_none(text: str | None, arrow: pa.DataType):
    if text is None:
        return None
    try:
        return pa.scalar(text).cast(arrow).as_py()
    except pa.ArrowInvalid:
        return None


def _as_text(value):
    """Text columns may hold bytes with a broken encoding; keep them as text, never crash the export."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).decode("gb18030", errors="replace")
    if isinstance(value, (set, frozenset)):  # MySQL SET, parsed by SQLAlchemy: back to MySQL's own text
        return ",".join(sorted(value))
    if isinstance(value, (dict, list)):  # JSON columns come back parsed: keep them JSON, not Python repr
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
