"""Step 2 — normalize, de-duplicate and mask the day; quarantine what cannot be used."""

import tempfile
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from dify_pipeline.chain import Chain
from dify_pipeline.clean.cleaning import ChunkCleaner, CleaningConfig, check_columns, plan_day
from dify_pipeline.clean.outgoing_check import OutgoingScan
from dify_pipeline.contract import EnrichmentContract
from dify_pipeline.frames import to_arrow, to_pandas
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import CLEAN_FIELDS, QUARANTINE_FIELDS, with_fields
from dify_pipeline.stages import day_file

# Rows read (keys to plan, then whole rows to clean) at a time: memory holds one batch, the row group being
# written and the day's plan, one byte of flags per row (a key and an update time per row while planning).
BATCH_ROWS = 16_384


def build_clean_assets(chain: Chain) -> dg.AssetsDefinition:
    """`clean_<name>` and `quarantined_<name>` from `raw_<name>`, with their checks."""
    clean_key, quarantined_key, raw_key = chain.key(chain.clean), chain.key(chain.quarantined), chain.key(chain.raw)

    @dg.multi_asset(
        name=chain.op_name(chain.clean),
        partitions_def=chain.partitions,
        group_name=chain.group,
        specs=[
            dg.AssetSpec(clean_key, deps=[raw_key], kinds={"pandas", "parquet"},
                         description="One row per record key, text normalized and PII-masked."),
            dg.AssetSpec(quarantined_key, deps=[raw_key], kinds={"parquet"},
                         description="The day's rows that cannot be used (no key, no valid timestamp, no text), "
                                     "text PII-masked, each with its reason code and a detail."),
        ],
        check_specs=[
            dg.AssetCheckSpec("counts_reconcile", asset=clean_key, blocking=True, partitions_def=chain.partitions,
                              description="raw rows = clean + quarantined + duplicates removed"),
            dg.AssetCheckSpec("no_personal_data_outgoing", asset=clean_key, blocking=True,
                              partitions_def=chain.partitions,
                              description="An independent detector finds no e-mail, phone, ID or card number in the "
                                          "columns the Dify inputs are mapped from; any find stops the day here."),
        ],
    )
    def clean_asset(context: dg.AssetExecutionContext, stage_storage: ObjectStorage) -> Iterator[dg.MaterializeResult]:
        """One row per record key, text normalized and PII-masked; unusable rows go to the quarantine with a
        reason. Counts reconcile: raw rows = clean + quarantined + duplicates removed."""
        yield from _clean_day(context, stage_storage, chain, clean_key, quarantined_key)

    return clean_asset


def sent_columns(contract: EnrichmentContract) -> list[str]:
    """The columns whose values leave for Dify: the mapped inputs, and a chat app's query."""
    return [*contract.app.inputs.values(), *([contract.app.query] if contract.app.query else [])]


def cleaning_config(contract: EnrichmentContract) -> CleaningConfig:
    """The cleaning rules of a contract: its source columns and its cleaning section."""
    source = contract.source
    return CleaningConfig(
        key_column=source.key_column,
        timestamp_column=source.timestamp_column,
        text_columns=source.text_columns,
        max_chars=contract.cleaning.max_chars,
        extra_pii_patterns=contract.cleaning.extra_pii_patterns,
        **({"updated_at_column": source.updated_at_column} if source.updated_at_column else {}),
    )


def _clean_day(context: dg.AssetExecutionContext, stage_storage: ObjectStorage, chain: Chain,
               clean_key: dg.AssetKey, quarantined_key: dg.AssetKey) -> Iterator[dg.MaterializeResult]:
    """Streamed: the key and timestamp columns plan the day (which row stands for each key), then the day is
    cleaned one record batch at a time; the clean day keeps the export's row order."""
    contract = chain.contract
    raw_path = day_file(stage_storage, chain.raw, context.partition_key)
    config = cleaning_config(contract)
    raw_schema = stage_storage.read_schema(raw_path)
    check_columns(raw_schema.names, config)
    key_columns = [config.key_column, config.timestamp_column, config.updated_at_column]
    key_batches = stage_storage.iter_parquet_batches(raw_path, BATCH_ROWS, columns=key_columns)
    plan = plan_day((to_pandas(pa.Table.from_batches([batch])) for batch in key_batches), config)

    # Text columns are text from here on, whatever the source stored them as (BLOB, numbers...).
    source = pa.schema([pa.field(f.name, pa.string()) if f.name in config.text_columns else f for f in raw_schema])
    clean_schema = with_fields(source, CLEAN_FIELDS)
    quarantine_schema = with_fields(_all_nullable(source), QUARANTINE_FIELDS)
    clean_path = day_file(stage_storage, chain.clean, context.partition_key)
    quarantine_path = day_file(stage_storage, chain.quarantined, context.partition_key)
    cleaner = ChunkCleaner(config, plan)
    # Defence in depth: what is about to be sent, read with different code from the masker's.
    outgoing = OutgoingScan([column for column in dict.fromkeys(sent_columns(contract))
                             if column in clean_schema.names])

    with tempfile.TemporaryFile() as spill:  # the quarantine of the pass, written after it (usually a few rows)
        with pa.ipc.new_stream(spill, quarantine_schema) as quarantined:

            def clean_batches() -> Iterator[pa.Table]:
                for batch in stage_storage.iter_parquet_batches(raw_path, BATCH_ROWS):
                    clean, quarantine = cleaner.clean(to_pandas(pa.Table.from_batches([batch])))
                    quarantined.write_table(to_arrow(quarantine, quarantine_schema))
                    clean_table = to_arrow(clean, clean_schema)
                    outgoing.add(clean_table)
                    yield clean_table

            stage_storage.write_parquet(clean_path, clean_schema, clean_batches())
        counts = cleaner.result_counts()  # every row cleaned, none lost (raises otherwise)
        spill.seek(0)
        stage_storage.write_parquet(quarantine_path, quarantine_schema, pa.ipc.open_stream(spill))

    if counts["quarantine_reasons"]:
        context.log.warning(f"quarantined {cleaner.quarantined_rows} rows: {counts['quarantine_reasons']}")
    if not outgoing.passed:
        context.log.error(f"personal data in the outgoing columns, day stopped: {dict(outgoing.counts)}")
    accounted = cleaner.clean_rows + cleaner.quarantined_rows + counts["duplicates_removed"]
    yield dg.MaterializeResult(
        asset_key=clean_key,
        check_results=[dg.AssetCheckResult(
            asset_key=clean_key, check_name="counts_reconcile", passed=accounted == plan.rows,
            metadata={"raw_rows": plan.rows, "accounted_rows": accounted},
        ), dg.AssetCheckResult(
            asset_key=clean_key, check_name="no_personal_data_outgoing", passed=outgoing.passed,
            metadata={key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
                      for key, value in outgoing.metadata().items()},
        )],
        metadata={
            "raw_rows": plan.rows,
            "rows": cleaner.clean_rows,
            "dagster/row_count": cleaner.clean_rows,
            "quarantined": cleaner.quarantined_rows,
            "duplicates_removed": counts["duplicates_removed"],
            "quarantine_reasons": dg.MetadataValue.json(counts["quarantine_reasons"]),
            "pii_masked": dg.MetadataValue.json(counts["pii_masked"]),
            "truncated_rows": counts["truncated"],
            "path": dg.MetadataValue.path(stage_storage.uri(clean_path)),
            "quarantine_path": dg.MetadataValue.path(stage_storage.uri(quarantine_path)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=quarantined_key,
        metadata={
            "rows": cleaner.quarantined_rows,
            "dagster/row_count": cleaner.quarantined_rows,
            "raw_rows": plan.rows,
            "quarantine_reasons": dg.MetadataValue.json(counts["quarantine_reasons"]),
            "path": dg.MetadataValue.path(stage_storage.uri(quarantine_path)),
        },
    )


def _all_nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.with_nullable(True) for field in schema])
