"""Secrets never land anywhere a run leaves traces: event log, logs, stages, cache, Parquet, Elasticsearch.

A day runs through the `dagster` CLI (each step in its own process, as in production) with recognisable
secret values for the Dify key, the database password, the S3 secret and the Elasticsearch API key; then
everything the run produced is searched for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pymysql
import pytest
import sqlalchemy as sa

from dify_pipeline_dev.demo.sample_data import create_source_table, generate_tickets, insert_tickets
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline_dev.emulators.elasticsearch import ElasticsearchEmulatorConfig
from dify_pipeline_tests.integration import services
from dify_pipeline_tests.integration.pipeline import DAY

MARKER = uuid.uuid4().hex[:8]
SECRETS = {
    "DIFY_API_KEY": f"app-SECRET{MARKER}dify",
    "database password": f"db-SECRET{MARKER}pw",
    "AWS_SECRET_ACCESS_KEY": f"aws-SECRET{MARKER}s3",
    "ELASTICSEARCH_API_KEY": f"es-SECRET{MARKER}key",
}


@pytest.fixture
def database_with_password():
    """A MariaDB database reachable only with a user whose password is one of the secrets."""
    name, _ = services.create_mariadb_database()
    user = f"dp_{MARKER}"
    connection = pymysql.connect(**services.MARIADB)
    with connection, connection.cursor() as cursor:
        for host in ("localhost", "127.0.0.1", "%"):
            cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user, host, SECRETS["database password"]))
            cursor.execute(f"GRANT ALL ON `{name}`.* TO %s@%s", (user, host))
    server = f"{services.MARIADB['host']}:{services.MARIADB['port']}"
    url = f"mysql+pymysql://{user}:{SECRETS['database password']}@{server}/{name}"
    yield url
    connection = pymysql.connect(**services.MARIADB)
    with connection, connection.cursor() as cursor:
        for host in ("localhost", "127.0.0.1", "%"):
            cursor.execute("DROP USER IF EXISTS %s@%s", (user, host))
    services.drop_mariadb_database(name)


@pytest.fixture
def es_requiring_the_secret_key(es_emulator):
    es_emulator.configure(ElasticsearchEmulatorConfig(api_key=SECRETS["ELASTICSEARCH_API_KEY"]))
    yield es_emulator
    es_emulator.configure(ElasticsearchEmulatorConfig())


def texts_of(folder: Path) -> dict[str, str]:
    """Every file below `folder` as text; Parquet decompressed to its rows (zstd would hide a secret from grep)."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file():
            if path.suffix == ".parquet":
                found[str(path)] = str(pq.read_table(path).to_pylist())
            else:
                found[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    return found


def test_no_secret_is_left_in_anything_a_run_produced(
    tmp_path, database_with_password, s3_server, dify_emulator, es_requiring_the_secret_key
):
    tickets = generate_tickets(date.fromisoformat(DAY), count=200, seed=5, timezone="UTC")
    engine = sa.create_engine(database_with_password)
    create_source_table(engine, "tickets")
    insert_tickets(engine, "tickets", tickets)
    engine.dispose()
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=SECRETS["DIFY_API_KEY"])], latency_ms=5))
    s3_server.client().create_bucket(Bucket=f"secrets-{MARKER}")  # with the secret credentials below

    database = services.create_postgres_database()
    try:
        env = {
            **os.environ,
            **services.dagster_home_on_postgres(tmp_path / "dagster_home", database),
            "SOURCE_DATABASE_URL": database_with_password,
            "DIFY_BASE_URL": dify_emulator.base_url,
            "DIFY_API_KEY": SECRETS["DIFY_API_KEY"],
            "OUTPUT_PARQUET_URL": f"s3://secrets-{MARKER}/tickets",
            "PIPELINE_STORAGE_URL": str(tmp_path / "stages"),
            "RESULT_CACHE_URL": f"sqlite:///{tmp_path / 'cache.sqlite'}",
            "S3_ENDPOINT_URL": s3_server.url,
            "AWS_ACCESS_KEY_ID": "secret-test",
            "AWS_SECRET_ACCESS_KEY": SECRETS["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": "us-east-1",
            "ELASTICSEARCH_URL": es_requiring_the_secret_key.url,
            "ELASTICSEARCH_API_KEY": SECRETS["ELASTICSEARCH_API_KEY"],
            "ELASTICSEARCH_INDEX": f"secrets_{MARKER}",
        }
        cli = subprocess.run(
            [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "dify_pipeline.definitions",
             "--select", "*", "--partition", DAY],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert cli.returncode == 0, cli.stderr[-3000:]
        event_log = subprocess.run(
            ["pg_dump", "-h", services.POSTGRES["host"], "-p", str(services.POSTGRES["port"]),
             "-U", services.POSTGRES["user"], "--data-only", database],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        services.drop_postgres_database(database)

    client = s3_server.client()
    outputs = {}
    for item in client.list_objects_v2(Bucket=f"secrets-{MARKER}")["Contents"]:
        local = tmp_path / "downloaded" / item["Key"]
        local.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(f"secrets-{MARKER}", item["Key"], str(local))
    outputs.update(texts_of(tmp_path / "downloaded"))
    haystacks = {
        "CLI output": cli.stdout + cli.stderr,
        "event log (PostgreSQL)": event_log,
        "Elasticsearch documents": str(es_requiring_the_secret_key.documents(f"secrets_{MARKER}")),
        "Dify request bodies": str([r["body"] for r in dify_emulator.requests()]),
        **texts_of(tmp_path / "dagster_home"),  # compute logs, run storage files
        **texts_of(tmp_path / "stages"),
        **{str(p): p.read_bytes().decode("utf-8", errors="replace") for p in tmp_path.glob("cache.sqlite*")},
        **outputs,
    }
    # The search can fail: the run really wrote all of this.
    assert "enriched_tickets" in haystacks["event log (PostgreSQL)"]
    assert "ASSET_MATERIALIZATION" in haystacks["event log (PostgreSQL)"]
    assert any(name.endswith(".parquet") for name in outputs) and len(haystacks["Elasticsearch documents"]) > 1000
    assert any("compute_logs" in name or name.endswith((".out", ".err")) for name in haystacks)
    leaks = [(what, where) for what, secret in SECRETS.items() for where, text in haystacks.items() if secret in text]
    assert not leaks
