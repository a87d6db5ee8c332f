"""Files on a local path or on S3 (and S3-compatible stores), through fsspec/s3fs."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import dagster as dg
import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field, PrivateAttr

# Statistics let readers skip row groups by value; zstd reads as fast as snappy and is smaller.
PARQUET_WRITE_OPTIONS = dict(compression="zstd", write_statistics=True)
# A row group is the unit a reader scans in parallel and skips by statistics: big enough to amortize its
# metadata and seeks, small enough to hold one in memory while writing (this bounds the writer's memory).
ROW_GROUP_ROWS = 128 * 1024
ROW_GROUP_BYTES = 16 * 1024 * 1024  # Arrow (uncompressed) bytes; what a writer holds in memory, and a reader
S3_PART_BYTES = 32 * 1024 * 1024  # multipart upload part size (S3's minimum is 5 MiB)
DAY_FILE_NAME = "part-00000.parquet"  # one object per day: replaced atomically


def storage_url(url: str) -> str:
    """The folder `url` names, as ObjectStorage takes it: `s3://bucket/prefix` or an absolute local path
    (`file:///path` becomes `/path`). Anything else raises ValueError saying why: a relative path would
    land under whatever the working directory is when a step runs."""
    if url.startswith("file://"):
        url = url[len("file://") :]
        if not url.startswith("/"):
            raise ValueError("a file:// URL names an absolute path: file:///absolute/folder")
    if url.startswith("s3://"):
        if not url[len("s3://") :].split("/", 1)[0]:
            raise ValueError("an S3 URL names its bucket: s3://bucket/prefix")
        return url
    if "://" in url:
        raise ValueError(f"{url.split('://', 1)[0]}:// is not supported: use s3://bucket/prefix or an absolute path")
    if not os.path.isabs(url):
        raise ValueError("not an absolute path (nor s3://bucket/prefix or file:///absolute/folder)")
    return url


class ObjectStorage(dg.ConfigurableResource):
    """A folder of Parquet files: `url` is a local path or `s3://bucket/prefix`.

    S3 credentials come from the standard AWS chain (environment variables, `AWS_PROFILE` and the shared
    config files, instance or task roles), never from this configuration.
    """

    url: str = Field(description="Local folder or s3://bucket/prefix.")
    s3_endpoint_url: str | None = Field(
        default=None, description="For S3-compatible stores (MinIO, Ceph, OSS, moto...).")
    s3_region: str | None = Field(default=None, description="AWS region; the standard AWS_REGION when unset.")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="auto: path-style when an endpoint is set (MinIO, Ceph), virtual-hosted on AWS; "
        "set virtual for stores that require it with a custom endpoint (e.g. Aliyun OSS).",
    )

    # One client per resource instance: building an S3 client costs ~100 ms, more than a small request.
    _filesystem: fsspec.AbstractFileSystem | None = PrivateAttr(default=None)
    _swept_folders: set[str] = PrivateAttr(default_factory=set)  # local folders cleared of abandoned writes

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def filesystem(self) -> fsspec.AbstractFileSystem:
        if self._filesystem is None:
            self._filesystem = self._new_filesystem()
        return self._filesystem

    def _new_filesystem(self) -> fsspec.AbstractFileSystem:
        if self.is_s3:
            client_kwargs = {"region_name": self.s3_region} if self.s3_region else {}
            style = self.s3_addressing_style
            if style == "auto":
                # Path-style works with every S3-compatible server; AWS wants virtual-hosted for new buckets.
                style = "path" if self.s3_endpoint_url else "virtual"
            config: dict = {"s3": {"addressing_style": style}}
            if self.s3_endpoint_url:
                # botocore >= 1.36 adds CRC checksums to every upload; several S3-compatible stores reject them.
                config.update(request_checksum_calculation="when_required",
                              response_checksum_validation="when_required")
            return fsspec.filesystem(
                "s3",
                endpoint_url=self.s3_endpoint_url,
                client_kwargs=client_kwargs,
                config_kwargs=config,
                default_block_size=S3_PART_BYTES,
                use_listings_cache=False,  # other processes write the same prefixes
                skip_instance_cache=True,  # nor share a client with another resource's configuration
            )
        return fsspec.filesystem("file", auto_mkdir=True)

    def path(self, *parts: str) -> str:
        root = self.url[len("s3://") :] if self.is_s3 else self.url
        return "/".join([root.rstrip("/"), *parts])

    def uri(self, path: str) -> str:
        """How a user names `path` (a result of `path()`): with its s3:// scheme when on S3."""
        return f"s3://{path}" if self.is_s3 else path

    def write_parquet(self, path: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch | pa.Table]) -> int:
        """Stream batches into one Parquet file that appears whole or not at all; returns rows written.

        Batches are regrouped into row groups of up to ROW_GROUP_ROWS rows / ROW_GROUP_BYTES bytes, so
        memory holds one row group (plus one upload part on S3), whatever the size of the file.

        On S3 the parts are uploaded as the file grows, and the object appears only when the multipart
        upload is completed after the last byte; if anything fails before (the batches, the writer, the
        network), the upload is aborted and whatever the key held before is untouched. Locally we write
        a hidden temporary file in the same folder and rename it, which is atomic on one filesystem; the
        first write into a folder also removes the temporary files that killed writers left there.
        """
        if self.is_s3:
            # Never `with`: leaving a `with` block on an error would close the file, which publishes it. Only
            # close() publishes (one PUT for a file smaller than a part, else completing the multipart upload).
            handle, target = self.filesystem().open(path, "wb"), path
        else:
            folder = os.path.dirname(path)
            if folder not in self._swept_folders:
                os.makedirs(folder, exist_ok=True)
                remove_abandoned_writes(folder)
                self._swept_folders.add(folder)
            handle, target = _locked_hidden_sibling(path)
        writer = None
        rows = 0
        try:
            writer = pq.ParquetWriter(handle, schema, **PARQUET_WRITE_OPTIONS)
            for group in row_groups(batches, ROW_GROUP_ROWS, ROW_GROUP_BYTES):
                writer.write_table(group, row_group_size=group.num_rows)
                rows += group.num_rows
                del group
                release_free_memory()
            writer.close()
            if not self.is_s3:
                handle.flush()
                os.replace(target, path)  # still locked: a sweep never takes a file that is being renamed
            handle.close()
        except BaseException:
            _abandon(writer, handle, target, on_s3=self.is_s3)
            raise
        return rows

    def read_schema(self, path: str) -> pa.Schema:
        with self.filesystem().open(path, "rb") as handle:
            return pq.read_schema(handle)

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        with self.filesystem().open(path, "rb") as handle:
            return pq.read_table(handle, columns=columns)

    def parquet_metadata(self, path: str) -> pq.FileMetaData:
        """The file's footer: row count, row groups, schema, statistics (reads only the footer)."""
        with self.filesystem().open(path, "rb") as handle:
            return pq.ParquetFile(handle).metadata

    def iter_parquet_batches(
        self, path: str, batch_size: int = 65536, columns: list[str] | None = None, use_threads: bool = True
    ) -> Iterator[pa.RecordBatch]:
        """The file's rows in batches; `use_threads=False` for small files (a shard), where decoding each
        column in its own thread costs more than it saves."""
        with self.filesystem().open(path, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(
                    batch_size=batch_size, columns=columns, use_threads=use_threads):
                yield batch
                del batch
                release_free_memory()

    def iter_files_batches(
        self, paths: Sequence[str], batch_size: int = 65536, readahead: int = 8, columns: list[str] | None = None,
        files_per_scan: int = 512,
    ) -> Iterator[pa.RecordBatch]:
        """The batches of several small Parquet files (a day's shards), in order, through Arrow's dataset
        scanner reading `readahead` files ahead: opening a 500-row file costs more than decoding it, so
        reading them one after another would dominate. Only `columns` are decoded when given (all when None).

        Memory holds `readahead` files, plus what a scan keeps of each file it has read (its footer, ~115 KB
        for an enriched shard) until the scan ends: so the files are scanned `files_per_scan` at a time, which
        caps that at ~60 MB however long the day (one scan over 2,000 shards kept +230 MB). Each new scan
        restarts the read-ahead; 512 files per scan costs ~5% against one scan, 128 ~8%."""
        if self.is_s3:
            filesystem, paths = pafs.PyFileSystem(pafs.FSSpecHandler(self.filesystem())), list(paths)
        else:
            filesystem, paths = pafs.LocalFileSystem(), [os.path.abspath(p) for p in paths]
        for start in range(0, len(paths), files_per_scan):
            dataset = ds.dataset(paths[start : start + files_per_scan], format="parquet", filesystem=filesystem)
            yield from dataset.to_batches(columns=columns, batch_size=batch_size, fragment_readahead=readahead)

    def list_files(self, folder: str, suffix: str = ".parquet") -> list[str]:
        """Visible files of a folder, sorted; hidden (`.`/`_`) files are in-progress writes."""
        try:  # one LIST request; a folder that was never written is not an error
            listed = self.filesystem().ls(folder, detail=False)
        except FileNotFoundError:
            return []
        # Named as path() names them (fs.ls makes a relative local folder absolute), so callers can compare.
        names = [p.rsplit("/", 1)[-1] for p in listed if p.endswith(suffix)]
        return sorted(f"{folder.rstrip('/')}/{n}" for n in names if not n.startswith((".", "_")))

    def remove(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        if paths:
            self.filesystem().rm(paths)

    def check_writable(self) -> None:
        """Write a tiny hidden object under the prefix and remove it; raises what the store answers if it cannot."""
        probe = self.path(f"_write_check_{uuid.uuid4().hex}")
        fs = self.filesystem()
        with fs.open(probe, "wb") as handle:
            handle.write(b"ok")
        fs.rm(probe)


def _libc_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> None:
    """Hand the memory freed so far back to the system: Arrow's pool and glibc's heaps otherwise keep the pages
    of every row group that passed through, and a process's resident size grows with the day, not the batch."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def row_groups(batches: Iterable[pa.RecordBatch | pa.Table], max_rows: int, max_bytes: int) -> Iterator[pa.Table]:
    """Regroup a stream of batches into tables of at most `max_rows` rows, cut early at `max_bytes`.

    Small inputs (a 500-row shard) are merged, large ones are sliced: a file's row groups have the size
    chosen for readers, not the size the data happened to arrive in. Holds at most one group in memory.
    """
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    for item in batches:
        for batch in item.to_batches() if isinstance(item, pa.Table) else [item]:
            while batch.num_rows:
                take = min(batch.num_rows, max_rows - rows)
                part = batch.slice(0, take)
                pending.append(part)
                rows += take
                size += part.nbytes
                batch = batch.slice(take)
                if rows >= max_rows or size >= max_bytes:
                    yield pa.Table.from_batches(pending)
                    pending, rows, size = [], 0, 0
    if pending:
        yield pa.Table.from_batches(pending)


def _abandon(writer: pq.ParquetWriter | None, handle, target: str, on_s3: bool) -> None:
    """Throw away a write that failed: abort the multipart upload, or delete the hidden local file."""
    try:
        if writer is not None and writer.is_open:
            writer.close()  # only writes the footer into our buffer; keeps its destructor from doing it later
    except Exception:
        pass
    try:
        if on_s3:
            handle.discard()  # aborts the multipart upload: nothing becomes visible
            handle.closed = True  # the upload is gone: its destructor must not try to flush it
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            handle.close()
    except Exception:
        pass  # an upload that cannot be aborted stays invisible; a bucket lifecycle rule reclaims its parts


# A local write happens in a hidden file `.<name>.<random>.tmp` that its writer holds an exclusive flock on
# until the file has its final name. A process killed with -9 cannot remove its file, but the kernel drops
# its lock: a hidden file whose lock can be taken belongs to no live writer, on this machine or another one
# sharing the folder (NFS locks), and the next write into the folder removes it.

def _locked_hidden_sibling(path: str):
    """A new hidden temporary file beside `path`, open for writing and locked: (file object, its path)."""
    folder, name = path.rsplit("/", 1)
    while True:
        target = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        handle = open(target, "xb")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(target).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle, target
        except (BlockingIOError, FileNotFoundError):
            pass  # a sweep took the file in the instant between creating and locking it: take another name
        handle.close()


def remove_abandoned_writes(folder: str) -> list[str]:
    """Remove the hidden temporary files of `folder` that no live writer holds; returns their names."""
    removed = []
    try:
        entries = [entry.name for entry in os.scandir(folder)]
    except FileNotFoundError:
        return removed
    for name in entries:
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        candidate = os.path.join(folder, name)
        try:
            with open(candidate, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its writer lives
                if os.stat(candidate).st_ino == os.fstat(handle.fileno()).st_ino:  # not renamed meanwhile
                    os.unlink(candidate)
                    removed.append(name)
        except (BlockingIOError, FileNotFoundError):
            continue
    return removed
