"""Step 2 — normalize, de-duplicate and mask the day; quarantine what cannot be used."""


import dagster as dg
import pyarrow as pa

from dify_pipeline.clean.cleaning import CleaningConfig, clean_tickets as clean_frame
from dify_pipeline.clean.outgoing_check import OutgoingScan
from dify_pipeline.frames import to_arrow, to_pandas
from dify_pipeline.partitions import daily_partitions
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import CLEAN_FIELDS, QUARANTINE_FIELDS, with_fields
from dify_pipeline.settings import PipelineSettings
from dify_pipeline.stages import day_file


@dg.asset(
    partitions_def=daily_partitions,
    group_name="tickets",
    deps=["raw_tickets"],
    kinds={"pandas", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("counts_reconcile", asset="clean_tickets", blocking=True, partitions_def=daily_partitions,
                          description="raw rows = clean + quarantined + duplicates removed"),
        dg.AssetCheckSpec("no_personal_data_outgoing", asset="clean_tickets", blocking=True,
                          partitions_def=daily_partitions,
                          description="An independent detector finds no e-mail, phone, ID or card number in the "
                                      "columns the Dify inputs are mapped from; any find stops the day here."),
    ],
)
def clean_tickets(
    context: dg.AssetExecutionContext, stage_storage: ObjectStorage, settings: PipelineSettings
) -> dg.MaterializeResult:
    """One row per record key, text normalized and PII-masked; unusable rows go to quarantine with a reason.

    Counts reconcile: raw rows = clean + quarantined + duplicates removed.
    """
    raw = stage_storage.read_parquet(day_file(stage_storage, "raw_tickets", context.partition_key))
    config = CleaningConfig(
        key_column=settings.key_column,
        updated_at_column=settings.updated_at_column,
        timestamp_column=settings.timestamp_column,
        text_columns=settings.text_columns,
        max_chars=settings.max_chars,
        extra_pii_patterns=settings.extra_pii_patterns,
    )
    result = clean_frame(to_pandas(raw), config)

    # Text columns are text from here on, whatever the source stored them as (BLOB, numbers...).
    source = pa.schema([pa.field(f.name, pa.string()) if f.name in settings.text_columns else f for f in raw.schema])
    clean_schema = with_fields(source, CLEAN_FIELDS)
    quarantine_schema = with_fields(_all_nullable(source), QUARANTINE_FIELDS)
    clean_path = day_file(stage_storage, "clean_tickets", context.partition_key)
    quarantine_path = day_file(stage_storage, "quarantined_tickets", context.partition_key)
    clean_table = to_arrow(result.clean, clean_schema)
    stage_storage.write_parquet(clean_path, clean_schema, [clean_table])
    stage_storage.write_parquet(quarantine_path, quarantine_schema, [to_arrow(result.quarantine, quarantine_schema)])

    if result.quarantine_reasons:
        context.log.warning(f"quarantined {len(result.quarantine)} rows: {result.quarantine_reasons}")
    # Defence in depth: what is about to be sent, read with different code from the masker's.
    outgoing = OutgoingScan([column for column in dict.fromkeys(settings.input_mapping.values())
                             if column in clean_table.column_names])
    outgoing.add(clean_table)
    if not outgoing.passed:
        context.log.error(f"personal data in the outgoing columns, day stopped: {dict(outgoing.counts)}")
    accounted = len(result.clean) + len(result.quarantine) + result.duplicates_removed
    return dg.MaterializeResult(
        check_results=[dg.AssetCheckResult(
            check_name="counts_reconcile", passed=accounted == raw.num_rows,
            metadata={"raw_rows": raw.num_rows, "accounted_rows": accounted},
        ), dg.AssetCheckResult(
            check_name="no_personal_data_outgoing", passed=outgoing.passed,
            metadata={key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
                      for key, value in outgoing.metadata().items()},
        )],
        metadata={
            "raw_rows": raw.num_rows,
            "rows": len(result.clean),
            "dagster/row_count": len(result.clean),
            "quarantined": len(result.quarantine),
            "duplicates_removed": result.duplicates_removed,
            "quarantine_reasons": dg.MetadataValue.json(result.quarantine_reasons),
            "pii_masked": dg.MetadataValue.json(result.pii_masked),
            "truncated_rows": result.truncated,
            "path": dg.MetadataValue.path(stage_storage.uri(clean_path)),
            "quarantine_path": dg.MetadataValue.path(stage_storage.uri(quarantine_path)),
        }
    )


def _all_nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.with_nullable(True) for field in schema])
