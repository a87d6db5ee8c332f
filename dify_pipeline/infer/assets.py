"""Step 4 — send each record to the Dify app (once, ever, for the same inputs) and keep every outcome."""


from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from dify_pipeline.chain import Chain
from dify_pipeline.clean.pii import PiiMasker
from dify_pipeline.contract import EnrichmentContract
from dify_pipeline.infer.app_form import InputMappingError, check_input_mapping, input_variables
from dify_pipeline.infer.enrichment import (
    Outcome,
    RecordPlan,
    answer_sources,
    enrichment_columns,
    outcome_from_answer,
    plan_records,
    refused_inputs_outcome,
)
from dify_pipeline.infer.progress import Progress
from dify_pipeline.infer.stats import (
    CACHE,
    DUPLICATE,
    REFUSED,
    SENT,
    DayFigures,
    TokenPrices,
    blocked_day_message,
    latency_percentiles,
    row_costs,
)
from dify_pipeline.publish.preflight import check_sinks_before_paying
from dify_pipeline.resources.dify import DifyFatalError, DifyRequest, DifyResource, DifyResult
from dify_pipeline.resources.result_cache import CachedResult, CacheWriteError, ResultCache, ResultCacheSession
from dify_pipeline.resources.run_journal import RunJournal
from dify_pipeline.resources.search import SearchCluster
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import enrichment_fields, with_fields
from dify_pipeline.stages import day_folder, shard_file

BLOCKED_TAG = "dify_pipeline/blocked_by"  # on a run whose day a check stopped: the check's name


def build_enriched_asset(chain: Chain) -> dg.AssetsDefinition:
    """`enriched_<name>`: every clean record with the app's answer, in the pool of the contract's app."""
    key = chain.key(chain.enriched)

    @dg.asset(
        key=key,
        partitions_def=chain.partitions,
        group_name=chain.group,
        deps=[chain.key(chain.shards)],
        kinds={"dify", "parquet"},
        pool=chain.dify_pool,  # one step at a time across all runs holds the app's budget (dagster.yaml: pools)
        output_required=False,  # a blocked day is materialized without its output, so the publishing steps are skipped
        required_resource_keys={chain.dify_resource, "result_cache", "stage_storage", "parquet_output",
                                "elasticsearch"},
        check_specs=[
            dg.AssetCheckSpec(
                # Blocks the day by skipping the publishing steps rather than failing the run (blocking=True would),
                # so the checks that never run show as skipped, not failed: see the README's "A blocked day".
                "failure_rate_below_threshold", asset=key, partitions_def=chain.partitions,
                description="Records Dify could not enrich stay under the contract's max_failure_rate. A worse day "
                            "is not published: the step then withholds its output and the publishing steps are "
                            "skipped (the UI calls the check non-blocking because it does not fail the run).",
            ),
            dg.AssetCheckSpec(
                "single_app_version", asset=key, partitions_def=chain.partitions,
                description="All answers of the day come from one published version of the app (one workflow_id).",
            ),
        ],
    )
    def enriched_asset(context: dg.AssetExecutionContext):
        resources = context.resources
        search = chain.search(resources.elasticsearch)
        yield from _enrich_day(context, chain, getattr(resources, chain.dify_resource), resources.result_cache,
                               resources.stage_storage, resources.parquet_output, search)

    return enriched_asset


def _enrich_day(
    context: dg.AssetExecutionContext,
    chain: Chain,
    dify: DifyResource,
    result_cache: ResultCache,
    stage_storage: ObjectStorage,
    parquet_output: ObjectStorage,
    elasticsearch: SearchCluster,
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckResult]:
    """Every clean record with its category, summary and sentiment, or the error that prevented them.

    What Dify answers is stored in the result cache as it arrives, and judged against the contract when the rows
    are built: a re-run, a backfill or a resumed crash sends only the records whose inputs were never answered,
    and a contract failure is judged again for free. Runs that failed in Dify are retried by the next
    materialization of the day. A day over the failure-rate threshold fails the step with its failure samples.
    """
    contract = chain.contract
    mapping = contract.app.inputs
    outputs = contract.outputs
    try:
        variables = input_variables(dify.fetch_parameters())
        check_input_mapping(variables, mapping)  # before any paid call
    except (DifyFatalError, InputMappingError) as error:
        raise dg.Failure(description=str(error)) from None  # the message, not a stack trace, in the UI
    check_sinks_before_paying(parquet_output, elasticsearch, contract)
    app_identity = dify.app_identity()
    # Which app and prompt version answered the day, on the run itself (non-secret: a digest, never the key).
    context.instance.add_run_tags(context.run.run_id, {
        "dify/app": app_identity, "dify/app_mode": dify.app_mode, "dify/cache_version": contract.cache_version,
    })

    shard_paths = stage_storage.list_files(day_folder(stage_storage, chain.shards, context.partition_key))
    needed = ["record_key", *sorted(set(mapping.values()))]

    def plan_shard(shard: pa.Table) -> list[RecordPlan]:
        return plan_records(shard.select(needed).to_pylist(), mapping, variables, app_identity,
                            contract.cache_version)

    cache = result_cache.open()
    journal = RunJournal.open(result_cache.url) if result_cache.enabled else None
    answered: set[str] = set()
    try:
        # First pass, one shard at a time: the distinct inputs no earlier run or day answered.
        pending_inputs: dict[str, dict] = {}
        seen: set[str] = set()
        records = answered_before = 0
        for path in shard_paths:
            plans = plan_shard(stage_storage.read_parquet(path, columns=needed))
            records += len(plans)
            new = {p.cache_key: p.inputs for p in plans if not p.input_problem and p.cache_key not in seen}
            seen.update(p.cache_key for p in plans)
            known = cache.known(new)
            answered_before += len(known)
            pending_inputs.update((key, inputs) for key, inputs in new.items() if key not in known)
        distinct = len(seen)
        del seen
        started_runs = journal.pending(list(pending_inputs)) if journal else {}  # sent earlier: look up, don't pay again
        pending = [DifyRequest(key, inputs, started_runs.get(key)) for key, inputs in pending_inputs.items()]
        pending_keys = set(pending_inputs)
        del pending_inputs
        context.log.info(
            f"{records} records, {distinct} distinct inputs, {answered_before} answered before; "
            f"sending {len(pending)} to Dify ({dify.app_mode}, {dify.response_mode}, concurrency {dify.max_concurrency}, "
            f"rpm {dify.requests_per_minute or 'unlimited'})"
        )
        progress = Progress(len(pending))
        fresh_latencies: list[float] = []
        uncached: dict[str, Outcome] = {}  # this run's outcomes the cache does not hold (failed runs; all when off)

        def on_result(result: DifyResult) -> None:
            outcome = _from_call(result, outputs)
            if result.succeeded:  # what Dify answered, kept whatever the contract says: judged when rows are built
                cache.store(result.record_key, app_identity, contract.cache_version, _cacheable(outcome))
            if not result.succeeded or not cache.enabled:
                uncached[result.record_key] = outcome
            answered.add(result.record_key)
            if result.latency_ms is not None and result.attempts:  # not a run fetched after a crash: nothing sent
                fresh_latencies.append(result.latency_ms)
            line = progress.record(outcome.succeeded)
            if line:
                context.log.info(line)

        try:
            call_counters = dify.run_all(pending, on_result, journal=journal) if pending else {}
            cache.flush()
        except (DifyFatalError, CacheWriteError) as error:
            raise dg.Failure(
                description=f"{error}. The answers received so far are kept in the result cache: "
                "materialize the day again once this is fixed, and only the rest is sent."
            ) from None
        del pending

        # Second pass, one shard at a time: every answer judged against today's contract, the rows written.
        token_prices = _token_prices(contract)
        figures = DayFigures(mask=_masker(contract), estimate_currency=contract.price_currency,
                             label_outputs=tuple(contract.label_values()))
        output_folder = day_folder(stage_storage, chain.enriched, context.partition_key)
        written = []
        seen = set()
        for index, path in enumerate(shard_paths):
            shard = stage_storage.read_parquet(path)
            plans = plan_shard(shard)
            outcomes = _judge(plans, cache, uncached, pending_keys, outputs)
            sources, first_in_day = answer_sources(plans, outcomes, seen)
            paying = {plan.record_key for plan, source in zip(plans, sources) if source == SENT}
            enrichment = enrichment_columns(plans, outcomes, paying, app_identity, contract.cache_version,
                                            fields=outputs)
            per_row = [outcomes[plan.cache_key] for plan in plans]
            cost, estimated = row_costs(
                enrichment.column("total_price"), pa.array([o.prompt_tokens for o in per_row], pa.int64()),
                pa.array([o.completion_tokens for o in per_row], pa.int64()), enrichment.column("total_tokens"),
                token_prices,
            )
            figures.add_shard(enrichment, shard.column("record_key"), pa.array(sources, pa.string()),
                              pa.array(first_in_day, pa.bool_()), cost, estimated)
            table = _join(shard, enrichment, outputs)
            path = shard_file(stage_storage, chain.enriched, context.partition_key, index)
            stage_storage.write_parquet(path, table.schema, [table])
            written.append(path)
        stage_storage.remove(p for p in stage_storage.list_files(output_folder) if p not in written)
    finally:
        try:
            cache.close()  # commits the last group
            if journal is not None:  # once the answers are durable, their attempts need no looking up any more
                journal.forget(answered)
        finally:
            if journal is not None:
                journal.close()

    sent = len(pending_keys) - call_counters.get("resumed_runs", 0)  # runs started before a crash were fetched
    metadata = _metadata(figures, sent, call_counters, fresh_latencies, stage_storage.uri(output_folder))
    workflow_ids = sorted(figures.workflow_ids)
    if workflow_ids:  # the published app versions (workflow_id) whose answers the day holds
        context.instance.add_run_tags(context.run.run_id, {"dify/workflow_ids": ",".join(workflow_ids)})
    failure_rate = figures.failure_rate
    blocked = failure_rate > contract.max_failure_rate
    # The rate, the top codes with an example and record keys each, and what to do: in the check and the run's log.
    message = blocked_day_message(figures, contract.max_failure_rate, context.partition_key) if blocked else None
    check_results = [dg.AssetCheckResult(
        check_name="failure_rate_below_threshold", passed=not blocked, description=message,
        metadata={"failure_rate": failure_rate, "threshold": contract.max_failure_rate,
                  "failures_by_code": metadata["failures_by_code"], "failure_samples": metadata["failure_samples"]},
    ), dg.AssetCheckResult(
        check_name="single_app_version", passed=len(workflow_ids) <= 1,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"dify_workflow_ids": dg.MetadataValue.json(workflow_ids),
                  "hint": "answers from several app versions: bump contract.cache_version and re-run the day "
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

def _judge(plans: list[RecordPlan], cache: ResultCacheSession, uncached: dict[str, Outcome], sent_keys: set[str],
           outputs) -> dict[str, Outcome]:
    """The outcome of each distinct input of a shard: refused inputs, this run's uncached failures, and every
    stored answer judged against the contract's `outputs` now (a contract failure stored earlier is judged again,
    free)."""
    outcomes: dict[str, Outcome] = {}
    stored = cache.lookup(p.cache_key for p in plans if not p.input_problem and p.cache_key not in uncached)
    for plan in plans:
        key = plan.cache_key
        if key in outcomes:
            continue
        if plan.input_problem:
            outcomes[key] = refused_inputs_outcome(plan)
        elif key in uncached:
            outcomes[key] = uncached[key]
        elif key in stored:
            outcomes[key] = _from_cache(stored[key], outputs, from_cache=key not in sent_keys)
        else:  # the run stopped before it was answered
            outcomes[key] = Outcome(False, error_code="not_answered", error_message="not answered by this run")
    return outcomes


def _token_prices(contract: EnrichmentContract) -> TokenPrices | None:
    if contract.price_per_1k_input_tokens is None and contract.price_per_1k_output_tokens is None:
        return None
    return TokenPrices(contract.price_per_1k_input_tokens or 0.0, contract.price_per_1k_output_tokens or 0.0,
                       contract.price_currency)


def _masker(contract: EnrichmentContract):
    """Masks personal data in the error messages shown as failure samples (they may echo an answer)."""
    masker = PiiMasker(extra_patterns=contract.cleaning.extra_pii_patterns)
    return lambda text: masker.mask(text)[0]


def _from_call(result: DifyResult, outputs) -> Outcome:
    call = dict(attempts=result.attempts, latency_ms=result.latency_ms, total_tokens=result.total_tokens,
                total_price=result.total_price, currency=result.currency, run_id=result.run_id,
                workflow_id=result.workflow_id, prompt_tokens=getattr(result, "prompt_tokens", None),
                completion_tokens=getattr(result, "completion_tokens", None))
    if not result.succeeded:
        return Outcome(False, error_code=result.error_code, error_message=result.error_message, **call)
    return outcome_from_answer(result.outputs, outputs, **call)


def _from_cache(cached: CachedResult, outputs, from_cache: bool = True) -> Outcome:
    outcome = outcome_from_answer(
        cached.outputs, outputs, attempts=cached.attempts or 0, latency_ms=cached.latency_ms,
        total_tokens=cached.total_tokens, total_price=cached.total_price, currency=cached.currency,
        run_id=cached.run_id, workflow_id=cached.workflow_id, prompt_tokens=cached.prompt_tokens,
        completion_tokens=cached.completion_tokens,
    )
    return Outcome(**{**outcome.__dict__, "from_cache": from_cache})


def _cacheable(outcome: Outcome) -> CachedResult:
    return CachedResult(outputs=outcome.outputs, run_id=outcome.run_id, workflow_id=outcome.workflow_id,
                        total_tokens=outcome.total_tokens, total_price=outcome.total_price, currency=outcome.currency,
                        latency_ms=outcome.latency_ms, attempts=outcome.attempts,
                        prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens)


def _join(shard: pa.Table, enrichment: pa.Table, outputs) -> pa.Table:
    base = shard.drop_columns([n for n in enrichment.column_names if n in shard.column_names])
    schema = with_fields(base.schema, enrichment_fields(outputs))
    return pa.Table.from_arrays([*base.columns, *enrichment.columns], schema=schema)


def _metadata(figures: DayFigures, sent: int, call_counters: dict, fresh_latencies: list[float], path: str) -> dict:
    percentiles = latency_percentiles(fresh_latencies)
    cost = figures.cost()
    return {
        "rows": figures.rows,
        "dagster/row_count": figures.rows,
        "succeeded": figures.rows - figures.failed,
        "failed": figures.failed,
        "failure_rate": figures.failure_rate,
        "failures_by_code": dg.MetadataValue.json(dict(figures.failures.most_common())),
        "failure_samples": dg.MetadataValue.json(figures.failure_samples()),
        "requests_sent": sent,
        # Where the rows' answers came from: this run, a duplicate of this run's input, or an earlier run or day.
        "answered_this_run": figures.by_source[SENT],
        "duplicates_within_day": figures.by_source[DUPLICATE],
        "answered_from_cache": figures.by_source[CACHE],
        "cache_hits": figures.by_source[CACHE],
        "refused_inputs": figures.by_source[REFUSED],
        "http_attempts": call_counters.get("http_attempts", 0),
        "retries": call_counters.get("retries", 0),
        "throttled": call_counters.get("throttled", 0),
        "recovered_runs": call_counters.get("recovered_runs", 0),
        "resumed_runs": call_counters.get("resumed_runs", 0),
        # Each distinct input of the day counted once; "this run" is what this run paid for.
        "total_tokens": figures.tokens_day,
        "tokens_spent_this_run": figures.tokens_run,
        "total_price": float(round(figures.price_day, 6)),  # Dify's own price; float even when 0: one series
        "price_spent_this_run": float(round(figures.price_run, 6)),
        **cost,
        "failed_runs_charged": figures.failed_runs_charged,
        "latency_p50_ms": percentiles["p50"],
        "latency_p95_ms": percentiles["p95"],
        "latency_p99_ms": percentiles["p99"],
        "labels": dg.MetadataValue.json({name: dict(counts.most_common()) for name, counts in figures.labels.items()}),
        "dify_workflow_ids": dg.MetadataValue.json(sorted(figures.workflow_ids)),
        "path": dg.MetadataValue.path(path),
    }
