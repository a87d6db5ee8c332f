"""Fixtures that start (or reach) the real services the pipeline talks to."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from dify_pipeline.demo.sample_data import create_source_table, generate_tickets, insert_tickets
from dify_pipeline.emulators.dify import DifyEmulator
from dify_pipeline.emulators.elasticsearch import ElasticsearchEmulator
from dify_pipeline.emulators.server import serve_in_thread
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
    from dify_pipeline.emulators.dify import DifyApp, DifyEmulatorConfig

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

