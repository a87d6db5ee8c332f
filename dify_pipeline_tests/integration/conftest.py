"""Fixtures that start (or reach) the real services the pipeline talks to."""

from __future__ import annotations

import os
from datetime import UTC, date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dify_pipeline_dev.demo.sample_data import create_source_table, generate_tickets, insert_tickets
from dify_pipeline_dev.emulators.dify import DifyEmulator
from dify_pipeline_dev.emulators.elasticsearch import ElasticsearchEmulator
from dify_pipeline_dev.emulators.server import serve_in_thread
from dify_pipeline_tests.integration import services
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY

S3_BUCKET = "dify-pipeline-test"


@pytest.fixture(scope="session")
def s3_server():
    server = services.S3Server()
    server.client().create_bucket(Bucket=S3_BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dagster_home(tmp_path_factory):
    """A DAGSTER_HOME with the project's dagster.yaml on a fresh PostgreSQL database."""
    database = services.create_postgres_database()
    env = services.dagster_home_on_postgres(tmp_path_factory.mktemp("dagster_home"), database)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield Path(env["DAGSTER_HOME"])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    services.drop_postgres_database(database)


@pytest.fixture(scope="session")
def dagster_instance(dagster_home):
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        yield instance


@pytest.fixture
def mariadb_url():
    name, url = services.create_mariadb_database()
    yield url
    services.drop_mariadb_database(name)


@pytest.fixture(scope="session")
def dify_emulator_session():
    emulator = DifyEmulator()
    server = serve_in_thread(emulator.app)
    yield emulator, server.url
    server.stop()


@pytest.fixture
def dify_emulator(dify_emulator_session):
    """The Dify emulator with one workflow app keyed DIFY_KEY, counters reset for each test."""
    from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig

    emulator, url = dify_emulator_session
    emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=5))
    emulator.reset()
    emulator.base_url = f"{url}/v1"
    return emulator


@pytest.fixture(scope="session")
def es_emulator_session():
    emulator = ElasticsearchEmulator()
    server = serve_in_thread(emulator.app)
    yield emulator, server.url
    server.stop()


@pytest.fixture
def es_emulator(es_emulator_session):
    emulator, url = es_emulator_session
    emulator.reset()
    emulator.url = url
    return emulator


@pytest.fixture
def pipeline_env(monkeypatch, tmp_path, mariadb_url, s3_server, dify_emulator, es_emulator):
    """The package's public environment variables, pointing at the real services of this test."""
    prefix = tmp_path.name
    env = {
        "SOURCE_DATABASE_URL": mariadb_url,
        "DIFY_BASE_URL": dify_emulator.base_url,
        "DIFY_API_KEY": DIFY_KEY,
        "OUTPUT_PARQUET_URL": f"s3://{S3_BUCKET}/{prefix}/tickets",
        "PIPELINE_STORAGE_URL": f"s3://{S3_BUCKET}/{prefix}/stages",
        "RESULT_CACHE_URL": f"sqlite:///{tmp_path / 'cache.sqlite'}",
        "S3_ENDPOINT_URL": s3_server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "ELASTICSEARCH_URL": es_emulator.url,
        "ELASTICSEARCH_INDEX": f"tickets_{prefix.lower()}"[:60],
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def source_tickets(pipeline_env):
    """800 generated tickets around DAY (UTC) in the test's MariaDB table `tickets`."""
    tickets = generate_tickets(date.fromisoformat(DAY), count=800, seed=11, timezone="UTC")
    engine = sa.create_engine(pipeline_env["SOURCE_DATABASE_URL"])
    create_source_table(engine, "tickets")
    insert_tickets(engine, "tickets", tickets)
    engine.dispose()
    return tickets



# -- publishing: enriched days written straight into stage storage, outputs on moto S3 ------------------

PUBLISH_DAY = "2026-11-20"


@pytest.fixture
def aws_env(monkeypatch, s3_server):
    """The standard AWS variables for the moto server: storages read credentials from the AWS chain."""
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    return s3_server


@pytest.fixture
def publish_output(aws_env, tmp_path):
    """Where tickets_parquet publishes in this test: a fresh prefix of the moto bucket."""
    from dify_pipeline.resources.storage import ObjectStorage

    return ObjectStorage(url=f"s3://{S3_BUCKET}/{tmp_path.name}/tickets", s3_endpoint_url=aws_env.url,
                         s3_region="us-east-1")


@pytest.fixture
def publish_stage(tmp_path):
    """The pipeline's own stage storage (local: the publish steps only read it)."""
    from dify_pipeline.resources.storage import ObjectStorage

    return ObjectStorage(url=str(tmp_path / "stages"))


def enriched_table(keys, tag: str = "v1", day: str = PUBLISH_DAY, failed_keys=()):
    """Rows as enriched_tickets writes them: source columns, clean columns, enrichment columns, shard.

    `tag` goes into each summary, so a test can tell which load a row (or document) came from.
    """
    from datetime import datetime, timedelta

    import pyarrow as pa

    from dify_pipeline.contract import DEFAULT_CATEGORIES
    from dify_pipeline.schemas import CLEAN_FIELDS, ENRICHMENT_FIELDS, PIPELINE_VERSION, SHARD_FIELD, with_fields

    keys = list(keys)
    failed = {str(k) for k in failed_keys}
    source = pa.schema([("id", pa.int64()), ("subject", pa.string()), ("body", pa.string()),
                        ("created_at", pa.timestamp("us", tz="UTC")), ("customer_tier", pa.string())])
    schema = with_fields(with_fields(source, CLEAN_FIELDS), ENRICHMENT_FIELDS).append(SHARD_FIELD)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    ok = [str(k) not in failed for k in keys]
    columns = {
        "id": keys,
        "subject": [f"订单 {k} 物流延迟" for k in keys],
        "body": [f"第 {k} 号工单: 快递三天没有更新 ({tag})" for k in keys],
        "created_at": [start + timedelta(seconds=37 * (k % 2000)) for k in keys],
        "customer_tier": ["vip" if k % 5 == 0 else "standard" for k in keys],
        "record_key": [str(k) for k in keys],
        "text_truncated": [False] * len(keys),
        "pii_masked": [k % 3 for k in keys],
        "category": [DEFAULT_CATEGORIES[k % len(DEFAULT_CATEGORIES)] if good else None for k, good in zip(keys, ok)],
        "summary": [f"{tag}: summary of {k}" if good else None for k, good in zip(keys, ok)],
        "sentiment": [("negative", "neutral", "positive")[k % 3] if good else None for k, good in zip(keys, ok)],
        "outputs_json": ['{"category": "x"}' if good else None for good in ok],
        "dify_status": ["succeeded" if good else "failed" for good in ok],
        "error_code": [None if good else "invalid_output" for good in ok],
        "error_message": [None if good else "the app answered outside the contract" for good in ok],
        "attempts": [1] * len(keys),
        "latency_ms": [100.0 + k % 50 for k in keys],
        "total_tokens": [200 + k % 100 for k in keys],
        "total_price": [0.0004] * len(keys),
        "currency": ["USD"] * len(keys),
        "dify_run_id": [f"run-{tag}-{k}" for k in keys],
        "dify_workflow_id": ["wf-1"] * len(keys),
        "cache_hit": [False] * len(keys),
        "inputs_truncated": [False] * len(keys),
        "enriched_at": [start + timedelta(days=1)] * len(keys),
        "app_identity": ["app-test"] * len(keys),
        "cache_version": ["v1"] * len(keys),
        "pipeline_version": [PIPELINE_VERSION] * len(keys),
        "shard": [0] * len(keys),
    }
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema}, schema=schema)


@pytest.fixture
def write_enriched_day(publish_stage):
    """Write a day of enriched shards (of `shard_rows` rows) into the stage storage; returns the table."""
    import pyarrow as pa

    from dify_pipeline.schemas import SHARD_FIELD
    from dify_pipeline.stages import day_folder, shard_file

    def write(keys, tag: str = "v1", day: str = PUBLISH_DAY, shard_rows: int = 500, failed_keys=()):
        table = enriched_table(keys, tag, day, failed_keys)
        folder = day_folder(publish_stage, "enriched_tickets", day)
        publish_stage.remove(publish_stage.list_files(folder))
        for shard, offset in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
            path = shard_file(publish_stage, "enriched_tickets", day, shard)
            part = table.slice(offset, shard_rows)
            shards = pa.array([shard] * part.num_rows, pa.int32())
            part = part.set_column(part.schema.get_field_index("shard"), SHARD_FIELD, shards)
            publish_stage.write_parquet(path, table.schema, [part])
        return table

    return write
