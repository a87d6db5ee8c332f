"""tickets_parquet on a real S3-compatible server (moto over loopback HTTP): layout, schema, atomic replace.

What a reader sees is checked with a reader of its own (a fresh s3fs, no caches), as another process would.
"""

from __future__ import annotations

import http.client
import http.server
import os
import threading
from urllib.parse import urlsplit

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import s3fs

from dify_pipeline.contract import TICKET_OUTPUTS
from dify_pipeline.resources import storage as storage_module
from dify_pipeline.resources.storage import DAY_FILE_NAME, ObjectStorage
from dify_pipeline.schemas import ENRICHMENT_FIELDS
from dify_pipeline_tests.integration.conftest import PUBLISH_DAY, S3_BUCKET
from dify_pipeline_tests.integration.pipeline import ticket_steps

OTHER_DAY = "2026-11-19"
tickets_parquet, parquet_matches_enriched = (ticket_steps()[name]
                                             for name in ("tickets_parquet", "parquet_matches_enriched"))


def publish(stage: ObjectStorage, output: ObjectStorage, day: str = PUBLISH_DAY) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [tickets_parquet, parquet_matches_enriched], partition_key=day, raise_on_error=False,
        resources={"stage_storage": stage, "parquet_output": output},
    )


def reader(s3_server) -> s3fs.S3FileSystem:
    """Another process's view of the bucket: its own client, no cached listings or objects."""
    return s3fs.S3FileSystem(endpoint_url=s3_server.url, key="testing", secret="testing",
                             skip_instance_cache=True, use_listings_cache=False)


def published(s3_server, output: ObjectStorage) -> pa.Table:
    dataset = ds.dataset(output.path(), filesystem=reader(s3_server), format="parquet", partitioning="hive")
    return dataset.to_table()


def summaries(table: pa.Table) -> dict[str, str]:
    return dict(zip(table.column("record_key").to_pylist(), table.column("summary").to_pylist()))


def objects_under(s3_server, output: ObjectStorage) -> list[str]:
    return sorted(reader(s3_server).find(output.path()))


def uploads_in_flight(s3_server) -> list[str]:
    return [u["Key"] for u in s3_server.client().list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", [])]


def check_passed(result) -> bool:
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation.passed


# -- layout and schema -----------------------------------------------------------------------------


def test_days_form_one_hive_partitioned_dataset_with_the_published_schema(
    aws_env, publish_stage, publish_output, write_enriched_day
):
    first = write_enriched_day(range(0, 1200), tag="a", day=PUBLISH_DAY)
    assert publish(publish_stage, publish_output, PUBLISH_DAY).success
    write_enriched_day(range(5000, 5300), tag="b", day=OTHER_DAY)
    assert publish(publish_stage, publish_output, OTHER_DAY).success

    assert objects_under(aws_env, publish_output) == sorted(
        publish_output.path(f"dt={day}", DAY_FILE_NAME) for day in (PUBLISH_DAY, OTHER_DAY)
    )
    table = published(aws_env, publish_output)
    counts = table.group_by("dt").aggregate([("record_key", "count")]).to_pylist()
    assert {row["dt"]: row["record_key_count"] for row in counts} == {PUBLISH_DAY: 1200, OTHER_DAY: 300}
    schema = table.schema
    assert "shard" not in schema.names
    for field in ENRICHMENT_FIELDS:  # typed as declared once in schemas.py
        assert schema.field(field.name).type == field.type, field.name
    assert pa.types.is_dictionary(schema.field("category").type)
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("total_tokens").type == pa.int64() and schema.field("latency_ms").type == pa.float64()
    assert set(table.column("pipeline_version").to_pylist()) == set(first.column("pipeline_version").to_pylist())

    with reader(aws_env).open(publish_output.path(f"dt={PUBLISH_DAY}", DAY_FILE_NAME), "rb") as handle:
        footer = pq.ParquetFile(handle).metadata
    assert footer.num_row_groups == 1  # three 500-row shards merged into one row group, not three
    column = footer.row_group(0).column(footer.schema.names.index("total_tokens"))
    assert column.compression == "ZSTD"
    assert column.statistics.has_min_max and column.statistics.min == 200


def test_large_days_are_cut_into_row_groups_of_the_configured_size(
    aws_env, publish_stage, publish_output, write_enriched_day, monkeypatch
):
    monkeypatch.setattr(storage_module, "ROW_GROUP_ROWS", 1000)
    write_enriched_day(range(2500), shard_rows=300)
    assert publish(publish_stage, publish_output).success
    footer = publish_output.parquet_metadata(publish_output.path(f"dt={PUBLISH_DAY}", DAY_FILE_NAME))
    assert [footer.row_group(i).num_rows for i in range(footer.num_row_groups)] == [1000, 1000, 500]


def test_the_readme_query_runs_on_duckdb(publish_stage, write_enriched_day, tmp_path):
    """DuckDB reads the same layout (here from a local folder: its S3 access is its own httpfs extension)."""
    import duckdb

    output = ObjectStorage(url=str(tmp_path / "published"))
    write_enriched_day(range(0, 40), day=PUBLISH_DAY)
    assert publish(publish_stage, output, PUBLISH_DAY).success
    write_enriched_day(range(100, 110), day=OTHER_DAY)
    assert publish(publish_stage, output, OTHER_DAY).success

    readme = open(os.path.join(os.path.dirname(__file__), "../../README.md"), encoding="utf-8").read()
    query = readme.split("```sql\n", 1)[1].split("```", 1)[0]
    assert "s3://bucket/prefix" in query
    rows = duckdb.sql(query.replace("s3://bucket/prefix", output.url)).fetchall()
    assert sum(count for day, _, count in rows if str(day) == PUBLISH_DAY) == 40
    assert sum(count for day, _, count in rows if str(day) == OTHER_DAY) == 10
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{output.url}/*/*.parquet', hive_partitioning = true)")
    types = {name: kind for name, kind, *_ in described.fetchall()}
    assert types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["category"] == "VARCHAR" and types["total_tokens"] == "BIGINT"


# -- replacing a day -------------------------------------------------------------------------------


def test_a_rerun_replaces_the_day_whole_and_no_stale_file_survives(
    aws_env, publish_stage, publish_output, write_enriched_day
):
    write_enriched_day(range(0, 100), tag="old")
    assert publish(publish_stage, publish_output).success
    write_enriched_day(range(1000, 1010), tag="other", day=OTHER_DAY)
    assert publish(publish_stage, publish_output, OTHER_DAY).success
    # A file of another layout in the day's folder (e.g. written by an older version by hand).
    stale = publish_output.path(f"dt={PUBLISH_DAY}", "part-00001.parquet")
    with reader(aws_env).open(stale, "wb") as handle:
        pq.write_table(published(aws_env, publish_output).drop_columns(["dt"]).slice(0, 5), handle)

    write_enriched_day(range(50, 150), tag="new")  # 50 keys gone, 50 changed, 50 new
    result = publish(publish_stage, publish_output)
    assert result.success and check_passed(result)
    assert result.asset_materializations_for_node("tickets_parquet")[0].metadata["stale_files_removed"].value == 1

    table = published(aws_env, publish_output)
    day = table.filter(pa.compute.equal(table.column("dt"), PUBLISH_DAY))
    assert summaries(day) == {str(k): f"new: summary of {k}" for k in range(50, 150)}
    assert day.num_rows == 100
    assert table.filter(pa.compute.equal(table.column("dt"), OTHER_DAY)).num_rows == 10  # other days untouched
    assert objects_under(aws_env, publish_output) == sorted(
        publish_output.path(f"dt={day}", DAY_FILE_NAME) for day in (PUBLISH_DAY, OTHER_DAY)
    )


def test_a_rerun_of_the_same_day_is_idempotent(aws_env, publish_stage, publish_output, write_enriched_day):
    write_enriched_day(range(0, 700), tag="same")
    first = publish(publish_stage, publish_output)
    before = published(aws_env, publish_output)
    second = publish(publish_stage, publish_output)
    assert first.success and second.success and check_passed(second)
    after = published(aws_env, publish_output)
    assert after.equals(before)
    assert objects_under(aws_env, publish_output) == [publish_output.path(f"dt={PUBLISH_DAY}", DAY_FILE_NAME)]


def test_a_day_whose_data_breaks_half_way_keeps_the_previous_day_and_fails(
    aws_env, publish_stage, publish_output, write_enriched_day
):
    write_enriched_day(range(0, 100), tag="old")
    assert publish(publish_stage, publish_output).success
    write_enriched_day(range(0, 2000), tag="new")
    broken = publish_stage.list_files(publish_stage.path("enriched_tickets", f"dt={PUBLISH_DAY}"))[2]
    with open(broken, "wb") as handle:  # the third of four shards is unreadable: the write dies half-way
        handle.write(b"PAR1 this is not a parquet file")

    result = publish(publish_stage, publish_output)
    assert not result.success
    assert summaries(published(aws_env, publish_output)) == {str(k): f"old: summary of {k}" for k in range(100)}
    assert objects_under(aws_env, publish_output) == [publish_output.path(f"dt={PUBLISH_DAY}", DAY_FILE_NAME)]
    assert uploads_in_flight(aws_env) == []


# -- interrupted uploads, seen from another reader at each moment ----------------------------------

SCHEMA = pa.schema([("record_key", pa.string()), ("payload", pa.binary())])


def batch(tag: str, start: int, count: int, payload_bytes: int = 0) -> pa.RecordBatch:
    """Rows with incompressible payloads, so a few batches fill several upload parts."""
    return pa.RecordBatch.from_pydict(
        {"record_key": [f"{tag}-{i}" for i in range(start, start + count)],
         "payload": [os.urandom(payload_bytes) for _ in range(count)]}, schema=SCHEMA)


@pytest.fixture
def small_parts(monkeypatch):
    """5 MiB upload parts (S3's minimum) and ~4 MiB row groups: a 20 MiB file is a real multipart upload."""
    monkeypatch.setattr(storage_module, "S3_PART_BYTES", 5 * 1024 * 1024)
    monkeypatch.setattr(storage_module, "ROW_GROUP_BYTES", 4 * 1024 * 1024)


def keys_seen(s3_server, path: str) -> list[str]:
    with reader(s3_server).open(path, "rb") as handle:
        return pq.read_table(handle, columns=["record_key"]).column("record_key").to_pylist()


def test_a_write_interrupted_half_way_never_shows_and_leaves_the_previous_day(
    aws_env, publish_output, small_parts
):
    path = publish_output.path(f"dt={PUBLISH_DAY}", DAY_FILE_NAME)
    publish_output.write_parquet(path, SCHEMA, [batch("old", 0, 50)])
    previous = keys_seen(aws_env, path)
    seen_meanwhile = []

    def batches_that_die():
        for i in range(4):  # ~16 MiB: several parts are on the server before the failure
            yield batch("new", i * 40, 40, payload_bytes=100_000)
            seen_meanwhile.append((keys_seen(aws_env, path), uploads_in_flight(aws_env)))
        raise ConnectionResetError("the source went away half-way")

    with pytest.raises(ConnectionResetError):
        publish_output.write_parquet(path, SCHEMA, batches_that_die())

    assert all(keys == previous for keys, _ in seen_meanwhile)  # at every moment: the previous day, whole
    assert any(uploads == [path.split("/", 1)[1]] for _, uploads in seen_meanwhile)  # parts were on the server
    assert keys_seen(aws_env, path) == previous
    assert uploads_in_flight(aws_env) == []  # aborted, not left to linger
    assert objects_under(aws_env, publish_output) == [path]


class FaultyS3Proxy:
    """A loopback HTTP proxy in front of the S3 server that fails the requests `fault(method, target)` names.

    `fault` returns None (forward), "error" (answer 500 InternalError, as S3 does under strain) or
    "drop" (read the request, then close the connection without an answer).
    """

    def __init__(self, upstream_url: str, fault) -> None:
        upstream = urlsplit(upstream_url)
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def handle_one_request_body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def relay(self) -> None:
                body = self.handle_one_request_body()
                proxy.requests.append((self.command, self.path))
                action = fault(self.command, self.path)
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action == "error":
                    payload = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                               b"<Message>We encountered an internal error. Please try again.</Message></Error>")
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("failure", ["error", "drop"])
def test_an_upload_the_server_fails_half_way_leaves_the_previous_day(
    aws_env, publish_output, small_parts, monkeypatch, failure
):
    # No retries (botocore's, then s3fs's own loop): the failure is final, and the test short.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    path = publish_output.path(f"dt={PUBLISH_DAY}", DAY_FILE_NAME)
    publish_output.write_parquet(path, SCHEMA, [batch("old", 0, 50)])
    previous = keys_seen(aws_env, path)

    def third_part_fails(method: str, target: str) -> str | None:
        return failure if method == "PUT" and "partNumber=3" in target else None

    proxy = FaultyS3Proxy(aws_env.url, third_part_fails)
    try:
        through_proxy = ObjectStorage(url=publish_output.url, s3_endpoint_url=proxy.url, s3_region="us-east-1")
        with pytest.raises(Exception):  # noqa: B017 - what s3fs raises differs by failure; the day kept is the point
            through_proxy.write_parquet(path, SCHEMA,
                                        (batch("new", i * 40, 40, payload_bytes=100_000) for i in range(4)))
    finally:
        proxy.stop()

    parts_sent = {t.split("partNumber=")[1].split("&")[0] for m, t in proxy.requests if "partNumber=" in t}
    assert {"1", "2", "3"} <= parts_sent  # the failure came in the middle of a real multipart upload
    assert any(m == "DELETE" and "uploadId=" in t for m, t in proxy.requests)  # which was aborted
    assert keys_seen(aws_env, path) == previous
    assert uploads_in_flight(aws_env) == []
    assert objects_under(aws_env, publish_output) == [path]


# -- AWS and S3-compatible stores ------------------------------------------------------------------


def test_credentials_come_from_an_aws_profile(aws_env, publish_output, tmp_path, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    credentials = tmp_path / "credentials"
    credentials.write_text("[pipeline]\naws_access_key_id = from-profile\naws_secret_access_key = secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    path = publish_output.path("profile-check.parquet")

    with pytest.raises(Exception, match="(?i)credentials"):  # no variables, no profile: nothing to sign with
        publish_output.write_parquet(path, SCHEMA, [batch("p", 0, 3)])
    monkeypatch.setenv("AWS_PROFILE", "pipeline")
    with_profile = ObjectStorage(**publish_output.model_dump())  # a new process would start with a new client
    assert with_profile.write_parquet(path, SCHEMA, [batch("p", 0, 3)]) == 3
    assert keys_seen(aws_env, path) == ["p-0", "p-1", "p-2"]


def test_listing_a_prefix_never_written_is_empty(aws_env, publish_output):
    assert publish_output.list_files(publish_output.path("dt=1999-01-01")) == []
    day_file = publish_output.path("dt=1999-01-02", DAY_FILE_NAME)
    publish_output.write_parquet(day_file, SCHEMA, [batch("l", 0, 1)])
    assert publish_output.list_files(publish_output.path("dt=1999-01-02")) == [day_file]


# -- the published schema (pure) -------------------------------------------------------------------


def test_a_source_column_named_like_the_partition_is_refused_with_a_clear_message():
    from dify_pipeline.schemas import published_schema

    with pytest.raises(ValueError, match="dt"):
        published_schema(pa.schema([("id", pa.int64()), ("dt", pa.string())]), TICKET_OUTPUTS)


def test_batches_are_conformed_to_the_published_schema():
    from dify_pipeline.schemas import conform, published_schema
    from dify_pipeline_tests.integration.conftest import enriched_table

    enriched = enriched_table(range(3))
    schema = published_schema(enriched.schema, TICKET_OUTPUTS)
    shuffled = enriched.select(list(reversed(enriched.column_names))).to_batches()[0]
    shuffled = shuffled.set_column(shuffled.schema.get_field_index("category"), "category",
                                   shuffled.column("category").cast(pa.string()))  # a plain-string category
    conformed = conform(shuffled, schema)
    assert conformed.schema == schema
    assert schema.names[:5] == ["id", "subject", "body", "created_at", "customer_tier"]
    assert conformed.column("category").to_pylist() == enriched.column("category").to_pylist()
