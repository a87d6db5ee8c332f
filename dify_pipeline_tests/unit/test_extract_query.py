import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from dify_pipeline.partitions import day_window
from dify_pipeline.resources.source_query import (
    arrow_schema,
    arrow_type,
    day_query,
    local_naive,
    to_record_batch,
    validate_identifier,
)

UTC = UTC


# -- identifiers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tickets", "support_tickets_2026", "_staging", "T", "a" * 64])
def test_plain_identifiers_are_accepted(name):
    assert validate_identifier(name, "table") == name


@pytest.mark.parametrize(
    "name",
    ["tickets; DROP TABLE x", "`tickets`", "support tickets", "", "1tickets", "db.tickets", "tickets--",
     "tickets\n", "a" * 65, "票据", None],
)
def test_anything_but_a_plain_identifier_is_rejected(name):
    with pytest.raises(ValueError, match="table"):
        validate_identifier(name, "table")


# -- time zones ------------------------------------------------------------------------------------


def test_a_utc_bound_becomes_the_wall_clock_time_of_the_source_zone():
    moment = datetime(2026, 1, 15, 16, 0, tzinfo=UTC)
    assert local_naive(moment, "Asia/Shanghai") == datetime(2026, 1, 16, 0, 0)
    assert local_naive(moment, "America/New_York") == datetime(2026, 1, 15, 11, 0)
    assert local_naive(moment, "UTC") == datetime(2026, 1, 15, 16, 0)


def test_local_naive_drops_the_zone():
    assert local_naive(datetime(2026, 1, 15, tzinfo=UTC), "Asia/Shanghai").tzinfo is None


def test_a_day_in_one_zone_read_from_a_source_in_another():
    start, end = day_window("2026-03-10", "Asia/Shanghai")
    assert local_naive(start, "UTC") == datetime(2026, 3, 9, 16, 0)
    assert local_naive(end, "UTC") == datetime(2026, 3, 10, 16, 0)
    assert local_naive(start, "America/New_York") == datetime(2026, 3, 9, 12, 0)  # EDT since 2026-03-08


def test_day_window_spans_local_midnight_to_local_midnight():
    start, end = day_window("2026-07-01", "Asia/Shanghai")
    assert start.astimezone(UTC) == datetime(2026, 6, 30, 16, 0, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
    assert local_naive(start, "Asia/Shanghai") == datetime(2026, 7, 1)


def test_spring_forward_day_in_new_york_lasts_23_hours():
    start, end = day_window("2026-03-08", "America/New_York")
    # Same tzinfo on both ends makes `end - start` wall-clock arithmetic (24 h): compare instants instead.
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)
    assert local_naive(start, "America/New_York") == datetime(2026, 3, 8)
    assert local_naive(end, "America/New_York") == datetime(2026, 3, 9)
    assert local_naive(start, "UTC") == datetime(2026, 3, 8, 5, 0)
    assert local_naive(end, "UTC") == datetime(2026, 3, 9, 4, 0)


def test_fall_back_day_in_new_york_lasts_25_hours():
    start, end = day_window("2026-11-01", "America/New_York")
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=25)


def test_consecutive_day_windows_tile_time_without_gap_or_overlap():
    days = [(date(2026, 3, 6) + timedelta(days=i)).isoformat() for i in range(5)]
    windows = [day_window(d, "America/New_York") for d in days]
    for (_, end), (next_start, _) in zip(windows, windows[1:]):
        assert end.astimezone(UTC) == next_start.astimezone(UTC)


# -- the query -------------------------------------------------------------------------------------


def tickets_table() -> sa.Table:
    return sa.Table(
        "tickets", sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject", sa.String(200)),
        sa.Column("created_at", sa.DateTime),
    )


@pytest.mark.parametrize("dialect", [mysql.dialect(), postgresql.dialect(), sa.create_engine("sqlite://").dialect])
def test_day_query_sends_the_window_as_bound_parameters_not_literals(dialect):
    start, end = datetime(2026, 3, 8, 0, 0), datetime(2026, 3, 9, 0, 0)
    compiled = day_query(tickets_table(), "created_at").compile(dialect=dialect)
    sql = str(compiled)
    assert set(compiled.params) == {"window_start", "window_end"}
    assert "2026" not in sql
    bound = compiled.construct_params({"window_start": start, "window_end": end})
    assert (bound["window_start"], bound["window_end"]) == (start, end)


def test_day_query_selects_every_column_in_a_half_open_window():
    compiled = day_query(tickets_table(), "created_at").compile(dialect=mysql.dialect())
    sql = " ".join(str(compiled).split())
    assert sql.startswith("SELECT tickets.id, tickets.subject, tickets.created_at FROM tickets WHERE")
    assert "tickets.created_at >= %s AND tickets.created_at < %s" in sql


def test_day_query_returns_exactly_the_rows_of_the_window():
    engine = sa.create_engine("sqlite://")
    table = tickets_table()
    table.metadata.create_all(engine)
    start, end = datetime(2026, 3, 8), datetime(2026, 3, 9)
    moments = [start - timedelta(microseconds=1), start, datetime(2026, 3, 8, 12), end - timedelta(seconds=1), end]
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"id": i, "subject": "s", "created_at": m} for i, m in enumerate(moments)])
        found = connection.execute(day_query(table, "created_at"), {"window_start": start, "window_end": end}).all()
    assert sorted(r.id for r in found) == [1, 2, 3]


# -- types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql_type", "expected"),
    [
        (sa.Boolean(), pa.bool_()),
        (sa.Integer(), pa.int64()),
        (sa.BigInteger(), pa.int64()),
        (mysql.TINYINT(), pa.int64()),
        (mysql.BIGINT(unsigned=True), pa.int64()),
        (sa.Numeric(10, 2), pa.decimal128(10, 2)),
        (mysql.DECIMAL(12, 0), pa.decimal128(12, 0)),
        (sa.Numeric(), pa.float64()),
        (sa.Numeric(60, 4), pa.decimal128(38, 4)),
        (sa.Float(), pa.float64()),
        (mysql.DOUBLE(), pa.float64()),
        (sa.DateTime(), pa.timestamp("us")),
        (mysql.DATETIME(fsp=6), pa.timestamp("us")),
        (mysql.TIMESTAMP(), pa.timestamp("us")),
        (sa.DateTime(timezone=True), pa.timestamp("us", tz="UTC")),
        (sa.Date(), pa.date32()),
        (sa.LargeBinary(), pa.binary()),
        (mysql.BLOB(), pa.binary()),
        (mysql.VARBINARY(16), pa.binary()),
        (sa.String(200), pa.string()),
        (sa.Text(), pa.string()),
        (mysql.MEDIUMTEXT(), pa.string()),
        (sa.Enum("open", "closed"), pa.string()),
        (sa.JSON(), pa.string()),
        (sa.Time(), pa.string()),
    ],
)
def test_arrow_type_keeps_each_columns_meaning(sql_type, expected):
    assert arrow_type(sql_type) == expected


def test_arrow_schema_makes_every_timestamp_utc_aware():
    schema = arrow_schema(["id", "created_at"], [pa.int64(), pa.timestamp("us")])
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("id").type == pa.int64()


# -- record batches --------------------------------------------------------------------------------


def batch_of(values, arrow, source_timezone="UTC"):
    return to_record_batch([(v,) for v in values], ["c"], [arrow], source_timezone).column(0).to_pylist()


def test_naive_timestamps_are_read_in_the_source_zone_and_stored_as_utc():
    rows = [(1, datetime(2026, 3, 10, 8, 30)), (2, None)]
    batch = to_record_batch(rows, ["id", "created_at"], [pa.int64(), pa.timestamp("us")], "Asia/Shanghai")
    assert batch.schema == arrow_schema(["id", "created_at"], [pa.int64(), pa.timestamp("us")])
    assert batch.column(1).to_pylist() == [datetime(2026, 3, 10, 0, 30, tzinfo=UTC), None]
    assert batch.column(0).to_pylist() == [1, 2]


def test_naive_timestamps_follow_daylight_saving_of_the_source_zone():
    values = [datetime(2026, 3, 7, 12, 0), datetime(2026, 3, 9, 12, 0)]  # EST, then EDT
    assert batch_of(values, pa.timestamp("us"), "America/New_York") == [
        datetime(2026, 3, 7, 17, 0, tzinfo=UTC), datetime(2026, 3, 9, 16, 0, tzinfo=UTC)]


def test_wall_clock_times_that_do_not_exist_or_repeat_do_not_fail_the_export():
    skipped = datetime(2026, 3, 8, 2, 30)  # the hour New York skips
    repeated = datetime(2026, 11, 1, 1, 30)  # the hour New York lives twice
    [a, b] = batch_of([skipped, repeated], pa.timestamp("us"), "America/New_York")
    assert a.tzinfo is not None and b.tzinfo is not None
    assert b == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # the earlier of the two


def test_aware_timestamps_of_a_timestamptz_column_keep_their_instant():
    moment = datetime(2026, 3, 10, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    arrow = arrow_type(sa.DateTime(timezone=True))
    assert batch_of([moment], arrow, "Asia/Shanghai") == [datetime(2026, 3, 10, 10, 0, tzinfo=UTC)]


def test_invalid_utf8_bytes_in_a_text_column_become_text():
    gb18030 = "退款申请".encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        gb18030.decode("utf-8")
    assert batch_of([gb18030, "已是文本".encode(), None], pa.string()) == ["退款申请", "已是文本", None]


def test_bytes_broken_in_every_encoding_still_become_text():
    [text] = batch_of([b"ok \xff\xfe\x80 end"], pa.string())
    assert isinstance(text, str)
    assert text.startswith("ok ") and text.endswith(" end")


def test_parsed_json_values_in_a_text_column_stay_json():
    value = {"tags": ["退款", "vip"], "score": 3}
    [text] = batch_of([value], pa.string())
    assert json.loads(text) == value


def test_other_values_in_a_text_column_become_their_text():
    assert batch_of([42, 1.5], pa.string()) == ["42", "1.5"]


def test_decimal_values_of_a_numeric_column_without_precision_become_floats():
    assert batch_of([Decimal("1.5000000000"), None], arrow_type(sa.Numeric())) == [1.5, None]


def test_decimal_values_of_a_precise_numeric_column_stay_exact():
    assert batch_of([Decimal("1234.56")], arrow_type(sa.Numeric(10, 2))) == [Decimal("1234.56")]


def test_record_batch_keeps_column_names_and_order():
    batch = to_record_batch([(1, "a", b"\x00"), (2, "b", None)], ["id", "subject", "blob"],
                            [pa.int64(), pa.string(), pa.binary()], "UTC")
    assert batch.schema.names == ["id", "subject", "blob"]
    assert batch.num_rows == 2
    assert batch.column(2).to_pylist() == [b"\x00", None]


# -- temporal values sent as text (the fast MySQL path) --------------------------------------------

from dify_pipeline.resources.source_query import columns_to_record_batch  # noqa: E402


def test_timestamps_sent_as_text_are_parsed_and_read_in_the_source_zone():
    values = [b"2026-03-10 08:30:00.250000", "2026-03-10 08:31:00", None]
    assert batch_of(values, pa.timestamp("us"), "Asia/Shanghai") == [
        datetime(2026, 3, 10, 0, 30, 0, 250000, tzinfo=UTC), datetime(2026, 3, 10, 0, 31, tzinfo=UTC), None]


def test_mysql_zero_dates_and_impossible_dates_become_null():
    assert batch_of([b"0000-00-00 00:00:00", b"2026-11-00 10:00:00", b"2026-11-20 10:00:00"], pa.timestamp("us")) == [
        None, None, datetime(2026, 11, 20, 10, tzinfo=UTC)]
    assert batch_of([b"0000-00-00", b"2026-11-21", None], pa.date32()) == [None, date(2026, 11, 21), None]


def test_a_driver_mixing_datetimes_and_text_in_one_column_still_exports():
    assert batch_of([datetime(2026, 3, 10, 8, 30), "0000-00-00 00:00:00"], pa.timestamp("us")) == [
        datetime(2026, 3, 10, 8, 30, tzinfo=UTC), None]


def test_a_mysql_set_parsed_by_sqlalchemy_becomes_mysqls_own_text():
    assert batch_of([{"vip", "refund"}, set()], pa.string()) == ["refund,vip", ""]


def test_columns_and_rows_make_the_same_batch():
    rows = [(1, "a", datetime(2026, 3, 10, 8, 30), Decimal("1.5")), (2, None, None, None)]
    names, types = ["id", "s", "t", "f"], [pa.int64(), pa.string(), pa.timestamp("us"), pa.float64()]
    assert columns_to_record_batch(list(zip(*rows)), names, types, "UTC") == to_record_batch(rows, names, types, "UTC")


def test_no_rows_make_an_empty_batch_with_the_schema():
    batch = to_record_batch([], ["id", "t"], [pa.int64(), pa.timestamp("us")], "UTC")
    assert batch.num_rows == 0 and batch.schema == arrow_schema(["id", "t"], [pa.int64(), pa.timestamp("us")])
