"""The search side of a row: the index mapping the package owns, and row → document."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from itertools import repeat

import pyarrow as pa
import pyarrow.compute as pc

from dify_pipeline.contract import OutputField

MAPPING_VERSION = 1
DAY_FIELD = "dt"  # the day a document belongs to: what a re-run replaces and the count check counts

# Each output type of a contract in the index: labels and lists of text are exact values (filters, aggregations),
# text is full text, JSON is kept in the document but not indexed (its shape is the app's).
OUTPUT_PROPERTIES: dict[str, dict] = {
    "text": {"type": "text"},
    "label": {"type": "keyword"},
    "integer": {"type": "long"},
    "number": {"type": "double"},
    "boolean": {"type": "boolean"},
    "list": {"type": "keyword"},
    "json": {"type": "text", "index": False},
}

# Fields every document has, with their types; the source's other columns go under `attributes`.
_FIXED_PROPERTIES: dict[str, dict] = {
    "record_key": {"type": "keyword"},
    "dt": {"type": "date", "format": "yyyy-MM-dd"},
    "load_id": {"type": "keyword"},
    "dify_status": {"type": "keyword"},
    "error_code": {"type": "keyword"},
    "error_message": {"type": "text"},
    "attempts": {"type": "integer"},
    "latency_ms": {"type": "float"},
    "total_tokens": {"type": "long"},
    "total_price": {"type": "double"},
    "currency": {"type": "keyword"},
    "dify_run_id": {"type": "keyword"},
    "dify_workflow_id": {"type": "keyword"},
    "cache_hit": {"type": "boolean"},
    "inputs_truncated": {"type": "boolean"},
    "text_truncated": {"type": "boolean"},
    "pii_masked": {"type": "integer"},
    "enriched_at": {"type": "date"},
    "app_identity": {"type": "keyword"},
    "cache_version": {"type": "keyword"},
    "pipeline_version": {"type": "keyword"},
    # Deliberately open: the source table's own columns vary by deployment.
    "attributes": {"type": "object", "dynamic": True},
}
_NOT_INDEXED = {"outputs_json", "shard"}  # kept in Parquet only
_SET_BY_LOAD = {DAY_FIELD, "load_id"}  # never taken from a row


def index_mapping(text_columns: Iterable[str], timestamp_columns: Iterable[str],
                  outputs: Mapping[str, OutputField]) -> dict:
    """`dynamic: strict` at the top level, so a field nobody planned for is an error, not a surprise; each of the
    contract's `outputs` typed by its declared type (a new output is added to an existing index's mapping)."""
    properties = {name: dict(OUTPUT_PROPERTIES[field.type]) for name, field in outputs.items()}
    properties.update(_FIXED_PROPERTIES)
    properties.update({name: {"type": "text"} for name in text_columns})
    properties.update({name: {"type": "date"} for name in timestamp_columns})
    return {"dynamic": "strict", "_meta": {"dify_pipeline_mapping_version": MAPPING_VERSION}, "properties": properties}


def to_documents(
    rows: Iterable[dict], day: str, load_id: str, mapped_fields: set[str], index: str
) -> Iterator[dict]:
    """Bulk actions: `_id` is the record key, so indexing a day again overwrites instead of duplicating.

    Mapped columns go to the top level, the source's other columns under `attributes`; a source column
    named like a field the pipeline sets itself (`dt`, `load_id`) goes under `attributes` too.
    """
    for row in rows:
        source = {DAY_FIELD: day, "load_id": load_id}
        attributes = {}
        for name, value in row.items():
            if name in _NOT_INDEXED:
                continue
            value = _json_value(value)
            if name in mapped_fields and name not in _SET_BY_LOAD:
                source[name] = value
            else:
                attributes[name] = value
        source["attributes"] = attributes
        yield {"_op_type": "index", "_index": index, "_id": row["record_key"], "_source": source}


def batch_documents(
    batch: pa.RecordBatch, day: str, load_id: str, mapped_fields: set[str], index: str
) -> Iterator[dict]:
    """`to_documents` of a record batch read from the enriched Parquet, ~5x faster.

    Values are made JSON-ready column by column in Arrow (timestamps to ISO-8601 text in UTC, decimals to
    floats, NaN to null, dictionaries decoded) before any Python object exists, instead of value by value.
    """
    names = [name for name in batch.schema.names if name not in _NOT_INDEXED]
    columns = {name: _json_ready(batch.column(name)) for name in names}
    top = [name for name in names if name in mapped_fields and name not in _SET_BY_LOAD]
    nested = [name for name in names if name not in top]
    top_rows = zip(*(columns[name] for name in top)) if top else repeat(())
    nested_rows = zip(*(columns[name] for name in nested)) if nested else repeat(())
    for key, top_values, nested_values in zip(columns["record_key"], top_rows, nested_rows):
        source = {DAY_FIELD: day, "load_id": load_id, **dict(zip(top, top_values))}
        source["attributes"] = dict(zip(nested, nested_values))
        yield {"_op_type": "index", "_index": index, "_id": key, "_source": source}


def day_query(day: str) -> dict:
    """The documents of one day."""
    return {"term": {DAY_FIELD: day}}


def stale_query(day: str, load_id: str) -> dict:
    """The documents of one day that the load `load_id` did not write: records that left the day."""
    return {"bool": {"filter": [day_query(day)], "must_not": [{"term": {"load_id": load_id}}]}}


def _json_ready(array: pa.Array) -> list:
    """A column as JSON-ready Python values, converted in Arrow: the same values `_json_value` gives."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_timestamp(kind):
        if kind.tz is None:  # wall-clock time without a zone stays without one, as isoformat() writes it
            return pc.strftime(array, format="%Y-%m-%dT%H:%M:%S").to_pylist()
        utc = array.cast(pa.timestamp(kind.unit, tz="UTC"))
        return pc.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()  # %S carries the fraction
    if pa.types.is_date(kind) or pa.types.is_time(kind):
        return array.cast(pa.string()).to_pylist()
    if pa.types.is_decimal(kind):
        array = array.cast(pa.float64())
        kind = array.type
    if pa.types.is_floating(kind):
        return pc.if_else(pc.is_finite(array), array, pa.scalar(None, kind)).to_pylist()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [_json_value(value) for value in array.to_pylist()]
    return array.to_pylist()


def _json_value(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
