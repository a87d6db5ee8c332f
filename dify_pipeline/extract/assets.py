"""Step 1 — export one day of rows from the source database."""


import dagster as dg

from dify_pipeline.chain import Chain
from dify_pipeline.partitions import day_window
from dify_pipeline.resources.source_database import SourceDatabase
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import day_file

EVERY_ROW_HAS_A_DAY = "every_source_row_has_a_day"


def build_raw_asset(chain: Chain) -> dg.AssetsDefinition:
    """`raw_<name>`: the day's rows of the contract's source table, as they are."""
    source = chain.contract.source

    @dg.asset(
        key=chain.key(chain.raw), partitions_def=chain.partitions, group_name=chain.group, kinds={"sql", "parquet"},
        required_resource_keys={chain.source_resource, "stage_storage"},
        description=f"The day's rows of `{source.table}` as they are in the source, types kept.",
        check_specs=[dg.AssetCheckSpec(
            EVERY_ROW_HAS_A_DAY, asset=chain.key(chain.raw), partitions_def=chain.partitions,
            description="No row of the source table lacks the timestamp that decides its day (such rows are never "
                        "exported).",
        )],
    )
    def raw_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """The day's rows as they are in the source, streamed in batches, types kept."""
        database: SourceDatabase = getattr(context.resources, chain.source_resource)
        stage_storage: ObjectStorage = context.resources.stage_storage
        window_start, window_end = day_window(context.partition_key, chain.partitions.timezone)
        schema, batches = database.stream_day(source.timestamp_column, window_start, window_end)
        path = day_file(stage_storage, chain.raw, context.partition_key)
        rows = stage_storage.write_parquet(path, schema, batches)
        context.log.info(f"exported {rows} rows created in [{window_start}, {window_end}) "
                         f"({chain.partitions.timezone})")
        undated = database.rows_without_timestamp(source.timestamp_column)
        if undated:
            context.log.warning(f"{undated} rows of {database.table} have no {source.timestamp_column}: "
                                "they belong to no day and no run exports them")
        return dg.MaterializeResult(
            metadata={
                "rows": dg.MetadataValue.int(rows),
                "dagster/row_count": dg.MetadataValue.int(rows),
                "window_start": window_start.isoformat(),
                "window_end": window_end.isoformat(),
                "source": f"{database.safe_url()} table {database.table}",
                "driver": database.export_driver(),
                "path": dg.MetadataValue.path(stage_storage.uri(path)),
                "source_rows_without_timestamp": dg.MetadataValue.int(undated),
            },
            check_results=[dg.AssetCheckResult(
                check_name=EVERY_ROW_HAS_A_DAY, passed=undated == 0, severity=dg.AssetCheckSeverity.WARN,
                metadata={"rows_without_timestamp": undated, "timestamp_column": source.timestamp_column},
            )],
        )

    return raw_asset
