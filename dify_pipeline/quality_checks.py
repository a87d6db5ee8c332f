"""Checks of the enriched day before anything is published: each is blocking, so a bad day stops here."""

from collections import Counter

import dagster as dg

from dify_pipeline.chain import Chain
from dify_pipeline.infer.key_digests import duplicate_keys
from dify_pipeline.infer.stats import labels_outside
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schemas import RECORD_KEY
from dify_pipeline.stages import day_file, day_folder


def build_enriched_day_checks(chain: Chain) -> dg.AssetChecksDefinition:
    """The blocking checks of `enriched_<name>`: reconciled with the clean day, unique keys, allowed labels."""
    enriched = chain.key(chain.enriched)
    allowed = chain.contract.label_values()

    @dg.multi_asset_check(
        name=chain.op_name(f"{chain.enriched}_day_checks"),
        specs=[
            dg.AssetCheckSpec("enriched_reconciles_with_clean", asset=enriched, partitions_def=chain.partitions,
                              additional_deps=[chain.key(chain.clean)], blocking=True,
                              description="One enriched row per clean record: none lost, none added."),
            dg.AssetCheckSpec("unique_record_keys", asset=enriched, blocking=True,
                              partitions_def=chain.partitions, description="No record key appears twice in the day."),
            dg.AssetCheckSpec("categories_allowed", asset=enriched, blocking=True, partitions_def=chain.partitions,
                              description="Every label output's value is one of those the contract allows."),
        ],
    )
    def enriched_day_checks(context: dg.AssetCheckExecutionContext, stage_storage: ObjectStorage):
        """Read back what the enriched step wrote (keys and labels only, a shard at a time: the day is never held)
        and compare it with the clean day."""
        day = context.partition_key
        shards = stage_storage.list_files(day_folder(stage_storage, chain.enriched, day))
        clean_rows = stage_storage.parquet_metadata(day_file(stage_storage, chain.clean, day)).num_rows
        rows = sum(stage_storage.parquet_metadata(path).num_rows for path in shards)
        duplicates = duplicate_keys(lambda: (stage_storage.read_parquet(path, columns=[RECORD_KEY]).column(RECORD_KEY)
                                             for path in shards), rows)
        outside = {name: Counter() for name in allowed}
        if allowed:
            for path in shards:
                found = labels_outside(stage_storage.read_parquet(path, columns=list(allowed)), allowed)
                for name in allowed:
                    outside[name].update(found[name])
        rows_outside = sum(sum(counts.values()) for counts in outside.values())

        yield dg.AssetCheckResult(check_name="enriched_reconciles_with_clean", passed=rows == clean_rows,
                                  metadata={"enriched_rows": rows, "clean_rows": clean_rows})
        yield dg.AssetCheckResult(check_name="unique_record_keys", passed=duplicates == 0,
                                  metadata={"duplicate_keys": duplicates})
        yield dg.AssetCheckResult(check_name="categories_allowed", passed=rows_outside == 0, metadata={
            "rows_outside": rows_outside,
            "labels_outside": dg.MetadataValue.json({name: dict(counts.most_common(20))
                                                     for name, counts in outside.items()}),
        })

    return enriched_day_checks
