"""Arrow schemas of the stages, defined once. Source columns pass through; the enrichment columns are the
contract's outputs, typed by their declared type, then the pipeline's own fixed columns."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

import pyarrow as pa

from dify_pipeline.contract import TICKET_OUTPUTS, OutputField


def _package_version() -> str:
    try:
        return version("dify_pipeline")
    except PackageNotFoundError:  # a checkout on sys.path without installing it
        return "unknown"


PIPELINE_VERSION = f"dify_pipeline/{_package_version()}"

# Added by clean_tickets (the rest of its columns are the source table's own).
RECORD_KEY = "record_key"
CLEAN_FIELDS = pa.schema([
    pa.field(RECORD_KEY, pa.string(), nullable=False),
    pa.field("text_truncated", pa.bool_()),
    pa.field("pii_masked", pa.int64()),
])
QUARANTINE_FIELDS = pa.schema([
    pa.field(RECORD_KEY, pa.string()),
    pa.field("quarantine_reason", pa.string(), nullable=False),
    pa.field("quarantine_detail", pa.string()),
])
SHARD_FIELD = pa.field("shard", pa.int32(), nullable=False)

# Each output type of a contract as an Arrow type (a label is dictionary-encoded: few distinct values).
OUTPUT_ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "label": pa.dictionary(pa.int32(), pa.string()),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "list": pa.list_(pa.string()),
    "json": pa.string(),  # the value as JSON text
}

# Added by the enrichment step after the outputs, one row per clean record whether Dify succeeded or not.
PIPELINE_ENRICHMENT_FIELDS = pa.schema([
    pa.field("outputs_json", pa.string()),
    pa.field("dify_status", pa.dictionary(pa.int32(), pa.string()), nullable=False),  # succeeded | failed
    pa.field("error_code", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("attempts", pa.int32()),
    pa.field("latency_ms", pa.float64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("total_price", pa.float64()),
    pa.field("currency", pa.string()),
    pa.field("dify_run_id", pa.string()),
    pa.field("dify_workflow_id", pa.string()),
    pa.field("cache_hit", pa.bool_()),
    pa.field("inputs_truncated", pa.bool_()),  # cut to the app's declared max_length before sending
    pa.field("enriched_at", pa.timestamp("us", tz="UTC")),
    pa.field("app_identity", pa.string()),
    pa.field("cache_version", pa.string()),
    pa.field("pipeline_version", pa.string()),
])


def output_fields(outputs: Mapping[str, OutputField]) -> pa.Schema:
    """The contract's outputs as columns, in declared order, nullable (a failed record has none)."""
    return pa.schema([pa.field(name, OUTPUT_ARROW_TYPES[field.type]) for name, field in outputs.items()])


def enrichment_fields(outputs: Mapping[str, OutputField]) -> pa.Schema:
    """What the enrichment step adds to each clean row: the outputs, then the pipeline's fixed columns."""
    return pa.schema(list(output_fields(outputs)) + list(PIPELINE_ENRICHMENT_FIELDS))


ENRICHMENT_FIELDS = enrichment_fields(TICKET_OUTPUTS)  # the ticket example's


def with_fields(base: pa.Schema, extra: pa.Schema) -> pa.Schema:
    """`base` without any field `extra` redefines, then `extra`'s fields."""
    names = set(extra.names)
    return pa.schema([f for f in base if f.name not in names] + list(extra))


# The published dataset (tickets_parquet): one folder per day, `dt=YYYY-MM-DD`, read as a Hive partition.
PARTITION_COLUMN = "dt"  # in the folder name only, never inside the files (readers would see it twice)
INTERNAL_COLUMNS = frozenset({SHARD_FIELD.name})  # how the pipeline cut its work: not part of the data


def published_schema(enriched: pa.Schema, outputs: Mapping[str, OutputField]) -> pa.Schema:
    """The schema of the published day: the source's own columns as exported, every timestamp with a zone
    (UTC), then the pipeline's columns with their fixed types (CLEAN_FIELDS, then `enrichment_fields(outputs)`,
    which carry the versions that produced each row: pipeline_version, app_identity, cache_version,
    dify_workflow_id). Internal columns are dropped."""
    pipeline = list(CLEAN_FIELDS) + list(enrichment_fields(outputs))
    pipeline_names = {f.name for f in pipeline}
    source = [f for f in enriched if f.name not in pipeline_names and f.name not in INTERNAL_COLUMNS]
    if any(f.name == PARTITION_COLUMN for f in source):
        raise ValueError(
            f"the source has a column named {PARTITION_COLUMN!r}, which is the published dataset's partition "
            "column (dt=YYYY-MM-DD folders): rename it in the source query or view"
        )
    return pa.schema([_with_zone(f) for f in source] + pipeline)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with exactly `schema`'s columns, in its order and types (casting where the types differ)."""
    selected = batch.select(schema.names)
    return selected if selected.schema == schema else selected.cast(schema)


def _with_zone(field: pa.Field) -> pa.Field:
    if pa.types.is_timestamp(field.type) and field.type.tz is None:
        return field.with_type(pa.timestamp(field.type.unit, tz="UTC"))  # the export writes instants in UTC
    return field
