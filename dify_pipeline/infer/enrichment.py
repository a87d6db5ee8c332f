"""From clean rows to Dify inputs, and from Dify outcomes to the enrichment columns of each row."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from dify_pipeline.infer.app_form import InputVariable, fit_inputs
from dify_pipeline.infer.cache_key import cache_key
from dify_pipeline.infer.errors import DifyCallError
from dify_pipeline.infer.outputs import parse_enrichment
from dify_pipeline.schemas import ENRICHMENT_FIELDS, PIPELINE_VERSION


@dataclass(frozen=True)
class RecordPlan:
    record_key: str
    inputs: dict
    cache_key: str
    inputs_truncated: bool
    input_problem: str | None = None  # the app would refuse these inputs: fail the record, don't send it


@dataclass(frozen=True)
class Outcome:
    """What happened to one distinct input: a parsed answer, or an error code and message."""

    succeeded: bool
    outputs: object = None
    category: str | None = None
    summary: str | None = None
    sentiment: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    latency_ms: float | None = None
    total_tokens: int | None = None
    total_price: float | None = None
    currency: str | None = None
    run_id: str | None = None
    workflow_id: str | None = None
    from_cache: bool = False


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


def outcome_from_answer(outputs, categories: Sequence[str], **call: object) -> Outcome:
    """Parse a successful call's outputs; a contract breach is a permanent failure, not a crash."""
    try:
        parsed = parse_enrichment(outputs, categories)
    except DifyCallError as error:
        return Outcome(False, outputs=outputs, error_code=error.code, error_message=error.message, **call)
    return Outcome(True, outputs=outputs, category=parsed.category, summary=parsed.summary,
                   sentiment=parsed.sentiment, **call)


def refused_inputs_outcome(plan: RecordPlan) -> Outcome:
    return Outcome(False, error_code="invalid_input", error_message=plan.input_problem)


def enrichment_columns(
    plans: Sequence[RecordPlan], outcomes: dict[str, Outcome], first_use: set[str],
    app_identity: str, cache_version: str, enriched_at: datetime | None = None,
) -> pa.Table:
    """The ENRICHMENT_FIELDS of `plans`, in order. A repeat of an input already answered this run, or an
    answer from the cache, is marked `cache_hit` (paid once)."""
    enriched_at = enriched_at or datetime.now(timezone.utc)
    columns: dict[str, list] = {name: [] for name in ENRICHMENT_FIELDS.names}
    for plan in plans:
        outcome = outcomes[plan.cache_key]
        fresh = plan.record_key in first_use and not outcome.from_cache
        values = {
            "category": outcome.category, "summary": outcome.summary, "sentiment": outcome.sentiment,
            "outputs_json": None if outcome.outputs is None else json.dumps(outcome.outputs, ensure_ascii=False),
            "dify_status": "succeeded" if outcome.succeeded else "failed",
            "error_code": outcome.error_code, "error_message": outcome.error_message,
            "attempts": outcome.attempts if fresh else 0,
            "latency_ms": outcome.latency_ms if fresh else None,
            "total_tokens": outcome.total_tokens, "total_price": outcome.total_price, "currency": outcome.currency,
            "dify_run_id": outcome.run_id, "dify_workflow_id": outcome.workflow_id,
            "cache_hit": outcome.succeeded and not fresh,
            "inputs_truncated": plan.inputs_truncated, "enriched_at": enriched_at,
            "app_identity": app_identity, "cache_version": cache_version, "pipeline_version": PIPELINE_VERSION,
        }
        for name, value in values.items():
            columns[name].append(value)
    return pa.table(columns, schema=ENRICHMENT_FIELDS)
