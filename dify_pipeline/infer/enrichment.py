"""From clean rows to Dify inputs, and from Dify outcomes to the enrichment columns of each row."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from dify_pipeline.contract import OutputField
from dify_pipeline.infer.app_form import InputVariable, fit_inputs
from dify_pipeline.infer.cache_key import cache_key
from dify_pipeline.infer.outputs import parse_outputs
from dify_pipeline.infer.stats import CACHE, DUPLICATE, REFUSED, SENT
from dify_pipeline.resources.dify.errors import DifyCallError
from dify_pipeline.schemas import PIPELINE_VERSION, enrichment_fields


@dataclass(frozen=True)
class RecordPlan:
    record_key: str
    inputs: dict
    cache_key: str
    inputs_truncated: bool
    input_problem: str | None = None  # the app would refuse these inputs: fail the record, don't send it


@dataclass(frozen=True)
class Outcome:
    """What happened to one distinct input: the contract's values parsed from the answer, or an error code and
    message."""

    succeeded: bool
    outputs: object = None  # the answer as Dify gave it
    values: Mapping[str, object] | None = None  # output name → typed value (contract.outputs)
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    latency_ms: float | None = None
    total_tokens: int | None = None
    total_price: float | None = None
    currency: str | None = None
    run_id: str | None = None
    workflow_id: str | None = None
    from_cache: bool = False  # answered by an earlier run or day
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def plan_records(
    rows: Iterable[dict], mapping: dict[str, str], variables: dict[str, InputVariable],
    app_identity: str, cache_version: str,
) -> list[RecordPlan]:
    """The inputs each record sends (mapped, fitted to the app's form) and its cache key."""
    plans = []
    for row in rows:
        fitted = fit_inputs({variable: row.get(column) for variable, column in mapping.items()}, variables)
        plans.append(RecordPlan(
            record_key=row["record_key"], inputs=fitted.inputs,
            cache_key=cache_key(app_identity, cache_version, fitted.inputs),
            inputs_truncated=fitted.truncated, input_problem=fitted.problem,
        ))
    return plans


def outcome_from_answer(outputs, fields: Mapping[str, OutputField], **call: object) -> Outcome:
    """Parse a successful call's outputs against the contract's `fields`; a breach is a permanent failure, not a
    crash."""
    try:
        values = parse_outputs(outputs, fields)
    except DifyCallError as error:
        return Outcome(False, outputs=outputs, error_code=error.code, error_message=error.message, **call)
    return Outcome(True, outputs=outputs, values=values, **call)


def refused_inputs_outcome(plan: RecordPlan) -> Outcome:
    return Outcome(False, error_code="invalid_input", error_message=plan.input_problem)


def enrichment_columns(
    plans: Sequence[RecordPlan], outcomes: dict[str, Outcome], first_use: set[str],
    app_identity: str, cache_version: str, *, fields: Mapping[str, OutputField], enriched_at: datetime | None = None,
) -> pa.Table:
    """The `schemas.enrichment_fields(fields)` of `plans`, in order: each declared output, then the pipeline's. A repeat of an input already answered this run, or an
    answer from the cache, is marked `cache_hit` (paid once). Built column by column: each distinct outcome
    once, then taken into row order."""
    enriched_at = enriched_at or datetime.now(UTC)
    positions: dict[str, int] = {}
    index = pa.array([positions.setdefault(plan.cache_key, len(positions)) for plan in plans], pa.int32())
    distinct = [outcomes[key] for key in positions]
    fresh = pa.array([plan.record_key in first_use and not outcomes[plan.cache_key].from_cache for plan in plans],
                     pa.bool_())

    def column(values: list, kind: pa.DataType) -> pa.Array:
        return pa.array(values, kind).take(index)

    succeeded = column([o.succeeded for o in distinct], pa.bool_())
    outputs_json = [None if o.outputs is None else json.dumps(o.outputs, ensure_ascii=False) for o in distinct]
    rows = len(plans)
    schema = enrichment_fields(fields)
    arrays = {
        name: column([None if o.values is None else o.values.get(name) for o in distinct], schema.field(name).type)
        for name in fields
    }
    arrays |= {
        "outputs_json": column(outputs_json, pa.string()),
        "dify_status": pc.if_else(succeeded, "succeeded", "failed").dictionary_encode(),
        "error_code": column([o.error_code for o in distinct], pa.string()),
        "error_message": column([o.error_message for o in distinct], pa.string()),
        "attempts": pc.if_else(fresh, column([o.attempts for o in distinct], pa.int32()), pa.scalar(0, pa.int32())),
        "latency_ms": pc.if_else(fresh, column([o.latency_ms for o in distinct], pa.float64()),
                                 pa.scalar(None, pa.float64())),
        "total_tokens": column([o.total_tokens for o in distinct], pa.int64()),
        "total_price": column([o.total_price for o in distinct], pa.float64()),
        "currency": column([o.currency for o in distinct], pa.string()),
        "dify_run_id": column([o.run_id for o in distinct], pa.string()),
        "dify_workflow_id": column([o.workflow_id for o in distinct], pa.string()),
        "cache_hit": pc.and_(succeeded, pc.invert(fresh)),
        "inputs_truncated": pa.array([plan.inputs_truncated for plan in plans], pa.bool_()),
        "enriched_at": pa.repeat(pa.scalar(enriched_at, pa.timestamp("us", tz="UTC")), rows),
        "app_identity": pa.repeat(pa.scalar(app_identity, pa.string()), rows),
        "cache_version": pa.repeat(pa.scalar(cache_version, pa.string()), rows),
        "pipeline_version": pa.repeat(pa.scalar(PIPELINE_VERSION, pa.string()), rows),
    }
    return pa.Table.from_arrays([arrays[f.name].cast(f.type) for f in schema], schema=schema)


def answer_sources(plans: Sequence[RecordPlan], outcomes: dict[str, Outcome], seen: set[str]) -> tuple[list[str], list[bool]]:
    """Per record, where its answer came from (stats.SENT, DUPLICATE, CACHE or REFUSED) and whether it is the
    first record of its inputs in the day (`seen` holds the inputs met in earlier shards; updated)."""
    sources, first = [], []
    for plan in plans:
        outcome = outcomes[plan.cache_key]
        is_first = plan.cache_key not in seen
        seen.add(plan.cache_key)
        if plan.input_problem:
            sources.append(REFUSED)
            first.append(False)
            continue
        sources.append(CACHE if outcome.from_cache else SENT if is_first else DUPLICATE)
        first.append(is_first)
    return sources, first
