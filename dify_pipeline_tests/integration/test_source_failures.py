"""The source database unreachable or refusing us: a clear error naming what to fix, nothing published."""

from __future__ import annotations

import pytest
from elasticsearch import Elasticsearch

from dify_pipeline_tests.integration import services
from dify_pipeline_tests.integration.pipeline import run_day


def failure_message(result) -> str:
    """The message a user reads in the UI: the step failure and its causes."""
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error, parts = failure.event_specific_data.error, []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return " | ".join(parts)


def published_nothing(env, s3_server) -> bool:
    bucket, prefix = env["OUTPUT_PARQUET_URL"].removeprefix("s3://").split("/", 1)
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    client = Elasticsearch(env["ELASTICSEARCH_URL"])
    return listed.get("KeyCount", 0) == 0 and not client.indices.exists(index=env["ELASTICSEARCH_INDEX"])


@pytest.mark.parametrize(
    "url,expected",
    [
        ("mysql+pymysql://root:wrong-SECRET-pw@{host}:{port}/{db}", "Access denied"),
        ("mysql+pymysql://root@127.0.0.1:{closed}/{db}", "Can't connect"),
        ("mysql+pymysql://root@{host}:{port}/no_such_database_here", "Unknown database"),
    ],
    ids=["wrong-password", "server-unreachable", "unknown-database"],
)
def test_an_unusable_source_fails_clearly_and_publishes_nothing(
    pipeline_env, dagster_instance, s3_server, monkeypatch, url, expected
):
    database = pipeline_env["SOURCE_DATABASE_URL"].rsplit("/", 1)[1].split("?")[0]
    monkeypatch.setenv("SOURCE_DATABASE_URL", url.format(
        host=services.MARIADB["host"], port=services.MARIADB["port"], db=database, closed=services.free_port()))
    result = run_day(dagster_instance)
    assert not result.success
    message = failure_message(result)
    assert expected in message and "SOURCE_DATABASE_URL" in message
    assert "wrong-SECRET-pw" not in message
    assert published_nothing(pipeline_env, s3_server)


def test_a_missing_table_is_named(pipeline_env, dagster_instance, s3_server):
    result = run_day(dagster_instance)  # the test database exists but holds no `tickets` table
    assert not result.success
    assert "table 'tickets' not found" in failure_message(result)
    assert published_nothing(pipeline_env, s3_server)
