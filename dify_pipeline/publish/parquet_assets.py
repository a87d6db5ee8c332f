"""Step 5a — publish the enriched day as Parquet under <OUTPUT_PARQUET_URL>/dt=YYYY-MM-DD/."""


from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from dify_pipeline.partitions import daily_partitions
from dify_pipeline.resources.storage import DAY_FILE_NAME, ObjectStorage
from dify_pipeline.stages import day_folder


@dg.asset(partitions_def=daily_partitions, group_name="tickets", deps=["enriched_tickets"], kinds={"s3", "parquet"})
def tickets_parquet(
    context: dg.AssetExecutionContext, stage_storage: ObjectStorage, parquet_output: ObjectStorage
) -> dg.MaterializeResult:
    """One Parquet file per day, replaced whole on a re-run.

    The day is a single object written under its final name: S3 shows an object only once its upload
    completes (locally: write hidden, then rename), so readers see the previous day or the new one,
    never a mix, a half-written file or an empty folder. Files of an older layout are removed after.
    """
    shard_paths = stage_storage.list_files(day_folder(stage_storage, "enriched_tickets", context.partition_key))
    if not shard_paths:
        raise dg.Failure(f"no enriched data for {context.partition_key}: materialize enriched_tickets first")
    schema = _common_schema(stage_storage, shard_paths)
    folder = parquet_output.path(f"dt={context.partition_key}")
    path = f"{folder}/{DAY_FILE_NAME}"

    def batches() -> Iterator[pa.RecordBatch]:
        for shard_path in shard_paths:
            for batch in stage_storage.iter_parquet_batches(shard_path):
                yield batch.drop_columns(["shard"])

    rows = parquet_output.write_parquet(path, schema, batches())
    stale = [p for p in parquet_output.list_files(folder) if p.rsplit("/", 1)[-1] != DAY_FILE_NAME]
    parquet_output.remove(stale)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "path": dg.MetadataValue.path(parquet_output.uri(path)),
            "dataset": dg.MetadataValue.path(parquet_output.uri(parquet_output.path())),
            "stale_files_removed": len(stale),
        }
    )


def _common_schema(storage: ObjectStorage, paths: list[str]) -> pa.Schema:
    """The published schema: the enriched shards' schema without the internal shard number."""
    return pa.schema([f for f in storage.read_schema(paths[0]) if f.name != "shard"])
