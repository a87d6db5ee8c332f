"""Step 5a — publish the enriched day as Parquet under <OUTPUT_PARQUET_URL>/<parquet_prefix>/dt=YYYY-MM-DD/."""


import dagster as dg

from dify_pipeline.chain import Chain
from dify_pipeline.funnel import funnel_table, recorded_counts
from dify_pipeline.resources.storage import DAY_FILE_NAME, PARQUET_WRITE_OPTIONS, ObjectStorage
from dify_pipeline.schemas import conform, published_schema
from dify_pipeline.stages import day_folder


def build_parquet_asset(chain: Chain) -> dg.AssetsDefinition:
    """`<name>_parquet`: the enriched day under OUTPUT_PARQUET_URL/<sinks.parquet_prefix>/dt=YYYY-MM-DD/."""

    @dg.asset(key=chain.key(chain.parquet), partitions_def=chain.partitions, group_name=chain.group,
              deps=[chain.key(chain.enriched)], kinds={"s3", "parquet"})
    def parquet_asset(
        context: dg.AssetExecutionContext, stage_storage: ObjectStorage, parquet_output: ObjectStorage
    ) -> dg.MaterializeResult:
        """One Parquet object per day, replaced whole on a re-run.

        The day is streamed into a single object under its final name: S3 shows an object only once its
        multipart upload completes (locally: write hidden, then rename), so readers see the previous day or
        the new one, never a mix, a half-written file or an empty folder. A write that fails half-way is
        aborted and leaves the previous day as it was. Other files in the day's folder (nothing this
        package writes) are removed after the switch.
        """
        return _publish_day(context, chain, stage_storage, parquet_output)

    return parquet_asset


def _publish_day(context: dg.AssetExecutionContext, chain: Chain, stage_storage: ObjectStorage,
                 parquet_output: ObjectStorage) -> dg.MaterializeResult:
    day = context.partition_key
    shard_paths = stage_storage.list_files(day_folder(stage_storage, chain.enriched, day))
    if not shard_paths:
        raise dg.Failure(f"no enriched data for {day}: materialize {chain.enriched} first")
    schema = published_schema(stage_storage.read_schema(shard_paths[0]), chain.contract.outputs)
    folder = parquet_output.path(*chain.parquet_path(f"dt={day}"))
    path = f"{folder}/{DAY_FILE_NAME}"

    # Not the stage-only columns; 128 files a scan keeps the footers a scan holds to ~15 MB, whatever the day.
    shards = stage_storage.iter_files_batches(shard_paths, columns=schema.names, files_per_scan=128)
    batches = (conform(batch, schema) for batch in shards)
    rows = parquet_output.write_parquet(path, schema, batches)
    footer = parquet_output.parquet_metadata(path)
    if footer.num_rows != rows:  # someone else replaced the day meanwhile: say so rather than report our numbers
        raise dg.Failure(f"{parquet_output.uri(path)} holds {footer.num_rows} rows after writing {rows}")
    stale = [p for p in parquet_output.list_files(folder) if p.rsplit("/", 1)[-1] != DAY_FILE_NAME]
    parquet_output.remove(stale)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "dagster/row_count": rows,
            "funnel": funnel_table(recorded_counts(context.instance, day, chain.name, chain.contract.key_prefix),
                                   published=rows, name=chain.name),
            "row_groups": footer.num_row_groups,
            "bytes": parquet_output.filesystem().size(path),
            "compression": PARQUET_WRITE_OPTIONS["compression"],
            "path": dg.MetadataValue.path(parquet_output.uri(path)),
            "dataset": dg.MetadataValue.path(parquet_output.uri(parquet_output.path(*chain.parquet_path()))),
            "stale_files_removed": len(stale),
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(field.name, str(field.type)) for field in schema]
            ),
        }
    )
