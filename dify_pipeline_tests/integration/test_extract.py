"""The day's export from MariaDB: the fast paths (mysqlclient, and PyMySQL as the fallback) read exactly what the
SQLAlchemy path reads, type by type, in bounded batches, and only the day's rows."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from decimal import Decimal

import dagster as dg
import pyarrow as pa
import pymysql
import pytest

from dify_pipeline.partitions import day_window
from dify_pipeline.resources.source_database import SourceDatabase
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import day_file
from dify_pipeline_tests.integration import services
from dify_pipeline_tests.integration.pipeline import ticket_steps

DAY = "2026-11-20"
raw_tickets = ticket_steps()["raw_tickets"]
DRIVERS = ["mysqldb", "pymysql"]

# Every column type a ticket table is likely to have, with the values that have tripped exports before.
TABLE = """
    CREATE TABLE tickets (
        id BIGINT NULL, customer INT UNSIGNED NULL, vip TINYINT(1) NULL, amount DECIMAL(10, 2) NULL,
        score DOUBLE NULL, ratio FLOAT NULL, subject VARCHAR(200) NULL, body LONGTEXT NULL, raw_body LONGBLOB NULL,
        tag VARBINARY(16) NULL, status ENUM('open', 'closed') NULL, labels SET('refund', 'vip', 'late') NULL,
        flags BIT(8) NULL, extra JSON NULL, due_on DATE NULL, handled_in TIME NULL, seen_at TIMESTAMP NULL,
        updated_at DATETIME NULL, created_at DATETIME(6) NULL, INDEX (created_at)
    ) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"""
COLUMNS = ("id, customer, vip, amount, score, ratio, subject, body, raw_body, tag, status, labels, flags, extra, "
           "due_on, handled_in, seen_at, updated_at, created_at")
ROWS = [
    (1, 4000000000, 1, "129.90", 0.1, 1.5, "快递没到 😡", "三天了 📦 <b>还没</b>", "退款".encode("gb18030"),
     b"\x00\xff", "open", "refund,vip", 5, '{"a": [1, "二"]}', "2026-11-21", "01:30:00", "2026-11-20 08:00:00",
     "2026-11-20 09:00:00", "2026-11-20 00:00:00.000000"),
    (2, None, 0, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None,
     "2026-11-20 23:59:59.999999"),
    (3, 7, None, "-0.01", -1e300, 0.0, "", "", b"", b"", "closed", "", 0, "[]", "0000-00-00", "-12:00:00",
     "0000-00-00 00:00:00", "0000-00-00 00:00:00", "2026-11-20 12:34:56.789012"),
    (4, 8, 1, "1.00", 2.5, 2.5, "next day", "out", None, None, None, None, None, None, None, None, None, None,
     "2026-11-21 00:00:00.000000"),
    (5, 9, 1, "1.00", 2.5, 2.5, "day before", "out", None, None, None, None, None, None, None, None, None, None,
     "2026-11-19 23:59:59.999999"),
] + [
    (100 + i, i, i % 2, f"{i}.50", i / 3, i / 4, f"工单 {i}", f"第 {i} 号工单 " * 5, None, None, "open", "late", i,
     None, "2026-11-20", "00:00:01", None, None, f"2026-11-20 10:{i // 60:02d}:{i % 60:02d}.000001")
    for i in range(40)
]
IN_DAY = [row for row in ROWS if row[-1].startswith(DAY)]


@pytest.fixture
def source(mariadb_url) -> SourceDatabase:
    database = mariadb_url.rsplit("/", 1)[1].split("?")[0]
    connection = pymysql.connect(**services.MARIADB, database=database, charset="utf8mb4")
    with connection, connection.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = ''")  # legacy tables hold zero dates
        cursor.execute(TABLE)
        cursor.executemany(f"INSERT INTO tickets ({COLUMNS}) VALUES ({', '.join(['%s'] * 19)})", ROWS)
        connection.commit()
    return SourceDatabase(url=mariadb_url, batch_size=7)


def export(source: SourceDatabase, driver: str, monkeypatch) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    monkeypatch.setattr(SourceDatabase, "export_driver", lambda self: driver)
    schema, batches = source.stream_day("created_at", *day_window(DAY, "UTC"))
    return schema, list(batches)


def by_id(batches: list[pa.RecordBatch]) -> list[dict]:
    return sorted(pa.Table.from_batches(batches).to_pylist(), key=lambda row: row["id"])


def test_mysqlclient_is_installed_for_the_fast_export():
    assert importlib.util.find_spec("MySQLdb"), "install the `mysql` extra (needs libmariadb-dev): see .ci/run"
    assert SourceDatabase(url="mysql+pymysql://u@h/db").export_driver() == "mysqldb"
    assert SourceDatabase(url="sqlite:///x.db").export_driver() == "sqlalchemy"


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_fast_paths_read_exactly_what_sqlalchemy_reads(source, monkeypatch, driver):
    reference_schema, reference = export(source, "sqlalchemy", monkeypatch)
    schema, batches = export(source, driver, monkeypatch)
    assert schema == reference_schema
    assert all(batch.schema == schema for batch in batches)
    assert by_id(batches) == by_id(reference)


@pytest.mark.parametrize("driver", DRIVERS)
def test_values_keep_their_meaning(source, monkeypatch, driver):
    schema, batches = export(source, driver, monkeypatch)
    rows = {row["id"]: row for row in by_id(batches)}
    assert sorted(rows) == sorted(row[0] for row in IN_DAY)  # the window is [00:00, next 00:00)
    first, empty, odd = rows[1], rows[2], rows[3]
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert first["created_at"] == datetime(2026, 11, 20, tzinfo=UTC)
    assert empty["created_at"] == datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=UTC)
    assert first["customer"] == 4000000000 and first["amount"] == Decimal("129.90") and first["score"] == 0.1
    assert first["subject"] == "快递没到 😡" and first["raw_body"] == "退款".encode("gb18030")
    assert (first["status"], first["labels"], first["flags"]) == ("open", "refund,vip", "5")
    assert first["due_on"].isoformat() == "2026-11-21" and first["handled_in"] == "01:30:00"
    assert first["updated_at"] == datetime(2026, 11, 20, 9, tzinfo=UTC)
    assert all(value is None for name, value in empty.items() if name not in ("id", "vip", "created_at"))
    # MySQL's zero dates are no moment: null, rather than a failed export or a year-0 timestamp.
    assert (odd["due_on"], odd["seen_at"], odd["updated_at"]) == (None, None, None)
    assert odd["amount"] == Decimal("-0.01") and odd["score"] == -1e300 and odd["subject"] == ""


@pytest.mark.parametrize("driver", DRIVERS)
def test_rows_arrive_in_batches_of_the_configured_size(source, monkeypatch, driver):
    _, batches = export(source, driver, monkeypatch)
    full, rest = divmod(len(IN_DAY), 7)
    assert [batch.num_rows for batch in batches] == [7] * full + ([rest] if rest else [])


def test_raw_tickets_exports_the_day_and_says_which_driver_read_it(source, tmp_path):
    stage = ObjectStorage(url=str(tmp_path / "stages"))
    result = dg.materialize([raw_tickets], partition_key=DAY, resources={
        "source_database": source, "stage_storage": stage})
    [event] = result.asset_materializations_for_node("raw_tickets")
    assert event.metadata["rows"].value == len(IN_DAY)
    assert event.metadata["driver"].value == "mysqldb"
    table = stage.read_parquet(day_file(stage, "raw_tickets", DAY))
    assert sorted(table.column("id").to_pylist()) == sorted(row[0] for row in IN_DAY)


def test_rows_without_a_timestamp_are_counted_and_warned_about(source, mariadb_url, tmp_path):
    stage = ObjectStorage(url=str(tmp_path / "stages"))
    resources = {"source_database": source, "stage_storage": stage}
    checks = lambda result: {c.check_name: c for c in result.get_asset_check_evaluations()}  # noqa: E731
    clean = dg.materialize([raw_tickets], partition_key=DAY, resources=resources)
    assert clean.asset_materializations_for_node("raw_tickets")[0].metadata["source_rows_without_timestamp"].value == 0
    assert checks(clean)["every_source_row_has_a_day"].passed

    database = mariadb_url.rsplit("/", 1)[1].split("?")[0]
    connection = pymysql.connect(**services.MARIADB, database=database, charset="utf8mb4")
    with connection, connection.cursor() as cursor:
        cursor.executemany("INSERT INTO tickets (id, subject, created_at) VALUES (%s, %s, NULL)",
                           [(900, "a"), (901, "b")])
        connection.commit()
    undated = dg.materialize([raw_tickets], partition_key=DAY, resources=resources)
    assert undated.success  # a warning, not a failure: the day itself is whole
    [event] = undated.asset_materializations_for_node("raw_tickets")
    assert event.metadata["source_rows_without_timestamp"].value == 2 and event.metadata["rows"].value == len(IN_DAY)
    check = checks(undated)["every_source_row_has_a_day"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["rows_without_timestamp"].value == 2
