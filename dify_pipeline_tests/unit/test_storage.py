import os
import signal
import subprocess
import sys

import pyarrow as pa
import pytest

from dify_pipeline.resources.storage import ObjectStorage

SCHEMA = pa.schema([pa.field("record_key", pa.string()), pa.field("n", pa.int64())])


def batch(start: int, count: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"record_key": [f"k{i}" for i in range(start, start + count)], "n": list(range(start, start + count))},
        schema=SCHEMA,
    )


def everything_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


class Boom(RuntimeError):
    pass


def failing_batches():
    yield batch(0, 3)
    raise Boom("source died half-way")


@pytest.fixture
def storage(tmp_path) -> ObjectStorage:
    return ObjectStorage(url=str(tmp_path / "stages"))


def test_path_joins_parts_under_the_url(tmp_path):
    assert ObjectStorage(url=str(tmp_path) + "/").path("a", "b.parquet") == f"{tmp_path}/a/b.parquet"
    assert ObjectStorage(url="s3://bucket/prefix").path("a") == "bucket/prefix/a"


def test_uri_names_s3_paths_with_their_scheme():
    s3 = ObjectStorage(url="s3://bucket/prefix")
    assert s3.uri(s3.path("a")) == "s3://bucket/prefix/a"
    assert ObjectStorage(url="/data").uri("/data/a") == "/data/a"


def test_written_batches_read_back_whole(storage):
    path = storage.path("raw", "dt=2026-03-08", "part-00000.parquet")
    rows = storage.write_parquet(path, SCHEMA, [batch(0, 3), pa.Table.from_batches([batch(3, 2)]), batch(5, 0)])
    assert rows == 5
    table = storage.read_parquet(path)
    assert table.schema == SCHEMA
    assert table.column("n").to_pylist() == [0, 1, 2, 3, 4]
    assert storage.read_schema(path) == SCHEMA
    assert sum(b.num_rows for b in storage.iter_parquet_batches(path, batch_size=2)) == 5


def test_writing_no_rows_still_makes_a_file_with_the_schema(storage):
    path = storage.path("raw", "empty.parquet")
    assert storage.write_parquet(path, SCHEMA, []) == 0
    assert storage.read_parquet(path).num_rows == 0
    assert storage.read_schema(path) == SCHEMA


def test_a_write_that_fails_half_way_leaves_no_file_and_no_temporary_file(storage, tmp_path):
    folder = storage.path("raw", "dt=2026-03-08")
    with pytest.raises(Boom):
        storage.write_parquet(f"{folder}/part-00000.parquet", SCHEMA, failing_batches())
    assert everything_under(tmp_path) == []
    assert storage.list_files(folder) == []


# A writer in a process of its own, streaming slowly: it can be killed, or left running, in the middle of a write.
SLOW_WRITER = """
import sys, time
import pyarrow as pa
from dify_pipeline.resources.storage import ObjectStorage
schema = pa.schema([pa.field("record_key", pa.string()), pa.field("n", pa.int64())])
def slowly():
    for i in range(int(sys.argv[3])):
        yield pa.RecordBatch.from_pydict({"record_key": [str(i)], "n": [i]}, schema=schema)
        print("wrote", i, flush=True)
        time.sleep(0.05)
ObjectStorage(url=sys.argv[1]).write_parquet(sys.argv[2], schema, slowly())
"""


def start_writer(storage: ObjectStorage, path: str, batches: int) -> subprocess.Popen:
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, storage.url, path, str(batches)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().startswith("wrote")  # its hidden file exists and is being written
    return writer


def hidden_files(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_the_temporary_file_of_a_killed_write_is_removed_by_the_next_write_in_its_folder(storage):
    folder = storage.path("ticket_shards", "dt=2026-03-08")
    writer = start_writer(storage, f"{folder}/shard-00003.parquet", batches=10_000)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert len(hidden_files(folder)) == 1  # what kill -9 leaves: nothing could remove it

    # The stage's next write (a smaller day: shard 3 is not written again) removes it.
    fresh = ObjectStorage(url=storage.url)  # as in the next step's process
    fresh.write_parquet(f"{folder}/shard-00000.parquet", SCHEMA, [batch(0, 2)])
    assert hidden_files(folder) == []
    assert fresh.list_files(folder) == [f"{folder}/shard-00000.parquet"]


def test_the_next_write_leaves_the_temporary_file_of_a_write_still_in_progress(storage):
    folder = storage.path("enriched_tickets", "dt=2026-03-08")
    writer = start_writer(storage, f"{folder}/shard-00001.parquet", batches=40)
    ObjectStorage(url=storage.url).write_parquet(f"{folder}/shard-00000.parquet", SCHEMA, [batch(0, 2)])
    assert len(hidden_files(folder)) == 1  # the other writer's, alive
    assert writer.wait(timeout=60) == 0
    assert hidden_files(folder) == []
    assert storage.read_parquet(f"{folder}/shard-00001.parquet").num_rows == 40


def test_a_failed_rewrite_keeps_the_previous_file_intact(storage, tmp_path):
    path = storage.path("raw", "dt=2026-03-08", "part-00000.parquet")
    storage.write_parquet(path, SCHEMA, [batch(0, 4)])
    with pytest.raises(Boom):
        storage.write_parquet(path, SCHEMA, failing_batches())
    assert storage.read_parquet(path).column("n").to_pylist() == [0, 1, 2, 3]
    assert everything_under(tmp_path) == ["stages/raw/dt=2026-03-08/part-00000.parquet"]


def test_a_rewrite_replaces_the_file(storage):
    path = storage.path("raw", "part-00000.parquet")
    storage.write_parquet(path, SCHEMA, [batch(0, 4)])
    storage.write_parquet(path, SCHEMA, [batch(10, 1)])
    assert storage.read_parquet(path).column("n").to_pylist() == [10]


def test_list_files_shows_visible_files_with_the_suffix_sorted(storage):
    folder = storage.path("shards", "dt=2026-03-08")
    for name in ["shard-00002.parquet", "shard-00000.parquet", "shard-00001.parquet"]:
        storage.write_parquet(f"{folder}/{name}", SCHEMA, [batch(0, 1)])
    for name in [".shard-00003.parquet.abc.tmp", ".hidden.parquet", "_SUCCESS", "_temporary.parquet", "notes.txt"]:
        with open(f"{folder}/{name}", "w") as handle:
            handle.write("x")
    assert storage.list_files(folder) == [f"{folder}/shard-0000{i}.parquet" for i in range(3)]
    assert storage.list_files(folder, suffix=".txt") == [f"{folder}/notes.txt"]


def test_list_files_of_a_missing_folder_is_empty(storage):
    assert storage.list_files(storage.path("never", "written")) == []


def test_listed_paths_are_named_as_written_when_the_url_is_relative(tmp_path, monkeypatch):
    """Assets delete the listed files they did not just write: both must name a file the same way."""
    monkeypatch.chdir(tmp_path)
    storage = ObjectStorage(url="stages")
    folder = storage.path("shards", "dt=2026-03-08")
    written = [f"{folder}/shard-0000{i}.parquet" for i in range(2)]
    for path in written:
        storage.write_parquet(path, SCHEMA, [batch(0, 1)])
    assert storage.list_files(folder) == written
    storage.remove(p for p in storage.list_files(folder) if p not in written)
    assert storage.list_files(folder) == written


def test_remove_deletes_only_the_given_files(storage):
    folder = storage.path("shards", "dt=2026-03-08")
    keep, drop = f"{folder}/shard-00000.parquet", f"{folder}/shard-00001.parquet"
    for path in (keep, drop):
        storage.write_parquet(path, SCHEMA, [batch(0, 1)])
    storage.remove([drop])
    assert storage.list_files(folder) == [keep]
    storage.remove([])  # nothing to do is not an error
    storage.remove(iter([]))
    assert storage.list_files(folder) == [keep]


# -- row groups ------------------------------------------------------------------------------------

from dify_pipeline.resources import storage as storage_module  # noqa: E402
from dify_pipeline.resources.storage import row_groups  # noqa: E402


def sizes(groups) -> list[int]:
    return [group.num_rows for group in groups]


def test_small_batches_are_merged_into_row_groups_of_the_chosen_size():
    groups = list(row_groups((batch(i * 500, 500) for i in range(7)), max_rows=1000, max_bytes=1 << 30))
    assert sizes(groups) == [1000, 1000, 1000, 500]
    assert pa.concat_tables(groups).column("n").to_pylist() == list(range(3500))  # order and rows kept


def test_a_large_batch_is_sliced_into_row_groups():
    groups = row_groups([pa.Table.from_batches([batch(0, 2500)])], max_rows=1000, max_bytes=1 << 30)
    assert sizes(groups) == [1000, 1000, 500]


def test_a_row_group_is_cut_early_when_it_reaches_the_byte_limit():
    one_batch = batch(0, 100).nbytes
    groups = row_groups([batch(i * 100, 100) for i in range(5)], max_rows=10_000, max_bytes=2 * one_batch)
    assert sizes(groups) == [200, 200, 100]


def test_empty_batches_make_no_row_groups():
    assert sizes(row_groups([batch(0, 0), batch(0, 0)], max_rows=10, max_bytes=1 << 30)) == []


def test_a_written_file_has_row_groups_of_the_configured_size_whatever_the_batches(storage, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(storage_module, "ROW_GROUP_ROWS", 1000)
    path = storage.path("raw", "dt=2026-03-08", "part-00000.parquet")
    assert storage.write_parquet(path, SCHEMA, (batch(i * 300, 300) for i in range(8))) == 2400
    footer = storage.parquet_metadata(path)
    assert [footer.row_group(i).num_rows for i in range(footer.num_row_groups)] == [1000, 1000, 400]
    assert footer.row_group(0).column(1).compression == "ZSTD"
    assert footer.row_group(0).column(1).statistics.min == 0
    assert pq.read_table(path, columns=["n"]).column("n").to_pylist() == list(range(2400))


def test_reading_selected_columns(storage):
    path = storage.path("raw", "part-00000.parquet")
    storage.write_parquet(path, SCHEMA, [batch(0, 3)])
    assert storage.read_parquet(path, columns=["n"]).column_names == ["n"]
    assert [b.column_names for b in storage.iter_parquet_batches(path, columns=["record_key"])] == [["record_key"]]


# -- S3 client configuration -----------------------------------------------------------------------


def test_s3_compatible_stores_get_path_style_addressing_and_checksums_only_when_required():
    fs = ObjectStorage(url="s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:9000").filesystem()
    assert fs.config_kwargs["s3"] == {"addressing_style": "path"}
    assert fs.config_kwargs["request_checksum_calculation"] == "when_required"
    assert fs.endpoint_url == "http://127.0.0.1:9000"


def test_aws_gets_virtual_hosted_addressing_and_its_default_checksums():
    fs = ObjectStorage(url="s3://bucket/prefix", s3_region="eu-west-1").filesystem()
    assert fs.config_kwargs == {"s3": {"addressing_style": "virtual"}}
    assert fs.client_kwargs == {"region_name": "eu-west-1"}


def test_addressing_style_can_be_forced_for_stores_that_need_virtual_hosts():
    fs = ObjectStorage(url="s3://bucket/p", s3_endpoint_url="https://oss-cn-hangzhou.aliyuncs.com",
                       s3_addressing_style="virtual").filesystem()
    assert fs.config_kwargs["s3"] == {"addressing_style": "virtual"}


def test_the_code_location_takes_the_addressing_style_from_the_environment(monkeypatch):
    from dify_pipeline.definitions import build_resources

    monkeypatch.setenv("S3_ENDPOINT_URL", "https://oss-cn-hangzhou.aliyuncs.com")
    monkeypatch.setenv("S3_ADDRESSING_STYLE", "virtual")
    resources = build_resources()
    styles = {resources[name].s3_addressing_style for name in ("parquet_output", "stage_storage")}
    assert styles == {"virtual"}
    monkeypatch.delenv("S3_ADDRESSING_STYLE")
    assert build_resources()["parquet_output"].s3_addressing_style == "auto"


def test_one_client_serves_every_call_of_a_resource():
    storage = ObjectStorage(url="s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:9000")
    assert storage.filesystem() is storage.filesystem()
    assert ObjectStorage(url="s3://bucket/prefix").filesystem() is not storage.filesystem()


# -- reading ahead and writing behind --------------------------------------------------------------

def test_many_small_files_read_as_one_stream_in_order(storage):
    folder = storage.path("shards", "dt=2026-03-08")
    paths = [f"{folder}/shard-{i:05d}.parquet" for i in range(12)]
    for i, path in enumerate(paths):
        storage.write_parquet(path, SCHEMA, [batch(i * 10, 10)])
    batches = list(storage.iter_files_batches(paths, batch_size=4, readahead=3, files_per_scan=5))
    assert max(b.num_rows for b in batches) == 4
    assert [n for b in batches for n in b.column("n").to_pylist()] == list(range(120))  # across scans too


def test_only_the_asked_columns_are_read(storage):
    paths = [storage.path(f"shard-{i}.parquet") for i in range(3)]
    for i, path in enumerate(paths):
        storage.write_parquet(path, SCHEMA, [batch(i * 5, 5)])
    batches = list(storage.iter_files_batches(paths, columns=["n"]))
    assert {tuple(b.schema.names) for b in batches} == {("n",)}
    assert [n for b in batches for n in b.column("n").to_pylist()] == list(range(15))


def test_a_file_that_cannot_be_read_fails_the_stream(storage):
    good, bad = storage.path("a.parquet"), storage.path("b.parquet")
    storage.write_parquet(good, SCHEMA, [batch(0, 2)])
    with open(bad, "wb") as handle:
        handle.write(b"not parquet")
    with pytest.raises(pa.ArrowInvalid, match="b.parquet"):
        list(storage.iter_files_batches([good, bad]))


def test_a_days_rows_fill_whole_row_groups_well_before_fifty_thousand_rows():
    # A writer and a reader hold one row group: a 50,000-row day must already show the steady state.
    ticket_bytes = 200  # Arrow bytes of a raw ticket row (subject, body, ids, times)
    assert storage_module.ROW_GROUP_BYTES // ticket_bytes <= 50_000 * 2


def test_writing_and_reading_hand_freed_memory_back_after_each_row_group_and_batch(storage, monkeypatch):
    released = []
    monkeypatch.setattr(storage_module, "release_free_memory", lambda: released.append(1))
    monkeypatch.setattr(storage_module, "ROW_GROUP_ROWS", 1000)
    path = storage.path("raw", "dt=2026-03-08", "part-00000.parquet")
    storage.write_parquet(path, SCHEMA, (batch(i * 300, 300) for i in range(8)))
    assert len(released) == 3  # one per row group written
    released.clear()
    assert sum(b.num_rows for b in storage.iter_parquet_batches(path, batch_size=500)) == 2400
    assert len(released) >= 4  # one per batch read


def test_releasing_free_memory_returns_the_arrow_pools_unused_pages():
    import pyarrow as pa

    held = pa.array(range(2_000_000))
    del held
    storage_module.release_free_memory()  # must not raise, whatever the allocator
    assert pa.default_memory_pool().bytes_allocated() < 16_000_000
