"""Two enrichments in one code location on real services (MariaDB, the PostgreSQL instance, moto S3, the Dify and
search emulators): the support tickets (a workflow app) and product reviews on another table, answered by a
completion app with a key of its own, each under its own keys, folders, Parquet prefix, alias and Dify pool."""

from __future__ import annotations

from datetime import date

import httpx
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import s3fs
import sqlalchemy as sa

from dify_pipeline.contract import AppContract, EnrichmentContract, OutputField, SinksContract, SourceContract
from dify_pipeline.definitions import build_definitions, tickets_from_environment
from dify_pipeline.environment import ConfigurationError, read_environment
from dify_pipeline.resources.search import SearchCluster
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import day_folder
from dify_pipeline_dev.demo.sample_data import create_source_table, generate_tickets, insert_tickets
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig, reviews_app
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY, materialization_metadata

REVIEWS_KEY = "app-reviews-completion-key"
# Other outputs than the tickets', answered by the emulator's reviews app (aspects may be an empty list).
REVIEW_OUTPUTS = {
    "sentiment": OutputField(type="label", allowed=["positive", "neutral", "negative"]),
    "score": OutputField(type="integer", minimum=1, maximum=5),
    "aspects": OutputField(type="list", required=False),
}


def reviews_contract(alias: str) -> EnrichmentContract:
    return EnrichmentContract(
        name="reviews", key_prefix=["shop"], source=SourceContract(table="reviews"),
        app=AppContract(api_key_env="REVIEWS_DIFY_API_KEY", mode="completion",
                        inputs={"title": "subject", "review": "body"}), outputs=REVIEW_OUTPUTS,
        sinks=SinksContract(parquet_prefix="reviews", index_alias=alias),
    )


@pytest.fixture
def two_apps(dify_emulator, monkeypatch):
    """The Dify emulator serving the ticket workflow app and the reviews completion app, each with its key."""
    dify_emulator.configure(DifyEmulatorConfig(latency_ms=5, apps=[
        DifyApp(api_key=DIFY_KEY), reviews_app(REVIEWS_KEY)]))
    monkeypatch.setenv("REVIEWS_DIFY_API_KEY", REVIEWS_KEY)
    return dify_emulator


@pytest.fixture
def source_reviews(pipeline_env):
    """300 generated records in the table `reviews` of the same MariaDB database."""
    reviews = generate_tickets(date.fromisoformat(DAY), count=300, seed=5, timezone="UTC")
    engine = sa.create_engine(pipeline_env["SOURCE_DATABASE_URL"])
    create_source_table(engine, "reviews")
    insert_tickets(engine, "reviews", reviews)
    engine.dispose()
    return reviews


def contracts(pipeline_env):
    tickets = tickets_from_environment(read_environment(), sinks=SinksContract(parquet_prefix="tickets"))
    return tickets, reviews_contract(f"{pipeline_env['ELASTICSEARCH_INDEX']}_reviews")


def test_two_enrichments_run_their_day_side_by_side_in_one_code_location(
    pipeline_env, source_tickets, source_reviews, two_apps, dagster_instance
):
    defs = build_definitions(*contracts(pipeline_env))
    tickets = defs.resolve_job_def("daily_enrichment").execute_in_process(
        partition_key=DAY, instance=dagster_instance, raise_on_error=False)
    reviews = defs.resolve_job_def("daily_reviews").execute_in_process(
        partition_key=DAY, instance=dagster_instance, raise_on_error=False)
    assert tickets.success and reviews.success

    # Each chain under its own keys; the reviews were asked of the completion app only, the tickets of the workflow app.
    assert {e.asset_key.path[0] for e in reviews.get_asset_materialization_events()} == {"shop"}
    assert {e.asset_key.path[0] for e in tickets.get_asset_materialization_events()} == {
        "raw_tickets", "clean_tickets", "quarantined_tickets", "ticket_shards", "enriched_tickets", "tickets_parquet",
        "tickets_elasticsearch"}
    sent_tickets = materialization_metadata(tickets, "enriched_tickets")["requests_sent"]
    sent_reviews = materialization_metadata(reviews, "enriched_reviews")["requests_sent"]
    paths = [request["path"] for request in two_apps.requests()]
    assert paths.count("/v1/completion-messages") == sent_reviews > 0
    assert sum(path.startswith("/v1/workflows/") and path.endswith("/run") for path in paths) == sent_tickets > 0
    assert dagster_instance.get_run_by_id(reviews.run_id).tags["dify/app_mode"] == "completion"

    # Stage folders per asset name, Parquet under each prefix, one alias each.
    stage = ObjectStorage(url=pipeline_env["PIPELINE_STORAGE_URL"], s3_endpoint_url=pipeline_env["S3_ENDPOINT_URL"])
    assert stage.list_files(day_folder(stage, "enriched_reviews", DAY)) and stage.list_files(
        day_folder(stage, "review_shards", DAY))
    fs = s3fs.S3FileSystem(endpoint_url=pipeline_env["S3_ENDPOINT_URL"], key="testing", secret="testing")
    root = pipeline_env["OUTPUT_PARQUET_URL"].removeprefix("s3://")
    published = {name: ds.dataset(f"{root}/{name}/dt={DAY}", filesystem=fs, format="parquet").count_rows()
                 for name in ("tickets", "reviews")}
    assert published["tickets"] == materialization_metadata(tickets, "tickets_parquet")["rows"]
    assert published["reviews"] == materialization_metadata(reviews, "reviews_parquet")["rows"] > 0
    columns = ds.dataset(f"{root}/reviews/dt={DAY}", filesystem=fs, format="parquet").schema
    assert {"sentiment", "score", "aspects"} <= set(columns.names) and "category" not in columns.names
    assert str(columns.field("score").type) == "int64" and pa.types.is_list(columns.field("aspects").type)
    assert materialization_metadata(reviews, "enriched_reviews")["failed"] == 0
    answered = ds.dataset(f"{root}/reviews/dt={DAY}", filesystem=fs, format="parquet").to_table(
        columns=["sentiment", "score", "aspects"])
    scores = answered.column("score").to_pylist()
    assert None not in scores and set(scores) <= {1, 2, 3, 4, 5}  # what the completion app answered, typed
    assert all(isinstance(aspects, list) for aspects in answered.column("aspects").to_pylist())
    es = materialization_metadata(reviews, "reviews_elasticsearch")
    assert es["index"] == f"{pipeline_env['ELASTICSEARCH_INDEX']}_reviews"
    assert materialization_metadata(tickets, "tickets_elasticsearch")["index"] == pipeline_env["ELASTICSEARCH_INDEX"]
    mapping = httpx.get(f"{pipeline_env['ELASTICSEARCH_URL']}/{es['physical_index']}/_mapping").json()
    properties = mapping[es["physical_index"]]["mappings"]["properties"]
    assert properties["score"] == {"type": "long"} and properties["sentiment"] == {"type": "keyword"}
    assert "category" not in properties
    cluster = SearchCluster(url=pipeline_env["ELASTICSEARCH_URL"], index=es["index"])
    with cluster.connect() as sink:
        sink.refresh(es["physical_index"])
        assert sink.count(es["physical_index"], {"match_all": {}}) == published["reviews"]


def test_a_missing_variable_of_the_second_contract_fails_the_load_naming_it(pipeline_env, two_apps, monkeypatch):
    monkeypatch.delenv("REVIEWS_DIFY_API_KEY")
    with pytest.raises(ConfigurationError) as raised:
        build_definitions(*contracts(pipeline_env))
    assert raised.value.problems == ["REVIEWS_DIFY_API_KEY is not set (enrichment 'reviews', app.api_key_env): "
                                     "e.g. REVIEWS_DIFY_API_KEY=app-xxxxxxxxxxxxxxxx"]
