"""Before enriched_tickets pays Dify for a day, the day's outputs are proven writable and compatible: a broken
sink stops the day with 0 paid runs (the Dify emulator's own counter) and a message naming the variable to fix."""

from __future__ import annotations

import pytest

from dify_pipeline_dev.emulators.elasticsearch import FLAVOURS, ElasticsearchEmulatorConfig
from dify_pipeline_tests.integration import services
from dify_pipeline_tests.integration.pipeline import materialization_metadata, run_day


def failure_of(result, step: str) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure and e.step_key == step]
    return failure.step_failure_data.user_failure_data.description


@pytest.fixture
def broken(request, monkeypatch, pipeline_env, es_emulator):
    """One sink broken the way a deployment breaks it; the message the day must stop with."""
    case = request.param
    if case == "missing bucket":
        monkeypatch.setenv("OUTPUT_PARQUET_URL", "s3://no-such-bucket-for-dify-pipeline/tickets")
        return "OUTPUT_PARQUET_URL=s3://no-such-bucket-for-dify-pipeline/tickets cannot be written"
    if case == "wrong search URL":
        monkeypatch.setenv("ELASTICSEARCH_URL", f"http://127.0.0.1:{services.free_port()}")
        return "ELASTICSEARCH_URL=http://127.0.0.1:"
    if case == "Elasticsearch 7":
        es_emulator.configure(ElasticsearchEmulatorConfig(product="elasticsearch", version="7.17.29"))
        return "elasticsearch 7.17.29; this package publishes to elasticsearch 8.x and 9.x only"
    if case == "OpenSearch behind SEARCH_ENGINE=elasticsearch":
        es_emulator.configure(ElasticsearchEmulatorConfig(**FLAVOURS["opensearch"]))
        return "set SEARCH_ENGINE=opensearch"
    raise AssertionError(case)


@pytest.mark.parametrize("broken", ["missing bucket", "wrong search URL", "Elasticsearch 7",
                                    "OpenSearch behind SEARCH_ENGINE=elasticsearch"], indirect=True)
def test_a_broken_sink_stops_the_day_before_any_paid_call(broken, source_tickets, dagster_instance, dify_emulator,
                                                          es_emulator):
    try:
        result = run_day(dagster_instance)
    finally:
        es_emulator.configure(ElasticsearchEmulatorConfig())
    assert not result.success
    message = failure_of(result, "enriched_tickets")
    assert "nothing was sent to Dify" in message and broken in message
    assert dify_emulator.stats()["paid_runs"] == 0
    assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == {
        "raw_tickets", "clean_tickets", "quarantined_tickets", "ticket_shards"}


def test_an_elasticsearch_8_cluster_takes_the_day_from_the_installed_client(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, es_emulator
):
    """With elasticsearch-py 9 (the locked set) the combination it refuses on its own (it asks for compatible-with=9,
    an 8.x node answers 400): the sink asks the cluster for the REST API version it speaks. With the 8.x client
    (the minimum set) the plain path."""
    es_emulator.configure(ElasticsearchEmulatorConfig(**FLAVOURS["elasticsearch-8"]))
    try:
        result = run_day(dagster_instance)
    finally:
        es_emulator.configure(ElasticsearchEmulatorConfig())
    assert result.success
    published = materialization_metadata(result, "tickets_elasticsearch")
    assert published["cluster"] == f"elasticsearch {FLAVOURS['elasticsearch-8']['version']}"
    assert published["documents_for_day"] == materialization_metadata(result, "clean_tickets")["rows"]
    assert es_emulator.stats()["responses_by_status"].keys() <= {"200", "201", "404"}  # not one refused request
