"""The deployment's configuration loads as documented: the project's dagster.yaml on PostgreSQL."""

from __future__ import annotations

from dagster._core.instance.config import PoolGranularity
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresRunStorage

from dify_pipeline.definitions import build_definitions


def test_the_project_instance_queues_runs_and_gives_the_dify_pool_one_step_at_a_time(dagster_instance):
    concurrency = dagster_instance.get_concurrency_config()
    assert isinstance(dagster_instance.run_storage, PostgresRunStorage)
    assert isinstance(dagster_instance.run_coordinator, QueuedRunCoordinator)
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
    assert dagster_instance.run_monitoring_enabled
    assert dagster_instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0

    job = build_definitions().resolve_job_def("daily_enrichment")
    pools = {node.name: node.definition.pool for node in job.nodes if node.definition.pool}
    assert pools == {"enriched_tickets": "dify"}  # the one step that spends the Dify budget, and only it
