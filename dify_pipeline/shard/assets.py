"""Step 3 — cut the day into bounded shards: the unit of parallel work and of output files."""


import dagster as dg
import numpy as np
import pyarrow as pa

from dify_pipeline.partitions import daily_partitions
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import RECORD_KEY, SHARD_FIELD
from dify_pipeline.settings import PipelineSettings
from dify_pipeline.shard.sharding import assign_shards
from dify_pipeline.stages import day_file, day_folder, shard_file


@dg.asset(partitions_def=daily_partitions, group_name="tickets", deps=["clean_tickets"], kinds={"parquet"})
def ticket_shards(
    context: dg.AssetExecutionContext, stage_storage: ObjectStorage, settings: PipelineSettings
) -> dg.MaterializeResult:
    """The clean day split by key hash into shards of at most `max_shard_rows` rows (one empty shard for an
    empty day); shards of an earlier, larger version of the day are removed."""
    clean = stage_storage.read_parquet(day_file(stage_storage, "clean_tickets", context.partition_key))
    shards = assign_shards(clean.column(RECORD_KEY).to_pylist(), settings.max_shard_rows)
    order = np.argsort(shards, kind="stable")
    table = clean.append_column(SHARD_FIELD, pa.array(shards, pa.int32())).take(order)
    # An empty day is one empty shard: the steps after it see a day that was written and is empty, which an
    # empty folder (a day never sharded) is not, and publish it as such.
    sizes = np.bincount(shards).tolist() if len(shards) else [0]

    written, offset = [], 0
    for shard, size in enumerate(sizes):
        path = shard_file(stage_storage, "ticket_shards", context.partition_key, shard)
        stage_storage.write_parquet(path, table.schema, [table.slice(offset, size)])
        written.append(path)
        offset += size
    folder = day_folder(stage_storage, "ticket_shards", context.partition_key)
    stage_storage.remove(p for p in stage_storage.list_files(folder) if p not in written)  # a smaller day than before

    return dg.MaterializeResult(
        metadata={
            "rows": clean.num_rows,
            "dagster/row_count": clean.num_rows,
            "shards": len(sizes),
            "largest_shard_rows": max(sizes, default=0),
            "max_shard_rows": settings.max_shard_rows,
            "path": dg.MetadataValue.path(stage_storage.uri(folder)),
        }
    )
