"""Step 5b — index the enriched day into Elasticsearch, one document per record key."""


from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from dify_pipeline.partitions import daily_partitions
from dify_pipeline.publish.documents import MAPPING_VERSION, batch_documents, day_query, index_mapping
from dify_pipeline.resources.elasticsearch import BulkOutcome, ElasticsearchResource
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.settings import PipelineSettings
from dify_pipeline.stages import day_folder


@dg.asset(partitions_def=daily_partitions, group_name="tickets", deps=["enriched_tickets"], kinds={"elasticsearch"})
def tickets_elasticsearch(
    context: dg.AssetExecutionContext,
    elasticsearch: ElasticsearchResource,
    stage_storage: ObjectStorage,
    settings: PipelineSettings,
) -> dg.MaterializeResult:
    """Bulk-index the day with `_id` = record key, then delete the day's documents this load did not write.

    After a complete load the index holds exactly the day's current records. Documents Elasticsearch
    refuses for their content (a mapping error) are counted by error type in the metadata and fail the
    day's count check; the others load. If the cluster stays unavailable beyond the retries, the step
    fails and keeps the day's previous documents (no deletion after an incomplete load).
    """
    day = context.partition_key
    shard_paths = stage_storage.list_files(day_folder(stage_storage, "enriched_tickets", day))
    if not shard_paths:
        raise dg.Failure(f"no enriched data for {day}: materialize enriched_tickets first")
    schema = stage_storage.read_schema(shard_paths[0])
    timestamp_columns = [f.name for f in schema if pa.types.is_timestamp(f.type) and f.name != "enriched_at"]
    mapping = index_mapping(settings.text_columns, timestamp_columns)
    mapped_fields = set(mapping["properties"])
    load_id = context.run.run_id

    client = elasticsearch.client()
    try:
        physical = elasticsearch.ensure_index(client, mapping, MAPPING_VERSION)
        client.indices.refresh(index=physical)
        before = client.count(index=physical, query=day_query(day))["count"]

        def documents_of(shard_path: str) -> Iterator[dict]:
            for batch in stage_storage.iter_parquet_batches(shard_path, elasticsearch.chunk_size, use_threads=False):
                yield from batch_documents(batch, day, load_id, mapped_fields, physical)

        outcome = elasticsearch.bulk_index(client, shard_paths, documents_of)
        metadata = _load_metadata(outcome, elasticsearch, physical)
        if not outcome.complete:
            raise dg.Failure(
                description=f"the load of {day} into {physical} is incomplete "
                f"({sum(outcome.unavailable.values())} documents not accepted after retries"
                f"{'; ' + outcome.error if outcome.error else ''}); the day's previous documents are kept: re-run it",
                metadata=metadata,
            )
        client.indices.refresh(index=physical)
        stale_deleted = 0
        if before:  # a first load of the day has nothing to replace
            stale_deleted = client.delete_by_query(
                index=physical, refresh=True, conflicts="proceed",
                query={"bool": {"filter": [day_query(day)], "must_not": [{"term": {"load_id": load_id}}]}},
            ).get("deleted", 0)
        count = client.count(index=physical, query=day_query(day))["count"]
        alias_targets = elasticsearch.alias_targets(client)
    finally:
        client.close()

    if outcome.rejected:
        context.log.error(
            f"Elasticsearch rejected {sum(outcome.rejected.values())} documents of {day}: {dict(outcome.rejected)}; "
            f"e.g. {outcome.samples[:2]}"
        )
    if alias_targets != [physical]:
        context.log.warning(
            f"the alias {elasticsearch.index} points at {alias_targets}, not at {physical} that this load wrote: "
            "readers see the new data after ElasticsearchResource.swap_alias (see README)"
        )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "documents_before": int(before),
            "stale_deleted": int(stale_deleted),
            "documents_for_day": int(count),
            "alias_targets": dg.MetadataValue.json(alias_targets),
        }
    )


def _load_metadata(outcome: BulkOutcome, elasticsearch: ElasticsearchResource, physical: str) -> dict:
    return {
        "rows": outcome.indexed,
        "rejected": sum(outcome.rejected.values()),
        "rejected_by_type": dg.MetadataValue.json(dict(outcome.rejected)),
        "not_accepted_after_retries": sum(outcome.unavailable.values()),
        "failure_samples": dg.MetadataValue.json(outcome.samples),
        "stopped_by": outcome.error or "",
        "index": elasticsearch.index,
        "physical_index": physical,
        "parallel_requests": elasticsearch.parallel_requests,
        "seconds": round(outcome.seconds, 3),
        "documents_per_second": round(outcome.sent / outcome.seconds, 1) if outcome.seconds else 0.0,
    }
