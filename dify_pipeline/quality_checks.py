"""Checks of the enriched day before anything is published: each is blocking, so a bad day stops here."""

from collections import Counter

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from dify_pipeline.partitions import daily_partitions
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import RECORD_KEY
from dify_pipeline.settings import PipelineSettings
from dify_pipeline.stages import day_file, day_folder


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("enriched_reconciles_with_clean", asset="enriched_tickets", partitions_def=daily_partitions,
                          additional_deps=["clean_tickets"], blocking=True,
                          description="One enriched row per clean record: none lost, none added."),
        dg.AssetCheckSpec("unique_record_keys", asset="enriched_tickets", blocking=True,
                          partitions_def=daily_partitions, description="No record key appears twice in the day."),
        dg.AssetCheckSpec("categories_allowed", asset="enriched_tickets", blocking=True,
                          partitions_def=daily_partitions, description="Every category is one of settings.categories."),
    ],
)
def enriched_day_checks(context: dg.AssetCheckExecutionContext, stage_storage: ObjectStorage, settings: PipelineSettings):
    """Read back what enriched_tickets wrote (keys and categories only) and compare it with the clean day."""
    day = context.partition_key
    shards = stage_storage.list_files(day_folder(stage_storage, "enriched_tickets", day))
    tables = [stage_storage.read_parquet(path, columns=[RECORD_KEY, "category"]) for path in shards]
    clean_rows = stage_storage.parquet_metadata(day_file(stage_storage, "clean_tickets", day)).num_rows
    keys = pa.chunked_array([table.column(RECORD_KEY) for table in tables], pa.string())
    duplicates = len(keys) - len(pc.unique(keys))
    allowed = set(settings.categories)
    outside = Counter(c for table in tables for c in table.column("category").to_pylist() if c is not None and c not in allowed)

    yield dg.AssetCheckResult(check_name="enriched_reconciles_with_clean", passed=len(keys) == clean_rows,
                              metadata={"enriched_rows": len(keys), "clean_rows": clean_rows})
    yield dg.AssetCheckResult(check_name="unique_record_keys", passed=duplicates == 0,
                              metadata={"duplicate_keys": duplicates})
    yield dg.AssetCheckResult(check_name="categories_allowed", passed=not outside,
                              metadata={"rows_outside": sum(outside.values()),
                                        "categories_outside": dg.MetadataValue.json(dict(outside.most_common(20)))})
