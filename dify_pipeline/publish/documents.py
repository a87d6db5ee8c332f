"""The Elasticsearch side of a row: the index mapping the package owns, and row → document."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal

MAPPING_VERSION = 1

# Fields every document has, with their types; the source's other columns go under `attributes`.
_FIXED_PROPERTIES: dict[str, dict] = {
    "record_key": {"type": "keyword"},
    "dt": {"type": "date", "format": "yyyy-MM-dd"},
    "load_id": {"type": "keyword"},
    "category": {"type": "keyword"},
    "sentiment": {"type": "keyword"},
    "summary": {"type": "text"},
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


def index_mapping(text_columns: Iterable[str], timestamp_columns: Iterable[str]) -> dict:
    """`dynamic: strict` at the top level, so a field nobody planned for is an error, not a surprise."""
    properties = dict(_FIXED_PROPERTIES)
    properties.update({name: {"type": "text"} for name in text_columns})
    properties.update({name: {"type": "date"} for name in timestamp_columns})
    return {"dynamic": "strict", "_meta": {"dify_pipeline_mapping_version": MAPPING_VERSION}, "properties": properties}


def to_documents(
    rows: Iterable[dict], day: str, load_id: str, mapped_fields: set[str], index: str
) -> Iterator[dict]:
    """Bulk actions: `_id` is the record key, so indexing a day again overwrites instead of duplicating."""
    for row in rows:
        source = {"dt": day, "load_id": load_id}
        attributes = {}
        for name, value in row.items():
            if name in _NOT_INDEXED:
                continue
            value = _json_value(value)
            if name in mapped_fields:
                source[name] = value
            else:
                attributes[name] = value
        source["attributes"] = attributes
        yield {"_op_type": "index", "_index": index, "_id": row["record_key"], "_source": source}


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
