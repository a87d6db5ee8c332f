"""Step 5b — index the enriched day into the search cluster, one document per record key."""


from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from dify_pipeline.chain import Chain
from dify_pipeline.publish.documents import MAPPING_VERSION, batch_documents, day_query, index_mapping, stale_query
from dify_pipeline.resources.search import BulkOutcome, DayLease, LeaseUnavailable, SearchCluster, SearchClusterError
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.stages import day_folder


def day_lease(context, cluster: SearchCluster, sink, step: str) -> DayLease:
    """The day's lease for `step`, held by this run; a run that waits for it says so."""
    day = context.partition_key
    return DayLease(
        sink, f"{step}:{day}", holder=context.run.run_id, seconds=cluster.lease_seconds,
        wait_seconds=cluster.lease_wait_seconds,
        on_wait=lambda holder: context.log.info(f"waiting for run {holder}, which is publishing {day} now"),
    )


def build_elasticsearch_asset(chain: Chain) -> dg.AssetsDefinition:
    """`<name>_elasticsearch`: the enriched day in the search cluster, under the contract's alias."""
    text_columns = chain.contract.source.text_columns

    @dg.asset(key=chain.key(chain.elasticsearch), partitions_def=chain.partitions, group_name=chain.group,
              deps=[chain.key(chain.enriched)], kinds={"elasticsearch", "opensearch"})
    def elasticsearch_asset(
        context: dg.AssetExecutionContext, elasticsearch: SearchCluster, stage_storage: ObjectStorage
    ) -> dg.MaterializeResult:
        """Bulk-index the day with `_id` = record key, then delete the day's documents this load did not write.

        One run at a time publishes a day: the step holds the day's lease in the cluster from reading the stage to
        the last deletion, and another run's step waits for it. So after a complete load the index holds exactly
        the day's current records, whatever ran at the same time. Documents the cluster refuses for their
        content (a mapping error) are counted by error type in the metadata and fail the day's count check; the
        others load. If the cluster stays unavailable beyond the retries, the step fails and keeps the day's
        previous documents (no deletion after an incomplete load).
        """
        day = context.partition_key
        load_id = context.run.run_id
        cluster = chain.search(elasticsearch)
        try:
            with cluster.connect() as sink, day_lease(context, cluster, sink, chain.elasticsearch) as lease:
                return _load_day(context, sink, lease, stage_storage, chain, text_columns, day, load_id)
        except (SearchClusterError, LeaseUnavailable) as error:
            raise dg.Failure(description=str(error)) from None

    return elasticsearch_asset


def _load_day(context, sink, lease: DayLease, stage_storage: ObjectStorage, chain: Chain, text_columns: list[str],
              day: str, load_id: str) -> dg.MaterializeResult:
    # Read inside the lease: the last run to hold it publishes the stage as it is after every earlier write.
    shard_paths = stage_storage.list_files(day_folder(stage_storage, chain.enriched, day))
    if not shard_paths:
        raise dg.Failure(f"no enriched data for {day}: materialize {chain.enriched} first")
    schema = stage_storage.read_schema(shard_paths[0])
    timestamp_columns = [f.name for f in schema if pa.types.is_timestamp(f.type) and f.name != "enriched_at"]
    mapping = index_mapping(text_columns, timestamp_columns, chain.contract.outputs)
    mapped_fields = set(mapping["properties"])

    physical = sink.ensure_index(mapping, MAPPING_VERSION)
    sink.refresh(physical)
    before = sink.count(physical, day_query(day))

    def documents_of(shard_path: str) -> Iterator[dict]:
        for batch in stage_storage.iter_parquet_batches(shard_path, sink.bulk_settings.chunk_size, use_threads=False):
            yield from batch_documents(batch, day, load_id, mapped_fields, physical)

    outcome = sink.bulk_index(shard_paths, documents_of, stop=lease.lost)
    metadata = _load_metadata(outcome, sink, physical)
    if not outcome.complete:
        raise dg.Failure(
            description=f"the load of {day} into {physical} is incomplete "
            f"({sum(outcome.unavailable.values())} documents not accepted after retries"
            f"{'; ' + outcome.error if outcome.error else ''}); the day's previous documents are kept: re-run it",
            metadata=metadata,
        )
    lease.confirm()  # still this run's day: what the deletion removes no other run can have written
    sink.refresh(physical)
    stale_deleted = sink.delete_matching(physical, stale_query(day, load_id))
    count = sink.count(physical, day_query(day))
    alias_targets = sink.alias_targets()

    if outcome.rejected:
        context.log.error(
            f"the cluster rejected {sum(outcome.rejected.values())} documents of {day}: {dict(outcome.rejected)}; "
            f"e.g. {outcome.samples[:2]}"
        )
    if count != outcome.indexed:
        raise dg.Failure(description=f"{physical} holds {count} documents of {day} after this load indexed "
                         f"{outcome.indexed}: something else writes the day; re-run it", metadata=metadata)
    if alias_targets != [physical]:
        context.log.warning(
            f"the alias {sink.alias} points at {alias_targets}, not at {physical} that this load wrote: "
            "readers see the new data after SearchSink.swap_alias (see README)"
        )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "documents_before": int(before),
            "stale_deleted": int(stale_deleted),
            "documents_for_day": int(count),
            "alias_targets": dg.MetadataValue.json(alias_targets),
            "cluster": f"{sink.cluster.engine} {sink.cluster.version}",
        }
    )


def _load_metadata(outcome: BulkOutcome, sink, physical: str) -> dict:
    return {
        "rows": outcome.indexed,
        "dagster/row_count": outcome.indexed,
        "rejected": sum(outcome.rejected.values()),
        "rejected_by_type": dg.MetadataValue.json(dict(outcome.rejected)),
        "not_accepted_after_retries": sum(outcome.unavailable.values()),
        "failure_samples": dg.MetadataValue.json(outcome.samples),
        "stopped_by": outcome.error or "",
        "index": sink.alias,
        "physical_index": physical,
        "parallel_requests": sink.bulk_settings.parallel_requests,
        "seconds": round(outcome.seconds, 3),
        "documents_per_second": round(outcome.sent / outcome.seconds, 1) if outcome.seconds else 0.0,
    }
