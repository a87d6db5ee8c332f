"""Checks that read what was published, independently of the steps that published it, and whether it was.

The count checks are blocking: a day whose published outputs do not match its records fails its run, in red,
instead of passing with a warning nobody reads. The freshness check fails when yesterday is not published by
PUBLISHED_BY_HOUR, whatever the reason (a blocked day, a failed or missing run, the schedule off).
"""

import warnings
from collections.abc import Sequence

import dagster as dg

from dify_pipeline.chain import Chain
from dify_pipeline.infer.key_digests import duplicate_keys
from dify_pipeline.publish.documents import MAPPING_VERSION, day_query
from dify_pipeline.publish.elasticsearch_assets import day_lease
from dify_pipeline.resources.search import LeaseUnavailable, SearchCluster, SearchClusterError
from dify_pipeline.resources.storage import DAY_FILE_NAME, ObjectStorage
from dify_pipeline.stages import day_folder


def build_publish_checks(chain: Chain) -> list[dg.AssetChecksDefinition]:
    """`parquet_matches_enriched` on `<name>_parquet` and `elasticsearch_matches_parquet` on `<name>_elasticsearch`."""

    def published_path(parquet_output: ObjectStorage, day: str) -> str:
        return parquet_output.path(*chain.parquet_path(f"dt={day}", DAY_FILE_NAME))

    @dg.asset_check(asset=chain.key(chain.parquet), blocking=True, partitions_def=chain.partitions,
                    name="parquet_matches_enriched", description="One row per enriched record, no duplicate keys.")
    def parquet_matches_enriched(
        context: dg.AssetCheckExecutionContext, stage_storage: ObjectStorage, parquet_output: ObjectStorage
    ) -> dg.AssetCheckResult:
        day = context.partition_key
        path = published_path(parquet_output, day)
        rows = parquet_output.parquet_metadata(path).num_rows
        enriched = sum(
            stage_storage.parquet_metadata(p).num_rows
            for p in stage_storage.list_files(day_folder(stage_storage, chain.enriched, day))
        )
        duplicates = duplicate_keys(
            lambda: (batch.column(0) for batch in parquet_output.iter_parquet_batches(path, columns=["record_key"])),
            rows)
        return dg.AssetCheckResult(
            passed=rows == enriched and duplicates == 0,
            metadata={"parquet_rows": rows, "enriched_rows": enriched, "duplicate_keys": duplicates},
        )

    @dg.asset_check(asset=chain.key(chain.elasticsearch), additional_deps=[chain.key(chain.parquet)], blocking=True,
                    partitions_def=chain.partitions, name="elasticsearch_matches_parquet",
                    description="The day's document count in the search index equals its Parquet row count.")
    def elasticsearch_matches_parquet(
        context: dg.AssetCheckExecutionContext, elasticsearch: SearchCluster, parquet_output: ObjectStorage
    ) -> dg.AssetCheckResult:
        day = context.partition_key
        rows = parquet_output.parquet_metadata(published_path(parquet_output, day)).num_rows  # footer only
        cluster = chain.search(elasticsearch)
        physical = cluster.physical_index(MAPPING_VERSION)  # the index the load wrote, even before an alias swap
        try:
            # Under the day's lease: never a count taken in the middle of another run's load of the day.
            with cluster.connect() as sink, day_lease(context, cluster, sink, chain.elasticsearch):
                sink.refresh(physical)
                documents, loads = sink.count_by(physical, day_query(day), "load_id")
        except (SearchClusterError, LeaseUnavailable) as error:
            raise dg.Failure(description=str(error)) from None
        return dg.AssetCheckResult(
            passed=documents == rows and len(loads) <= 1,  # more than one load: stale documents survived
            metadata={"documents": documents, "parquet_rows": rows, "missing": rows - documents,
                      "documents_by_load": dg.MetadataValue.json(loads), "index": physical},
        )

    return [parquet_matches_enriched, elasticsearch_matches_parquet]


def freshness_check_keys(chain: Chain) -> list[dg.AssetCheckKey]:
    """The `freshness_check` of each published asset of `chain`."""
    return [dg.AssetCheckKey(chain.key(asset), "freshness_check") for asset in (chain.parquet, chain.elasticsearch)]


def build_freshness_checks(
    published_by_hour: int, timezone: str,
    assets: Sequence[dg.AssetKey | str] = ("tickets_parquet", "tickets_elasticsearch"),
    sensor_name: str = "published_by_deadline",
) -> tuple[list, dg.SensorDefinition]:
    """`freshness_check` on each of `assets` (an enrichment's published ones), and the sensor that runs them (on by
    default: they cost nothing).

    From `published_by_hour`:00 in `timezone` on, the day before must be materialized; earlier, the day before
    that. Dagster's own factory, which it marks superseded by FreshnessPolicy; kept because a policy judges when
    the asset last materialized (any day: a backfill of last month would count as fresh), this check which day.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        checks = list(dg.build_time_partition_freshness_checks(
            assets=list(assets), deadline_cron=f"0 {published_by_hour} * * *", timezone=timezone))
        sensor = dg.build_sensor_for_freshness_checks(
            freshness_checks=checks, name=sensor_name, default_status=dg.DefaultSensorStatus.RUNNING)
    return checks, sensor


def build_chain_freshness_checks(chain: Chain, published_by_hour: int) -> tuple[list, dg.SensorDefinition]:
    """The freshness checks of an enrichment's published assets, and their sensor."""
    published = [chain.key(chain.parquet), chain.key(chain.elasticsearch)]
    return build_freshness_checks(published_by_hour, chain.partitions.timezone, published, chain.freshness_sensor_name)
