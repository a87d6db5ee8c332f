"""Step 3 — cut the day into bounded shards: the unit of parallel work and of output files."""

import os
import tempfile

import dagster as dg
import numpy as np
import pyarrow as pa

from dify_pipeline.chain import Chain
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import RECORD_KEY, SHARD_FIELD
from dify_pipeline.shard.sharding import key_hashes, shards_of_hashes
from dify_pipeline.stages import day_file, day_folder, shard_file

BATCH_ROWS = 16_384
# Rows of consecutive shards put together on local disk, then read back whole, sorted and written as shards:
# memory holds one such group (and a hash and a shard number per row of the day), whatever the day's size.
GROUP_ROWS = 32_768
_SPILL_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def build_shards_asset(chain: Chain) -> dg.AssetsDefinition:
    """`<record>_shards`: the clean day cut into bounded shards."""
    max_shard_rows = chain.contract.cleaning.max_shard_rows

    @dg.asset(key=chain.key(chain.shards), partitions_def=chain.partitions, group_name=chain.group,
              deps=[chain.key(chain.clean)], kinds={"parquet"})
    def shards_asset(context: dg.AssetExecutionContext, stage_storage: ObjectStorage) -> dg.MaterializeResult:
        """The clean day split by key hash into shards of at most `max_shard_rows` rows (one empty shard for an
        empty day), each sorted by record key; shards of an earlier, larger version of the day are removed."""
        return _shard_day(context, stage_storage, chain, max_shard_rows)

    return shards_asset


def _shard_day(context: dg.AssetExecutionContext, stage_storage: ObjectStorage, chain: Chain,
               max_shard_rows: int) -> dg.MaterializeResult:
    """Streamed: the record keys decide each row's shard, then the day is read once more a batch at a time and
    each row put into the group of shards it belongs to (local files), and each group becomes its shards."""
    day = context.partition_key
    clean_path = day_file(stage_storage, chain.clean, day)
    schema = stage_storage.read_schema(clean_path).append(SHARD_FIELD)
    shards = _shard_numbers(stage_storage, clean_path, max_shard_rows)
    # An empty day is one empty shard: the steps after it see a day that was written and is empty, which an
    # empty folder (a day never sharded) is not, and publish it as such.
    sizes = np.bincount(shards).tolist() if len(shards) else [0]
    shards_per_group = max(1, GROUP_ROWS // max_shard_rows)

    written = []
    with tempfile.TemporaryDirectory(prefix=f"{chain.shards}-") as spill:
        groups = _spill_by_group(stage_storage, clean_path, shards, shards_per_group, schema, spill)
        for group in range(-(-len(sizes) // shards_per_group)):
            table = _read_group(groups.get(group), schema).sort_by([(SHARD_FIELD.name, "ascending"),
                                                                    (RECORD_KEY, "ascending")])
            offset = 0
            for shard in range(group * shards_per_group, min((group + 1) * shards_per_group, len(sizes))):
                path = shard_file(stage_storage, chain.shards, day, shard)
                stage_storage.write_parquet(path, schema, [table.slice(offset, sizes[shard])])
                written.append(path)
                offset += sizes[shard]
            del table
    folder = day_folder(stage_storage, chain.shards, day)
    stage_storage.remove(p for p in stage_storage.list_files(folder) if p not in written)  # a smaller day than before

    return dg.MaterializeResult(
        metadata={
            "rows": len(shards),
            "dagster/row_count": len(shards),
            "shards": len(sizes),
            "largest_shard_rows": max(sizes, default=0),
            "max_shard_rows": max_shard_rows,
            "path": dg.MetadataValue.path(stage_storage.uri(folder)),
        }
    )


def _shard_numbers(storage: ObjectStorage, path: str, max_shard_rows: int) -> np.ndarray:
    """Each clean row's shard, in the file's order, from its record key alone."""
    keys = [batch.column(0) for batch in storage.iter_parquet_batches(path, BATCH_ROWS, columns=[RECORD_KEY])]
    keys = pa.chunked_array(keys, pa.string())
    hashes = np.concatenate([key_hashes(chunk.to_pylist()) for chunk in keys.chunks] or [np.zeros(0, np.uint64)])
    return shards_of_hashes(hashes, lambda positions: keys.take(pa.array(positions)).to_pylist(), max_shard_rows)


def _spill_by_group(
    storage: ObjectStorage, path: str, shards: np.ndarray, shards_per_group: int, schema: pa.Schema, folder: str
) -> dict[int, str]:
    """The clean day with its shard column, row by row into one local file per group of shards."""
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    paths: dict[int, str] = {}
    offset = 0
    try:
        for batch in storage.iter_parquet_batches(path, BATCH_ROWS):
            numbers = shards[offset : offset + batch.num_rows]
            offset += batch.num_rows
            batch = pa.RecordBatch.from_arrays([*batch.columns, pa.array(numbers, pa.int32())], schema=schema)
            group_of_row = numbers // shards_per_group
            order = np.argsort(group_of_row, kind="stable")
            batch, group_of_row = batch.take(pa.array(order)), group_of_row[order]
            starts = np.flatnonzero(np.diff(group_of_row, prepend=-1))
            for start, end in zip(starts, [*starts[1:], len(group_of_row)]):
                group = int(group_of_row[start])
                if group not in writers:
                    paths[group] = os.path.join(folder, f"group-{group:05d}.arrow")
                    writers[group] = pa.ipc.new_file(paths[group], schema, options=_SPILL_OPTIONS)
                writers[group].write_batch(batch.slice(start, end - start))
    finally:
        for writer in writers.values():
            writer.close()
    if offset != len(shards):
        raise RuntimeError(f"{path} changed while it was sharded: {offset} rows read, {len(shards)} before")
    return paths


def _read_group(path: str | None, schema: pa.Schema) -> pa.Table:
    if path is None:
        return schema.empty_table()
    with pa.OSFile(path) as source:
        return pa.ipc.open_file(source).read_all()
