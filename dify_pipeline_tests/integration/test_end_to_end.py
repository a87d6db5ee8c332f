"""A day end to end on real services: MariaDB → clean → shard → Dify emulator → S3 (moto) Parquet + ES emulator,
with the Dagster instance on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.dataset as ds
import s3fs
import sqlalchemy as sa
from elasticsearch import Elasticsearch

from dify_pipeline.contract import DEFAULT_CATEGORIES, CleaningContract, tickets_contract
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import day_folder
from dify_pipeline_dev.demo.sample_data import pii_values_in
from dify_pipeline_tests.integration.pipeline import DAY, check_results, materialization_metadata, run_day


def s3(env) -> s3fs.S3FileSystem:
    """A reader of its own: no cached listings or ETags from an earlier read of a replaced day."""
    return s3fs.S3FileSystem(endpoint_url=env["S3_ENDPOINT_URL"], key="testing", secret="testing",
                             skip_instance_cache=True, use_listings_cache=False)


def published_table(env) -> pa.Table:
    fs = s3(env)
    root = env["OUTPUT_PARQUET_URL"].removeprefix("s3://")
    return ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive").to_table()


def test_a_day_flows_from_mariadb_to_s3_and_elasticsearch_and_reconciles(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, es_emulator
):
    start = datetime.fromisoformat(DAY)
    created = source_tickets.created_at
    in_day = source_tickets[(created >= start) & (created < start + timedelta(days=1))]
    keyed = in_day[in_day.id.notna()]

    result = run_day(dagster_instance)
    assert result.success
    assert all(check_results(result).values()), check_results(result)

    raw = materialization_metadata(result, "raw_tickets")
    clean = materialization_metadata(result, "clean_tickets")
    enriched = materialization_metadata(result, "enriched_tickets")
    parquet = materialization_metadata(result, "tickets_parquet")
    es = materialization_metadata(result, "tickets_elasticsearch")

    # Stage by stage, every row is accounted for.
    assert raw["rows"] == len(in_day) < len(source_tickets)  # the neighbouring days stayed out
    assert clean["duplicates_removed"] == len(keyed) - keyed.id.nunique() > 0
    assert clean["quarantined"] > 0
    assert clean["rows"] + clean["quarantined"] + clean["duplicates_removed"] == raw["rows"]
    assert enriched["rows"] == parquet["rows"] == es["rows"] == es["documents_for_day"] == clean["rows"]
    assert enriched["failed"] == 0 and enriched["requests_sent"] > 0

    # The published Parquet: a Hive-partitioned dataset with the source's types and the enrichment columns.
    table = published_table(pipeline_env)
    assert table.num_rows == clean["rows"]
    assert table.column("dt").unique().to_pylist() == [DAY]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert pa.types.is_dictionary(table.schema.field("category").type)
    assert set(table.column("category").to_pylist()) <= set(DEFAULT_CATEGORIES)
    assert len(table.column("record_key").unique()) == table.num_rows
    expected_keys = {str(int(k)) for k in keyed.id.unique()} - _quarantined_keys(pipeline_env)
    assert set(table.column("record_key").to_pylist()) == expected_keys

    # Elasticsearch: one document per record, the record key as _id.
    client = Elasticsearch(pipeline_env["ELASTICSEARCH_URL"])
    index = pipeline_env["ELASTICSEARCH_INDEX"]
    some_key = table.column("record_key")[0].as_py()
    document = client.get(index=index, id=some_key)
    assert document["_source"]["record_key"] == some_key
    assert document["_source"]["category"] in DEFAULT_CATEGORIES

    # No planted PII value ever reached Dify.
    sent = " ".join(str(r.get("body")) for r in dify_emulator.requests())
    leaked = [value for value in pii_values_in(source_tickets) if value in sent]
    assert not leaked

    # A second materialization of the same day changes nothing and pays for nothing.
    paid_before = dify_emulator.stats()["paid_runs"]
    again = run_day(dagster_instance)
    assert again.success
    assert dify_emulator.stats()["paid_runs"] == paid_before
    assert materialization_metadata(again, "enriched_tickets")["requests_sent"] == 0
    assert published_table(pipeline_env).num_rows == clean["rows"]
    client.indices.refresh(index=index)
    assert client.count(index=index)["count"] == clean["rows"]


def _quarantined_keys(env) -> set[str]:
    fs = s3(env)
    root = env["PIPELINE_STORAGE_URL"].removeprefix("s3://")
    table = ds.dataset(f"{root}/quarantined_tickets", filesystem=fs, format="parquet", partitioning="hive").to_table()
    return {k for k in table.column("record_key").to_pylist() if k is not None}


# -- empty and shrinking days -------------------------------------------------------------------------------

def _delete_source_rows(env, where: str) -> int:
    engine = sa.create_engine(env["SOURCE_DATABASE_URL"])
    with engine.begin() as connection:
        deleted = connection.execute(sa.text(f"DELETE FROM tickets WHERE {where}")).rowcount
    engine.dispose()
    return deleted


def _in_day(day: str) -> str:
    start = datetime.fromisoformat(day)
    return f"created_at >= '{start:%Y-%m-%d}' AND created_at < '{start + timedelta(days=1):%Y-%m-%d}'"


def _published_keys(env, day: str) -> tuple[list[str], list[str]]:
    """The day's record keys in Parquet and the ids of its documents in Elasticsearch."""
    table = published_table(env)
    parquet = [k for k, dt in zip(table.column("record_key").to_pylist(), table.column("dt").to_pylist()) if dt == day]
    client = Elasticsearch(env["ELASTICSEARCH_URL"])
    client.indices.refresh(index=env["ELASTICSEARCH_INDEX"])
    found = client.search(index=env["ELASTICSEARCH_INDEX"], query={"term": {"dt": day}}, size=10_000)
    return sorted(parquet), sorted(hit["_id"] for hit in found["hits"]["hits"])


def test_a_day_without_rows_publishes_an_empty_day(pipeline_env, source_tickets, dagster_instance, dify_emulator):
    empty_day = "2026-11-10"  # nothing was generated around it
    result = run_day(dagster_instance, empty_day)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert all(check_results(result).values()), check_results(result)
    steps = ("raw_tickets", "clean_tickets", "enriched_tickets", "tickets_parquet", "tickets_elasticsearch")
    counts = [materialization_metadata(result, asset)["rows"] for asset in steps]
    assert counts == [0, 0, 0, 0, 0]
    assert materialization_metadata(result, "ticket_shards")["shards"] == 1  # one empty shard: written, and empty
    assert _published_keys(pipeline_env, empty_day) == ([], [])
    assert dify_emulator.stats()["paid_runs"] == 0


def test_a_day_emptied_at_the_source_is_published_empty_everywhere(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    first = run_day(dagster_instance)
    assert first.success
    assert len(_published_keys(pipeline_env, DAY)[0]) == materialization_metadata(first, "clean_tickets")["rows"] > 0

    assert _delete_source_rows(pipeline_env, _in_day(DAY)) > 0
    paid = dify_emulator.stats()["paid_runs"]
    emptied = run_day(dagster_instance)
    assert emptied.success, [e.message for e in emptied.all_events if e.is_failure]
    assert all(check_results(emptied).values()), check_results(emptied)
    assert materialization_metadata(emptied, "tickets_parquet")["rows"] == 0
    es = materialization_metadata(emptied, "tickets_elasticsearch")
    assert es["rows"] == es["documents_for_day"] == 0 and es["stale_deleted"] > 0
    assert _published_keys(pipeline_env, DAY) == ([], [])
    assert _stage_files(pipeline_env, DAY) == {"ticket_shards": 1, "enriched_tickets": 1}  # written, and empty
    assert dify_emulator.stats()["paid_runs"] == paid


def test_a_day_that_shrank_keeps_only_its_remaining_records_everywhere(
    pipeline_env, source_tickets, dagster_instance, dify_emulator
):
    first = run_day(dagster_instance, contract=tickets_contract(cleaning=CleaningContract(max_shard_rows=20)))
    assert first.success
    before = _published_keys(pipeline_env, DAY)
    assert materialization_metadata(first, "ticket_shards")["shards"] > 1

    # Most of the day leaves the source: fewer rows, in one shard where the first run wrote many.
    assert _delete_source_rows(pipeline_env, f"{_in_day(DAY)} AND MOD(id, 10) <> 0") > 0
    shrunk = run_day(dagster_instance)
    assert shrunk.success, [e.message for e in shrunk.all_events if e.is_failure]
    assert all(check_results(shrunk).values()), check_results(shrunk)
    clean_rows = materialization_metadata(shrunk, "clean_tickets")["rows"]
    remaining = sorted(k for k in before[0] if int(k) % 10 == 0)
    assert 0 < clean_rows == len(remaining) < len(before[0])
    assert _published_keys(pipeline_env, DAY) == (remaining, remaining)
    enriched = materialization_metadata(shrunk, "enriched_tickets")
    assert enriched["rows"] == materialization_metadata(shrunk, "tickets_parquet")["rows"] == clean_rows
    assert enriched["requests_sent"] == 0  # every remaining record was answered before
    assert _stage_files(pipeline_env, DAY) == {"ticket_shards": 1, "enriched_tickets": 1}  # no shard left behind


def _stage_files(env, day: str) -> dict[str, int]:
    stages = ObjectStorage(url=env["PIPELINE_STORAGE_URL"], s3_endpoint_url=env["S3_ENDPOINT_URL"])
    return {stage: len(stages.list_files(day_folder(stages, stage, day)))
            for stage in ("ticket_shards", "enriched_tickets")}
