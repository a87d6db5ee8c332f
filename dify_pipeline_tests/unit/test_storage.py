import os

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
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names)


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
