"""Step 4 — send each record to the Dify app (once for the same inputs, unless the contract asks another app version's
answer again) and keep every outcome."""


from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import dagster as dg
import pyarrow as pa

from dify_pipeline.chain import Chain
from dify_pipeline.clean.pii import PiiMasker
from dify_pipeline.contract import EnrichmentContract
from dify_pipeline.heap import frozen_heap
from dify_pipeline.infer.app_form import InputMappingError, check_input_mapping, input_variables
from dify_pipeline.infer.day_plan import DayInputs, DayPin, judge_shard
from dify_pipeline.infer.day_report import day_checks, day_metadata, token_prices
from dify_pipeline.infer.enrichment import (
    Outcome,
    RecordPlan,
    answer_sources,
    enrichment_columns,
    judge,
    plan_columns,
    plan_records,
    token_split,
)
from dify_pipeline.infer.key_digests import KeyDigests
from dify_pipeline.infer.progress import Progress
from dify_pipeline.infer.shards_answered import ShardsAnswered
from dify_pipeline.infer.stats import SENT, DayFigures, LatencySample, blocked_day_message, row_costs
from dify_pipeline.publish.preflight import check_sinks_before_paying
from dify_pipeline.resources.day_versions import DayVersions
from dify_pipeline.resources.dify import DifyFatalError, DifyRequest, DifyResource, DifyResult
from dify_pipeline.resources.result_cache import CacheWriteError, ResultCache
from dify_pipeline.resources.run_journal import RunJournal
from dify_pipeline.resources.search import SearchCluster
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import enrichment_fields, with_fields
from dify_pipeline.stages import day_folder, shard_file

BLOCKED_TAG = "dify_pipeline/blocked_by"  # on a run whose day a check stopped: the check's name
FORGET_EVERY = 5000  # answers between two drops of their journal attempts: the list stays small


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
        with frozen_heap():  # the day's passes and its sending: no full collection walks Dagster's heap
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
    """Every clean record with the app's answer, or the error that prevented it.

    What Dify answers is stored in the result cache as it arrives, and judged against the contract when the rows
    are built, a shard at a time in a thread beside the sending, as soon as every input of the shard and of the
    shards before it is answered (the requests leave in shard order; `infer.shards_answered`). A re-run, a
    backfill or a resumed crash sends only the records whose inputs were never answered, and a contract failure
    is judged again for free. Runs that failed in Dify are retried by the next
    materialization of the day. A workflow app answers a day with one published version (`app.pin_version`):
    the one that answered its first record, kept in the cache's database, or for this run only when the cache is
    off; cached answers of another version are reused or asked again as `app.other_version_answers` says. A day
    over the failure-rate threshold is not published, with its failure samples.
    """
    contract = chain.contract
    app = contract.app
    outputs = contract.outputs
    try:
        variables = input_variables(dify.fetch_parameters())
        check_input_mapping(variables, app.inputs)  # before any paid call
    except (DifyFatalError, InputMappingError) as error:
        raise dg.Failure(description=str(error)) from None  # the message, not a stack trace, in the UI
    check_sinks_before_paying(parquet_output, elasticsearch, contract)
    app_identity = dify.app_identity()
    # Which app and prompt version answered the day, on the run itself (non-secret: a digest, never the key).
    context.instance.add_run_tags(context.run.run_id, {
        "dify/app": app_identity, "dify/app_mode": dify.app_mode, "dify/cache_version": contract.cache_version,
    })

    shard_paths = stage_storage.list_files(day_folder(stage_storage, chain.shards, context.partition_key))
    needed = plan_columns(app.inputs, app.query)

    def plan_shard(shard: pa.Table) -> list[RecordPlan]:
        return plan_records(shard.select(needed).to_pylist(), app.inputs, variables, app_identity,
                            contract.cache_version, app.query)

    pinning = app.pin_version and dify.app_mode == "workflow"
    policy = app.other_version_answers
    cache = result_cache.open()
    journal = RunJournal.open(result_cache.url) if result_cache.enabled else None
    versions = DayVersions.open(result_cache.url) if pinning and result_cache.enabled else None
    pin = DayPin(versions, chain.name, date.fromisoformat(context.partition_key), app_identity,
                 contract.cache_version) if pinning else None
    forgettable: list[str] = []  # answered by this run, their attempts not yet dropped from the journal
    try:
        # First pass, one shard at a time: the distinct inputs no earlier run or day answered, as digests.
        day_inputs = DayInputs()
        for path in shard_paths:
            plans = plan_shard(stage_storage.read_parquet(path, columns=needed))
            day_inputs.add(plans, cache.workflow_ids(day_inputs.new_inputs(plans)))
        unanswered = day_inputs.finish()
        if pin is not None and pin.workflow_id is None and not len(unanswered) and policy == "reask":
            pin.pin_answered(day_inputs.answered_versions())  # all answered before, by several versions: the cheapest
        asked_again = day_inputs.to_ask_again(policy, pin.workflow_id) if pin is not None else KeyDigests()
        to_send = unanswered.union(asked_again) if len(asked_again) else unanswered  # a day's digests, not twice
        version = "" if pin is None else (f", the day pinned to app version {pin.workflow_id}" if pin.workflow_id
                                          else ", the day pinned to the version that answers first")
        context.log.info(
            f"{day_inputs.records} records, {day_inputs.distinct} distinct inputs, {day_inputs.answered_count} "
            f"answered before ({len(asked_again)} of them asked again){version}; sending {len(to_send)} to Dify "
            f"({dify.app_mode}, {dify.response_mode}, concurrency {dify.max_concurrency}, "
            f"rpm {dify.requests_per_minute or 'unlimited'})"
        )
        progress = Progress(len(to_send))
        answered = ShardsAnswered(len(shard_paths))
        # A day pinned by this run's first answer may ask answers of other versions again once pinned, which would
        # change shards already written: its rows wait for the end of the sending.
        rows_beside_sending = pin is None or pin.workflow_id is not None or not day_inputs.answered_count
        fresh_latencies = LatencySample()  # fixed memory, exact up to 100,000 answers
        this_run: dict[str, Outcome] = {}  # this run's outcomes the cache does not hold (failed runs; all when off)

        def on_result(result: DifyResult) -> None:
            key = result.record_key
            outcome = judge(result, outputs)
            if result.succeeded:  # what Dify answered, kept whatever the contract says: judged when rows are built
                cache.store(key, app_identity, contract.cache_version, result, replace=key in asked_again)
            if not result.succeeded or not cache.enabled:
                this_run[key] = outcome
            if journal is not None:
                forgettable.append(key)
                if len(forgettable) >= FORGET_EVERY:  # once these answers are committed, drop their attempts
                    cache.flush()
                    journal.forget(forgettable)
                    forgettable.clear()
            if result.latency_ms is not None and result.attempts:  # not a run fetched after a crash: nothing sent
                fresh_latencies.append(result.latency_ms)
            line = progress.record(outcome.succeeded)
            if line:
                context.log.info(line)
            answered.answered(key)  # after the cache took it: the rows read it from there

        def requests(batch: KeyDigests) -> Iterator[DifyRequest]:
            """The request of each input of `batch`, one shard read and planned again at a time (far cheaper than a
            call): the day's inputs are never all in memory."""
            for index, path in enumerate(shard_paths):
                plans = plan_shard(stage_storage.read_parquet(path, columns=needed))
                keys = [plan.cache_key for plan in plans]
                chosen = [plan for plan, taken in zip(plans, batch.take(keys)) if taken]
                started_runs = journal.pending([p.cache_key for p in chosen]) if journal and chosen else {}
                answered.sending(index, [plan.cache_key for plan in chosen])
                for plan in chosen:  # sent earlier: looked up, not paid again
                    yield plan.request(started_runs.get(plan.cache_key))
            answered.taken_all()

        def send(batch: KeyDigests) -> dict[str, int]:
            if not len(batch):
                return {}
            if pin is None:
                return dify.run_all(requests(batch), on_result, journal=journal)
            if pin.workflow_id is not None:
                return dify.run_all(requests(batch), on_result, journal=journal, workflow_id=pin.workflow_id)
            return dify.run_all(requests(batch), on_result, journal=journal, pin=pin.pin)

        # Second pass, one shard at a time, beside the sending: every answer judged against today's contract as soon
        # as its shard is answered, the rows written.
        figures = DayFigures(mask=_masker(contract), estimate_currency=contract.price_currency,
                             label_outputs=tuple(contract.label_values()))
        prices = token_prices(contract)
        output_folder = day_folder(stage_storage, chain.enriched, context.partition_key)

        def write_rows(sent_keys: KeyDigests) -> None:
            written = []
            seen = KeyDigests()
            for index, path in enumerate(shard_paths):
                if not answered.wait(index):
                    return  # the day stopped: its rows are written by the run that finishes it
                shard = stage_storage.read_parquet(path)
                plans = plan_shard(shard)
                stored = cache.lookup(p.cache_key for p in plans
                                      if not p.input_problem and p.cache_key not in this_run)
                sent_here = sent_keys.contains_keys([plan.cache_key for plan in plans])
                outcomes = judge_shard(plans, stored, this_run, sent_here, outputs)
                sources, first_in_day = answer_sources(plans, outcomes, seen)
                paying = {plan.record_key for plan, source in zip(plans, sources) if source == SENT}
                enrichment = enrichment_columns(plans, outcomes, paying, app_identity, contract.cache_version,
                                                fields=outputs)
                prompt_tokens, completion_tokens = token_split([outcomes[plan.cache_key] for plan in plans])
                cost, estimated = row_costs(enrichment.column("total_price"), prompt_tokens, completion_tokens,
                                            enrichment.column("total_tokens"), prices)
                figures.add_shard(enrichment, shard.column("record_key"), pa.array(sources, pa.string()),
                                  pa.array(first_in_day, pa.bool_()), cost, estimated)
                table = _join(shard, enrichment, outputs)
                path = shard_file(stage_storage, chain.enriched, context.partition_key, index)
                stage_storage.write_parquet(path, table.schema, [table])
                written.append(path)
            stage_storage.remove(p for p in stage_storage.list_files(output_folder) if p not in written)

        rows = ThreadPoolExecutor(1, thread_name_prefix="enriched-rows") if rows_beside_sending else None
        rows_written = rows.submit(write_rows, to_send) if rows is not None else None
        stopped = True
        try:
            call_counters = send(to_send)
            if pin is not None and pin.workflow_id is not None:  # pinned by this run's first answer: re-ask now
                later = day_inputs.to_ask_again(policy, pin.workflow_id).difference(to_send)
                asked_again = asked_again.union(later)
                to_send = to_send.union(later)
                progress.total += len(later)
                call_counters = dict(Counter(call_counters) + Counter(send(later)))
            cache.flush()
            stopped = False
        except (DifyFatalError, CacheWriteError) as error:
            raise dg.Failure(description=_stopped_message(error, pin, context.partition_key)) from None
        finally:
            answered.end(stopped)
            if rows is not None:
                rows.shutdown()  # the writer finishes its shard, or stops at its next one
        sent_keys = to_send
        del day_inputs, unanswered
        if rows_written is not None:
            rows_written.result()  # its error, if it had one
        else:
            write_rows(sent_keys)
    finally:
        try:
            cache.close()  # commits the last group
            if journal is not None:  # once the answers are durable, their attempts need no looking up any more
                journal.forget(forgettable)
        finally:
            if journal is not None:
                journal.close()
            if versions is not None:
                versions.close()

    sent = len(sent_keys) - call_counters.get("resumed_runs", 0)  # runs started before a crash were fetched
    pinned = pin.workflow_id if pin is not None else None
    metadata = day_metadata(figures, sent, call_counters, fresh_latencies, stage_storage.uri(output_folder),
                            asked_again=len(asked_again), pinned_workflow_id=pinned)
    workflow_ids = sorted(figures.workflow_ids)
    tags = {"dify/pinned_workflow_id": pinned} if pinned else {}
    if workflow_ids:  # the published app versions (workflow_id) whose answers the day holds
        tags["dify/workflow_ids"] = ",".join(workflow_ids)
    if tags:
        context.instance.add_run_tags(context.run.run_id, tags)
    blocked = figures.failure_rate > contract.max_failure_rate
    # The rate, the top codes with an example and record keys each, and what to do: in the check and the run's log.
    message = blocked_day_message(figures, contract.max_failure_rate, context.partition_key) if blocked else None
    check_results = day_checks(figures, metadata, contract.max_failure_rate, message)
    if not blocked:
        yield dg.MaterializeResult(metadata=metadata, check_results=check_results)
        return
    # The day's stage is written and recorded, with its check failed; without the output, Dagster skips the steps
    # that would publish it, and the run says what stopped it.
    context.log.error(message)
    context.instance.add_run_tags(context.run.run_id, {BLOCKED_TAG: "failure_rate_below_threshold"})
    yield dg.AssetMaterialization(asset_key=context.asset_key, partition=context.partition_key, metadata=metadata)
    yield from check_results


def _stopped_message(error: Exception, pin: DayPin | None, day: str) -> str:
    """Why the day stopped, and what to do: the answers so far are kept, so a later run sends only the rest."""
    if isinstance(error, DifyFatalError) and error.code == "workflow_version_unavailable" and pin is not None:
        return (f"{error}. Day {day} is pinned to app version {pin.workflow_id}, which Dify no longer runs: bump "
                "the contract's cache_version to answer the day again with the version published now (the answers "
                "received so far are kept in the result cache).")
    return (f"{error}. The answers received so far are kept in the result cache: materialize the day again once "
            "this is fixed, and only the rest is sent.")


def _masker(contract: EnrichmentContract):
    """Masks personal data in the error messages shown as failure samples (they may echo an answer)."""
    masker = PiiMasker(extra_patterns=contract.cleaning.extra_pii_patterns)
    return lambda text: masker.mask(text)[0]


def _join(shard: pa.Table, enrichment: pa.Table, outputs) -> pa.Table:
    base = shard.drop_columns([n for n in enrichment.column_names if n in shard.column_names])
    schema = with_fields(base.schema, enrichment_fields(outputs))
    return pa.Table.from_arrays([*base.columns, *enrichment.columns], schema=schema)
