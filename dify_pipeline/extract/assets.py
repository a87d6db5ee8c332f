"""Step 1 — export one day of rows from the source database."""


import dagster as dg

from dify_pipeline.partitions import PIPELINE_TIMEZONE, daily_partitions, day_window
from dify_pipeline.resources.source_database import SourceDatabase
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.settings import PipelineSettings
from dify_pipeline.stages import day_file


EVERY_ROW_HAS_A_DAY = "every_source_row_has_a_day"


@dg.asset(
    partitions_def=daily_partitions, group_name="tickets", kinds={"sql", "parquet"},
    check_specs=[dg.AssetCheckSpec(
        EVERY_ROW_HAS_A_DAY, asset="raw_tickets", partitions_def=daily_partitions,
        description="No row of the source table lacks the timestamp that decides its day (such rows are never exported).",
    )],
)
def raw_tickets(
    context: dg.AssetExecutionContext,
    source_database: SourceDatabase,
    stage_storage: ObjectStorage,
    settings: PipelineSettings,
) -> dg.MaterializeResult:
    """The day's rows as they are in the source, streamed in batches, types kept."""
    window_start, window_end = day_window(context.partition_key)
    schema, batches = source_database.stream_day(settings.timestamp_column, window_start, window_end)
    path = day_file(stage_storage, "raw_tickets", context.partition_key)
    rows = stage_storage.write_parquet(path, schema, batches)
    context.log.info(f"exported {rows} rows created in [{window_start}, {window_end}) ({PIPELINE_TIMEZONE})")
    undated = source_database.rows_without_timestamp(settings.timestamp_column)
    if undated:
        context.log.warning(f"{undated} rows of {source_database.table} have no {settings.timestamp_column}: "
                            "they belong to no day and no run exports them")
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(rows),
            "dagster/row_count": dg.MetadataValue.int(rows),
            "window_start": window_start.isoformat(),
            "window_end": window_end.isoformat(),
            "source": f"{source_database.safe_url()} table {source_database.table}",
            "driver": source_database.export_driver(),
            "path": dg.MetadataValue.path(stage_storage.uri(path)),
            "source_rows_without_timestamp": dg.MetadataValue.int(undated),
        },
        check_results=[dg.AssetCheckResult(
            check_name=EVERY_ROW_HAS_A_DAY, passed=undated == 0, severity=dg.AssetCheckSeverity.WARN,
            metadata={"rows_without_timestamp": undated, "timestamp_column": settings.timestamp_column},
        )],
    )
