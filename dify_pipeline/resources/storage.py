"""Files on a local path or on S3 (and S3-compatible stores), through fsspec/s3fs."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

import dagster as dg
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

PARQUET_WRITE_OPTIONS = dict(compression="zstd", write_statistics=True)
ROW_GROUP_ROWS = 128 * 1024
DAY_FILE_NAME = "part-00000.parquet"  # one object per day: replaced atomically


class ObjectStorage(dg.ConfigurableResource):
    """A folder of Parquet files: `url` is a local path or `s3://bucket/prefix`.

    S3 credentials come from the standard AWS chain (environment variables, profiles, instance roles),
    never from this configuration.
    """

    url: str = Field(description="Local folder or s3://bucket/prefix.")
    s3_endpoint_url: str | None = Field(default=None, description="For S3-compatible stores (MinIO, moto...).")
    s3_region: str | None = Field(default=None, description="AWS region; the standard AWS_REGION when unset.")

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def filesystem(self) -> fsspec.AbstractFileSystem:
        if self.is_s3:
            client_kwargs = {"region_name": self.s3_region} if self.s3_region else {}
            return fsspec.filesystem(
                "s3",
                endpoint_url=self.s3_endpoint_url,
                client_kwargs=client_kwargs,
                # Path-style addressing works with every S3-compatible server, virtual-host style does not.
                config_kwargs={"s3": {"addressing_style": "path"}} if self.s3_endpoint_url else None,
                use_listings_cache=False,  # other processes write the same prefixes
                skip_instance_cache=True,
            )
        return fsspec.filesystem("file", auto_mkdir=True)

    def path(self, *parts: str) -> str:
        root = self.url[len("s3://") :] if self.is_s3 else self.url
        return "/".join([root.rstrip("/"), *parts])

    def uri(self, path: str) -> str:
        """How a user names `path` (a result of `path()`): with its s3:// scheme when on S3."""
        return f"s3://{path}" if self.is_s3 else path

    def write_parquet(self, path: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch | pa.Table]) -> int:
        """Write batches as one Parquet file that appears whole or not at all; returns rows written.

        On S3 an object becomes visible only when its (multipart) upload completes; locally we write a
        hidden temporary file and rename it, which is atomic on one filesystem.
        """
        fs = self.filesystem()
        target = path if self.is_s3 else _hidden_sibling(path)
        rows = 0
        try:
            with fs.open(target, "wb") as handle, pq.ParquetWriter(handle, schema, **PARQUET_WRITE_OPTIONS) as writer:
                for batch in batches:
                    if batch.num_rows:
                        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                        rows += batch.num_rows
        except BaseException:
            if not self.is_s3 and fs.exists(target):
                fs.rm(target)
            raise
        if not self.is_s3:
            fs.mv(target, path)
        return rows

    def read_schema(self, path: str) -> pa.Schema:
        with self.filesystem().open(path, "rb") as handle:
            return pq.read_schema(handle)

    def read_parquet(self, path: str) -> pa.Table:
        with self.filesystem().open(path, "rb") as handle:
            return pq.read_table(handle)

    def iter_parquet_batches(self, path: str, batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        with self.filesystem().open(path, "rb") as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_size)

    def list_files(self, folder: str, suffix: str = ".parquet") -> list[str]:
        """Visible files of a folder, sorted; hidden (`.`/`_`) files are in-progress writes."""
        fs = self.filesystem()
        if not fs.exists(folder):
            return []
        # Named as path() names them (fs.ls makes a relative local folder absolute), so callers can compare.
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False) if p.endswith(suffix)]
        return sorted(f"{folder.rstrip('/')}/{n}" for n in names if not n.startswith((".", "_")))

    def remove(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        if paths:
            self.filesystem().rm(paths)


def _hidden_sibling(path: str) -> str:
    folder, name = path.rsplit("/", 1)
    return f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
