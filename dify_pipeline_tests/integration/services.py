"""Real services for integration tests: MariaDB and PostgreSQL (the machine's), an S3 server (moto, started here).

A missing service is an error, never a skip: a test that did not reach its service proves nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import psycopg2
import pymysql
import yaml

MARIADB = dict(host=os.environ.get("TEST_MARIADB_HOST", "127.0.0.1"),
               port=int(os.environ.get("TEST_MARIADB_PORT", "3306")),
               user=os.environ.get("TEST_MARIADB_USER", "root"),
               password=os.environ.get("TEST_MARIADB_PASSWORD", ""))
POSTGRES = dict(host=os.environ.get("TEST_PG_HOST", "127.0.0.1"), port=int(os.environ.get("TEST_PG_PORT", "5432")),
                user=os.environ.get("TEST_PG_USER", "postgres"), password=os.environ.get("TEST_PG_PASSWORD", ""))
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_mariadb_database() -> tuple[str, str]:
    """A fresh database on the machine's MariaDB: (database name, SQLAlchemy URL)."""
    name = f"dp_test_{uuid.uuid4().hex[:10]}"
    connection = pymysql.connect(**MARIADB, connect_timeout=5)
    with connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    password = f":{MARIADB['password']}" if MARIADB["password"] else ""
    return name, f"mysql+pymysql://{MARIADB['user']}{password}@{MARIADB['host']}:{MARIADB['port']}/{name}?charset=utf8mb4"


def drop_mariadb_database(name: str) -> None:
    connection = pymysql.connect(**MARIADB, connect_timeout=5)
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def create_postgres_database() -> str:
    name = f"dp_test_{uuid.uuid4().hex[:10]}"
    connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **POSTGRES)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return name


def drop_postgres_database(name: str) -> None:
    connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **POSTGRES)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    connection.close()


def dagster_home_on_postgres(folder: Path, database: str) -> dict[str, str]:
    """A DAGSTER_HOME holding the project's own dagster.yaml, and the DAGSTER_PG_* variables it reads."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", folder / "dagster.yaml")
    yaml.safe_load((folder / "dagster.yaml").read_text())  # fail here, clearly, if the file is broken
    return {
        "DAGSTER_HOME": str(folder),
        "DAGSTER_PG_HOST": POSTGRES["host"], "DAGSTER_PG_PORT": str(POSTGRES["port"]),
        "DAGSTER_PG_USER": POSTGRES["user"], "DAGSTER_PG_PASSWORD": POSTGRES["password"],
        "DAGSTER_PG_DB": database,
    }


class S3Server:
    """moto's S3-compatible server in its own process on a loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the S3 server (moto) did not start") from error
                time.sleep(0.1)

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
