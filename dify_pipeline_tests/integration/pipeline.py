"""Running the pipeline from tests, and reading what it reported."""

from __future__ import annotations

DIFY_KEY = "app-integration-test-key"
DAY = "2026-11-20"


def run_day(instance, partition_key: str = DAY, contract=None, **resource_overrides):
    """The daily job for one partition, in process, on `instance`, as the environment configures it now
    (`contract`: the ticket enrichment declared otherwise)."""
    from dify_pipeline.definitions import build_definitions

    job = build_definitions(*([contract] if contract else []), **resource_overrides).resolve_job_def("daily_enrichment")
    return job.execute_in_process(partition_key=partition_key, instance=instance, raise_on_error=False)


def ticket_steps(contract=None, start_date: str = "2026-01-01", timezone: str = "UTC") -> dict:
    """The ticket chain's assets and checks by name (`raw_tickets`, ..., `enriched_day_checks`), built without an
    environment, for tests of single steps with their own resources."""
    from dify_pipeline.contract import tickets_contract
    from dify_pipeline.factory import steps_of

    return steps_of(contract or tickets_contract(), start_date, timezone)


def materialization_metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_results(result) -> dict[str, bool]:
    """check name → passed, for every asset check evaluated in the run."""
    return {e.event_specific_data.check_name: e.event_specific_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
