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
from dify_pipeline.resources.dify import DifyRequest, DifyResult
from dify_pipeline.resources.dify.errors import DifyCallError
from dify_pipeline.resources.run_journal import Attempt
from dify_pipeline.schemas import PIPELINE_VERSION, enrichment_fields


@dataclass(frozen=True)
class RecordPlan:
    record_key: str
    inputs: dict
    cache_key: str
    inputs_truncated: bool
    input_problem: str | None = None  # the app would refuse these inputs: fail the record, don't send it
    query: str | None = None  # chat apps: the message sent with the inputs

    def request(self, earlier: Attempt | None = None) -> DifyRequest:
        """What the client sends for this input; its record is the cache key (one request per distinct input)."""
        return DifyRequest(self.cache_key, self.inputs, earlier, query=self.query)


@dataclass(frozen=True)
class Outcome:
    """One distinct input judged: what Dify answered (`result`, None when it was never sent) and, against today's
    contract, its typed `values` or an error code and message."""

    result: DifyResult | None = None
    values: Mapping[str, object] | None = None  # output name → typed value (contract.outputs)
    error_code: str | None = None
    error_message: str | None = None
    from_cache: bool = False  # answered by an earlier run or day

    @property
    def succeeded(self) -> bool:
        return self.result is not None and self.error_code is None


NOT_ANSWERED = Outcome(error_code="not_answered", error_message="not answered by this run")


def plan_columns(mapping: Mapping[str, str], query_column: str | None = None) -> list[str]:
    """The columns of a clean shard that planning reads: the key, the mapped inputs, a chat app's message."""
    return ["record_key", *sorted(set(mapping.values()) | ({query_column} if query_column else set()))]


def plan_records(
    rows: Iterable[dict], mapping: dict[str, str], variables: dict[str, InputVariable],
    app_identity: str, cache_version: str, query_column: str | None = None,
) -> list[RecordPlan]:
    """The inputs each record sends (mapped, fitted to the app's form), a chat app's message (the `query_column`,
    part of the cache key: another message is another answer) and the cache key."""
    plans = []
    for row in rows:
        fitted = fit_inputs({variable: row.get(column) for variable, column in mapping.items()}, variables)
        query = problem = None
        if query_column is not None:
            query = "" if row.get(query_column) is None else str(row[query_column])
            if not query.strip():  # Dify refuses an empty message: fail the record without paying
                problem = f"the chat message (column {query_column!r}) is empty"
        plans.append(RecordPlan(
            record_key=row["record_key"], inputs=fitted.inputs,
            cache_key=cache_key(app_identity, cache_version, fitted.inputs, query),
            inputs_truncated=fitted.truncated, input_problem=fitted.problem or problem, query=query,
        ))
    return plans


def judge(result: DifyResult, fields: Mapping[str, OutputField], *, from_cache: bool = False) -> Outcome:
    """Dify's `result` against the contract's `fields`: a failed run keeps its error, an answer breaking the
    contract is a permanent failure (not a crash), the rest gets its typed values."""
    if not result.succeeded:
        return Outcome(result, error_code=result.error_code or "failed", error_message=result.error_message,
                       from_cache=from_cache)
    try:
        values = parse_outputs(result.outputs, fields)
    except DifyCallError as error:
        return Outcome(result, error_code=error.code, error_message=error.message, from_cache=from_cache)
    return Outcome(result, values=values, from_cache=from_cache)


def refused_inputs_outcome(plan: RecordPlan) -> Outcome:
    return Outcome(error_code="invalid_input", error_message=plan.input_problem)


def token_split(outcomes: Sequence[Outcome]) -> tuple[pa.Array, pa.Array]:
    """(prompt tokens, completion tokens) of each outcome, null where Dify did not split them."""
    return (pa.array([o.result.prompt_tokens if o.result else None for o in outcomes], pa.int64()),
            pa.array([o.result.completion_tokens if o.result else None for o in outcomes], pa.int64()))


def enrichment_columns(
    plans: Sequence[RecordPlan], outcomes: dict[str, Outcome], first_use: set[str],
    app_identity: str, cache_version: str, *, fields: Mapping[str, OutputField], enriched_at: datetime | None = None,
) -> pa.Table:
    """The `schemas.enrichment_fields(fields)` of `plans`, in order: each declared output, then the pipeline's. A
    repeat of an input already answered this run, or an answer from the cache, is marked `cache_hit` (paid once).
    Built column by column: each distinct outcome once, then taken into row order."""
    enriched_at = enriched_at or datetime.now(UTC)
    positions: dict[str, int] = {}
    index = pa.array([positions.setdefault(plan.cache_key, len(positions)) for plan in plans], pa.int32())
    distinct = [outcomes[key] for key in positions]
    fresh = pa.array([plan.record_key in first_use and not outcomes[plan.cache_key].from_cache for plan in plans],
                     pa.bool_())

    def column(values: list, kind: pa.DataType) -> pa.Array:
        return pa.array(values, kind).take(index)

    def call(name: str, kind: pa.DataType, missing: object = None) -> pa.Array:  # from Dify's result, if any
        return column([missing if o.result is None else getattr(o.result, name) for o in distinct], kind)

    succeeded = column([o.succeeded for o in distinct], pa.bool_())
    answers = [None if o.result is None else o.result.outputs for o in distinct]
    outputs_json = [None if answer is None else json.dumps(answer, ensure_ascii=False) for answer in answers]
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
        "attempts": pc.if_else(fresh, call("attempts", pa.int32(), 0), pa.scalar(0, pa.int32())),
        "latency_ms": pc.if_else(fresh, call("latency_ms", pa.float64()), pa.scalar(None, pa.float64())),
        "total_tokens": call("total_tokens", pa.int64()),
        "total_price": call("total_price", pa.float64()),
        "currency": call("currency", pa.string()),
        "dify_run_id": call("run_id", pa.string()),
        "dify_workflow_id": call("workflow_id", pa.string()),
        "cache_hit": pc.and_(succeeded, pc.invert(fresh)),
        "inputs_truncated": pa.array([plan.inputs_truncated for plan in plans], pa.bool_()),
        "enriched_at": pa.repeat(pa.scalar(enriched_at, pa.timestamp("us", tz="UTC")), rows),
        "app_identity": pa.repeat(pa.scalar(app_identity, pa.string()), rows),
        "cache_version": pa.repeat(pa.scalar(cache_version, pa.string()), rows),
        "pipeline_version": pa.repeat(pa.scalar(PIPELINE_VERSION, pa.string()), rows),
    }
    return pa.Table.from_arrays([arrays[f.name].cast(f.type) for f in schema], schema=schema)


def answer_sources(plans: Sequence[RecordPlan], outcomes: dict[str, Outcome],
                   seen: set[str]) -> tuple[list[str], list[bool]]:
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
