"""Step 4 — send each record to the Dify app (once, ever, for the same inputs) and keep every outcome."""


from collections import Counter
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from dify_pipeline.infer.app_form import InputMappingError, check_input_mapping, input_variables
from dify_pipeline.infer.enrichment import (
    Outcome,
    enrichment_columns,
    refused_inputs_outcome,
    outcome_from_answer,
    plan_records,
)
from dify_pipeline.infer.progress import Progress
from dify_pipeline.infer.stats import error_counts, latency_percentiles
from dify_pipeline.partitions import daily_partitions
from dify_pipeline.publish.preflight import check_sinks_before_paying
from dify_pipeline.resources.dify import DifyFatalError, DifyRequest, DifyResource, DifyResult
from dify_pipeline.resources.result_cache import CachedResult, ResultCache
from dify_pipeline.resources.search import SearchCluster
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import ENRICHMENT_FIELDS, with_fields
from dify_pipeline.settings import PipelineSettings
from dify_pipeline.stages import day_folder, shard_file

BLOCKED_TAG = "dify_pipeline/blocked_by"  # on a run whose day a check stopped: the check's name


@dg.asset(
    partitions_def=daily_partitions,
    group_name="tickets",
    deps=["ticket_shards"],
    kinds={"dify", "parquet"},
    pool="dify",  # one step at a time across all runs holds the Dify budget (dagster.yaml: concurrency.pools)
    output_required=False,  # a blocked day is materialized without its output, so the publishing steps are skipped
    check_specs=[
        dg.AssetCheckSpec(
            # Blocks the day by skipping the publishing steps rather than failing the run (blocking=True would),
            # so the checks that never run show as skipped, not failed: see the README's "A blocked day".
            "failure_rate_below_threshold", asset="enriched_tickets", partitions_def=daily_partitions,
            description="Records Dify could not enrich stay under settings.max_failure_rate. A worse day is not "
                        "published: enriched_tickets then withholds its output and the publishing steps are skipped "
                        "(the UI calls the check non-blocking because it does not fail the run).",
        ),
        dg.AssetCheckSpec(
            "single_app_version", asset="enriched_tickets", partitions_def=daily_partitions,
            description="All answers of the day come from one published version of the app (one workflow_id).",
        ),
    ],
)
def enriched_tickets(
    context: dg.AssetExecutionContext,
    dify: DifyResource,
    result_cache: ResultCache,
    stage_storage: ObjectStorage,
    settings: PipelineSettings,
    parquet_output: ObjectStorage,
    elasticsearch: SearchCluster,
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckResult]:
    """Every clean record with its category, summary and sentiment, or the error that prevented them.

    Successful answers are stored in the result cache the moment they arrive: a re-run, a backfill or a
    resumed crash sends only the records whose inputs were never answered. Failed records are retried
    by the next materialization of the day.
    """
    try:
        variables = input_variables(dify.fetch_parameters())
        check_input_mapping(variables, settings.input_mapping)  # before any paid call
    except (DifyFatalError, InputMappingError) as error:
        raise dg.Failure(description=str(error)) from None  # the message, not a stack trace, in the UI
    check_sinks_before_paying(parquet_output, elasticsearch, settings)
    app_identity = dify.app_identity()
    # Which app and prompt version answered the day, on the run itself (non-secret: a digest, never the key).
    context.instance.add_run_tags(context.run.run_id, {
        "dify/app": app_identity, "dify/app_mode": dify.app_mode, "dify/cache_version": settings.cache_version,
    })

    shard_folder = day_folder(stage_storage, "ticket_shards", context.partition_key)
    shards = [stage_storage.read_parquet(path) for path in stage_storage.list_files(shard_folder)]
    needed = ["record_key", *sorted(set(settings.input_mapping.values()))]
    plans_by_shard = [
        plan_records(shard.select(needed).to_pylist(), settings.input_mapping, variables, app_identity, settings.cache_version)
        for shard in shards
    ]
    plans = [plan for shard_plans in plans_by_shard for plan in shard_plans]

    outcomes: dict[str, Outcome] = {}  # by cache key: identical inputs share one outcome
    first_use: dict[str, str] = {}  # cache key → the record that pays for it
    for plan in plans:
        first_use.setdefault(plan.cache_key, plan.record_key)
        if plan.input_problem:
            outcomes[plan.cache_key] = refused_inputs_outcome(plan)
    inputs_by_key = {p.cache_key: p.inputs for p in plans}

    cache = result_cache.open()
    try:
        for key, cached in cache.lookup(first_use).items():
            outcomes[key] = _from_cache(cached, settings.categories)
        unanswered = [key for key in first_use if key not in outcomes]
        started_runs = cache.started_runs(unanswered)  # interrupted earlier: fetch, don't pay again
        pending = [DifyRequest(key, inputs_by_key[key], started_runs.get(key)) for key in unanswered]
        context.log.info(
            f"{len(plans)} records, {len(first_use)} distinct inputs, {len(first_use) - len(pending)} answered before; "
            f"sending {len(pending)} to Dify ({dify.app_mode}, {dify.response_mode}, concurrency {dify.max_concurrency}, "
            f"rpm {dify.requests_per_minute or 'unlimited'})"
        )
        progress = Progress(len(pending))
        fresh_latencies: list[float] = []

        def on_result(result: DifyResult) -> None:
            outcome = _from_call(result, settings.categories)
            if outcome.succeeded:
                cache.store(result.record_key, app_identity, settings.cache_version, _cacheable(outcome))
            else:
                cache.forget_run(result.record_key)
            outcomes[result.record_key] = outcome
            if result.latency_ms is not None and result.attempts:  # not a run fetched after a crash: nothing sent
                fresh_latencies.append(result.latency_ms)
            line = progress.record(outcome.succeeded)
            if line:
                context.log.info(line)

        try:
            call_counters = dify.run_all(pending, on_result, on_run_started=cache.note_run_started) if pending else {}
        except DifyFatalError as error:
            raise dg.Failure(
                description=f"{error}. The answers received so far are kept in the result cache: "
                "materialize the day again once this is fixed, and only the rest is sent."
            ) from None
    finally:
        cache.close()

    paying = set(first_use.values()) - {first_use[k] for k in first_use if outcomes[k].from_cache}
    output_folder = day_folder(stage_storage, "enriched_tickets", context.partition_key)
    written, tables = [], []
    for index, (shard, shard_plans) in enumerate(zip(shards, plans_by_shard)):
        enrichment = enrichment_columns(shard_plans, outcomes, paying, app_identity, settings.cache_version)
        table = _join(shard, enrichment)
        path = shard_file(stage_storage, "enriched_tickets", context.partition_key, index)
        stage_storage.write_parquet(path, table.schema, [table])
        written.append(path)
        tables.append(enrichment)
    stage_storage.remove(p for p in stage_storage.list_files(output_folder) if p not in written)

    sent = len(pending) - call_counters.get("resumed_runs", 0)  # runs started before a crash were fetched, not sent
    metadata = _metadata(tables, sent, call_counters, fresh_latencies, stage_storage.uri(output_folder))
    workflow_ids = metadata["dify_workflow_ids"].value
    if workflow_ids:  # the published app versions (workflow_id) whose answers the day holds
        context.instance.add_run_tags(context.run.run_id, {"dify/workflow_ids": ",".join(workflow_ids)})
    failure_rate = metadata["failure_rate"]
    blocked = failure_rate > settings.max_failure_rate
    message = (f"{context.partition_key}: {metadata['failed']} of {metadata['rows']} records failed "
               f"({failure_rate:.1%}, threshold {settings.max_failure_rate:.1%}); the day is not published. "
               f"Failures by code: {metadata['failures_by_code'].value}") if blocked else None
    check_results = [dg.AssetCheckResult(
        check_name="failure_rate_below_threshold", passed=not blocked, description=message,
        metadata={"failure_rate": failure_rate, "threshold": settings.max_failure_rate,
                  "failures_by_code": metadata["failures_by_code"]},
    ), dg.AssetCheckResult(
        check_name="single_app_version", passed=len(workflow_ids) <= 1,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"dify_workflow_ids": dg.MetadataValue.json(workflow_ids),
                  "hint": "answers from several app versions: bump settings.cache_version and re-run the day "
                          "to answer it all with the current version"},
    )]
    if not blocked:
        yield dg.MaterializeResult(metadata=metadata, check_results=check_results)
        return
    # The day's stage is written and recorded, with its check failed; without the output, Dagster skips the steps
    # that would publish it, and the run says what stopped it.
    context.log.error(message)
    context.instance.add_run_tags(context.run.run_id, {BLOCKED_TAG: "failure_rate_below_threshold"})
    yield dg.AssetMaterialization(asset_key=context.asset_key, partition=context.partition_key, metadata=metadata)
    yield from check_results


def _from_call(result: DifyResult, categories) -> Outcome:
    call = dict(attempts=result.attempts, latency_ms=result.latency_ms, total_tokens=result.total_tokens,
                total_price=result.total_price, currency=result.currency, run_id=result.run_id,
                workflow_id=result.workflow_id)
    if not result.succeeded:
        return Outcome(False, error_code=result.error_code, error_message=result.error_message, **call)
    return outcome_from_answer(result.outputs, categories, **call)


def _from_cache(cached: CachedResult, categories) -> Outcome:
    outcome = outcome_from_answer(
        cached.outputs, categories, attempts=cached.attempts or 0, latency_ms=cached.latency_ms,
        total_tokens=cached.total_tokens, total_price=cached.total_price, currency=cached.currency,
        run_id=cached.run_id, workflow_id=cached.workflow_id,
    )
    return Outcome(**{**outcome.__dict__, "from_cache": True})


def _cacheable(outcome: Outcome) -> CachedResult:
    return CachedResult(outputs=outcome.outputs, run_id=outcome.run_id, workflow_id=outcome.workflow_id,
                        total_tokens=outcome.total_tokens, total_price=outcome.total_price, currency=outcome.currency,
                        latency_ms=outcome.latency_ms, attempts=outcome.attempts)


def _join(shard: pa.Table, enrichment: pa.Table) -> pa.Table:
    base = shard.drop_columns([n for n in enrichment.column_names if n in shard.column_names])
    schema = with_fields(base.schema, ENRICHMENT_FIELDS)
    return pa.Table.from_arrays([*base.columns, *enrichment.columns], schema=schema)


def _metadata(tables: list[pa.Table], sent: int, call_counters: dict, fresh_latencies: list[float], path: str) -> dict:
    enrichment = pa.concat_tables(tables) if tables else ENRICHMENT_FIELDS.empty_table()
    rows = enrichment.num_rows
    status = enrichment.column("dify_status").to_pylist()
    failed = sum(1 for s in status if s == "failed")
    tokens = enrichment.column("total_tokens").to_pylist()
    hits = enrichment.column("cache_hit").to_pylist()
    cache_hits = sum(1 for hit in hits if hit)
    prices = enrichment.column("total_price").to_pylist()
    # What the day's answers cost when they were paid, and what this run paid (cache hits cost nothing now).
    spent_tokens = sum(t for t, hit in zip(tokens, hits) if t and not hit)
    spent_price = sum(p for p, hit in zip(prices, hits) if p and not hit)
    workflow_ids = sorted({w for w in enrichment.column("dify_workflow_id").to_pylist() if w})
    percentiles = latency_percentiles(fresh_latencies)
    categories = Counter(c for c in enrichment.column("category").to_pylist() if c)
    return {
        "rows": rows,
        "dagster/row_count": rows,
        "succeeded": rows - failed,
        "failed": failed,
        "failure_rate": round(failed / rows, 4) if rows else 0.0,
        "failures_by_code": dg.MetadataValue.json(error_counts(enrichment.column("error_code").to_pylist())),
        "requests_sent": sent,
        "cache_hits": cache_hits,
        "http_attempts": call_counters.get("http_attempts", 0),
        "retries": call_counters.get("retries", 0),
        "throttled": call_counters.get("throttled", 0),
        "recovered_runs": call_counters.get("recovered_runs", 0),
        "resumed_runs": call_counters.get("resumed_runs", 0),
        "total_tokens": sum(t for t in tokens if t),
        "total_price": float(round(sum(p for p in prices if p), 6)),  # float even when 0: one series to plot
        "tokens_spent_this_run": spent_tokens,
        "price_spent_this_run": float(round(spent_price, 6)),
        "latency_p50_ms": percentiles["p50"],
        "latency_p95_ms": percentiles["p95"],
        "latency_p99_ms": percentiles["p99"],
        "categories": dg.MetadataValue.json(dict(categories.most_common())),
        "dify_workflow_ids": dg.MetadataValue.json(workflow_ids),
        "path": dg.MetadataValue.path(path),
    }
