"""A day end to end on real services: MariaDB → clean → shard → Dify emulator → S3 (moto) Parquet + ES emulator,
with the Dagster instance on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.dataset as ds
import s3fs
from elasticsearch import Elasticsearch

from dify_pipeline.demo.sample_data import pii_values_in
from dify_pipeline.infer.contract import DEFAULT_CATEGORIES

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
    in_day = source_tickets[(source_tickets.created_at >= start) & (source_tickets.created_at < start + timedelta(days=1))]
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
    assert set(table.column("record_key").to_pylist()) == {str(int(k)) for k in keyed.id.unique()} - _quarantined_keys(pipeline_env)

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
