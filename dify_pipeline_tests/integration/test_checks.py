"""The enriched day's blocking checks on real services: they pass on a good day, attached to that day's
materialization, and a bad day fails them before anything is published."""

from __future__ import annotations

import asyncio
from datetime import date

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as RecordStatus
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus as Status

from dify_pipeline.definitions import build_definitions
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import day_folder
from dify_pipeline_dev.demo.sample_data import generate_tickets, insert_tickets
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig, Fault
from dify_pipeline_tests.integration.pipeline import (
    DAY,
    DIFY_KEY,
    check_results,
    materialization_metadata,
    run_day,
    ticket_steps,
)

ENRICHED_CHECKS = {"enriched_reconciles_with_clean", "unique_record_keys", "categories_allowed"}


def evaluations(result) -> dict[str, tuple[bool, int | None, dict]]:
    """check name → (passed, storage id of the materialization it judged, metadata) for every check in the run."""
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            target = evaluation.target_materialization_data
            found[evaluation.check_name] = (evaluation.passed, target.storage_id if target else None,
                                            {k: v.value for k, v in evaluation.metadata.items()})
    return found


def materialized(result) -> set[str]:
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def recorded_checks(instance, run_id: str) -> dict[str, tuple[Status, str | None, str | None]]:
    """check name → (status as the UI resolves it, partition of the record, partition of its evaluation), for
    every check of the code location that `run_id` planned, read back from the instance's storage."""
    context = LoadingContextForTest(instance)
    found = {}
    for key in build_definitions().resolve_asset_graph().asset_check_keys:
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=20):
            if record.run_id == run_id and key.name not in found:  # the newest record of the run
                evaluation = record.evaluation if record.status != RecordStatus.PLANNED else None
                found[key.name] = (asyncio.run(record.resolve_status(context)), record.partition,
                                   evaluation.partition if evaluation else None)
    return found


def test_every_check_result_carries_its_day(pipeline_env, source_tickets, dagster_instance, dify_emulator):
    result = run_day(dagster_instance)
    assert result.success
    recorded = recorded_checks(dagster_instance, result.run_id)
    # All the checks but the freshness checks, which judge the deployment now, not a day, and run from a sensor.
    assert set(recorded) == {key.name for key in build_definitions().resolve_asset_graph().asset_check_keys} - {
        "freshness_check"}
    # The partition is stored with each result: the Checks tab, the partition page and the plots show the day.
    assert {name: status for name, (status, _, _) in recorded.items()} == dict.fromkeys(recorded, Status.SUCCEEDED)
    assert {name: (record, evaluated) for name, (_, record, evaluated) in recorded.items()} == \
        dict.fromkeys(recorded, (DAY, DAY))


def test_a_blocked_day_skips_the_checks_after_it_and_is_not_published(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=5,
                                               faults=[Fault(kind="failed_run", match="退款")]))
    blocked = run_day(dagster_instance)
    recorded = recorded_checks(dagster_instance, blocked.run_id)
    status = {name: resolved for name, (resolved, _, _) in recorded.items()}
    assert status["failure_rate_below_threshold"] == Status.FAILED
    assert recorded["failure_rate_below_threshold"][1:] == (DAY, DAY)
    # What never ran because the day was stopped is skipped, not failed: the checks of the publishing steps.
    assert status["parquet_matches_enriched"] == status["elasticsearch_matches_parquet"] == Status.SKIPPED
    assert Status.EXECUTION_FAILED not in status.values()
    # Visibly not published: neither output has the day, and the run says which check stopped it.
    assert materialized(blocked) == {"raw_tickets", "clean_tickets", "quarantined_tickets", "ticket_shards",
                                   "enriched_tickets"}
    for asset in ("tickets_parquet", "tickets_elasticsearch"):
        latest = dagster_instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[DAY]), limit=1).records
        assert not latest or latest[0].run_id != blocked.run_id
    run = dagster_instance.get_run_by_id(blocked.run_id)
    assert run.tags["dify_pipeline/blocked_by"] == "failure_rate_below_threshold"
    # The failed check carries the rate and examples of what failed, and its description says why.
    [evaluation] = [e.event_specific_data for e in blocked.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                    and e.event_specific_data.check_name == "failure_rate_below_threshold"]
    assert evaluation.metadata["failure_rate"].value > 0.02
    assert "not published" in evaluation.description


def test_a_good_day_passes_every_check_attached_to_its_partition(pipeline_env, source_tickets, dagster_instance,
                                                                 dify_emulator):
    result = run_day(dagster_instance)
    assert result.success
    checks = evaluations(result)
    assert ENRICHED_CHECKS | {"failure_rate_below_threshold", "counts_reconcile", "parquet_matches_enriched",
                              "elasticsearch_matches_parquet"} <= set(checks)
    assert all(passed for passed, _, _ in checks.values()), checks
    # Each result is attached to the day's materialization of enriched_tickets: the UI shows it on that partition.
    [day_materialization] = dagster_instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("enriched_tickets"), asset_partitions=[DAY]), limit=1).records
    for name in ENRICHED_CHECKS | {"failure_rate_below_threshold", "single_app_version"}:
        assert checks[name][1] == day_materialization.storage_id, name
    clean_rows = materialization_metadata(result, "clean_tickets")["rows"]
    assert checks["enriched_reconciles_with_clean"][2]["enriched_rows"] == clean_rows


def test_a_day_re_cleaned_without_re_sharding_is_stopped_before_publishing(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    assert run_day(dagster_instance).success
    late = generate_tickets(date.fromisoformat(DAY), count=40, seed=5, timezone="UTC")
    late["id"] = late["id"] + 7_000_000
    engine = sa.create_engine(pipeline_env["SOURCE_DATABASE_URL"])
    insert_tickets(engine, "tickets", late)
    engine.dispose()
    job = build_definitions().resolve_job_def("daily_enrichment")
    recleaned = job.execute_in_process(partition_key=DAY, instance=dagster_instance,
                                       asset_selection=[dg.AssetKey("raw_tickets"), dg.AssetKey("clean_tickets"),
                                                        dg.AssetKey("quarantined_tickets")])
    assert recleaned.success

    # The shards still hold the day as it was: enriched_tickets answers those, not the day as it is now.
    stale = job.execute_in_process(partition_key=DAY, instance=dagster_instance, raise_on_error=False, asset_selection=[
        dg.AssetKey(name) for name in ("enriched_tickets", "tickets_parquet", "tickets_elasticsearch")])
    assert not stale.success
    passed, _, counts = evaluations(stale)["enriched_reconciles_with_clean"]
    assert not passed and counts["clean_rows"] > counts["enriched_rows"]
    assert materialized(stale) == {"enriched_tickets"}  # nothing published


def test_duplicate_keys_and_categories_outside_the_list_fail_their_checks(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    assert run_day(dagster_instance).success
    # What a regression in the enrichment code could write: a record twice, a label the app may not give.
    storage = ObjectStorage(url=pipeline_env["PIPELINE_STORAGE_URL"], s3_endpoint_url=pipeline_env["S3_ENDPOINT_URL"])
    path = storage.list_files(day_folder(storage, "enriched_tickets", DAY))[0]
    shard = storage.read_parquet(path)
    column = shard.schema.get_field_index("category")
    categories = pa.array(["外星人投诉", *shard.column("category").to_pylist()[1:]],
                          shard.schema.field("category").type)
    altered = pa.concat_tables([shard.set_column(column, "category", categories), shard.slice(1, 1)])
    storage.write_parquet(path, shard.schema, [altered])

    # The checks alone for the day, as "Execute checks" on the partition in the UI runs them.
    checks_only = build_definitions().resolve_job_def("daily_enrichment").get_subset(
        asset_selection=set(), asset_check_selection=set(ticket_steps()["enriched_day_checks"].check_keys))
    result = checks_only.execute_in_process(partition_key=DAY, instance=dagster_instance, raise_on_error=False)
    checks = evaluations(result)
    assert set(checks) == ENRICHED_CHECKS and not any(passed for passed, _, _ in checks.values())
    assert checks["unique_record_keys"][2]["duplicate_keys"] == 1
    assert checks["categories_allowed"][2]["rows_outside"] == 1
    assert checks["categories_allowed"][2]["labels_outside"] == {"category": {"外星人投诉": 1}, "sentiment": {}}
    reconciled = checks["enriched_reconciles_with_clean"][2]
    assert reconciled["enriched_rows"] == reconciled["clean_rows"] + 1
    assert check_results(result) == dict.fromkeys(ENRICHED_CHECKS, False)
