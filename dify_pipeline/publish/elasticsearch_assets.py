"""Step 5b — index the enriched day into Elasticsearch, one document per record key."""


from collections import Counter
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa
from elasticsearch import helpers

from dify_pipeline.partitions import daily_partitions
from dify_pipeline.publish.documents import MAPPING_VERSION, index_mapping, to_documents
from dify_pipeline.resources.elasticsearch import ElasticsearchResource
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

    After a successful load the index holds exactly the day's current records. Documents Elasticsearch
    rejects are counted by error type in the metadata (and fail the day's count check); the rest load.
    """
    shard_paths = stage_storage.list_files(day_folder(stage_storage, "enriched_tickets", context.partition_key))
    if not shard_paths:
        raise dg.Failure(f"no enriched data for {context.partition_key}: materialize enriched_tickets first")
    schema = stage_storage.read_schema(shard_paths[0])
    timestamp_columns = [f.name for f in schema if pa.types.is_timestamp(f.type) and f.name != "enriched_at"]
    mapping = index_mapping(settings.text_columns, timestamp_columns)
    mapped_fields = set(mapping["properties"])

    client = elasticsearch.client()
    load_id = context.run.run_id
    try:
        elasticsearch.ensure_index(client, mapping, MAPPING_VERSION)

        def actions() -> Iterator[dict]:
            for path in shard_paths:
                for batch in stage_storage.iter_parquet_batches(path, batch_size=elasticsearch.chunk_size):
                    yield from to_documents(batch.to_pylist(), context.partition_key, load_id, mapped_fields, elasticsearch.index)

        indexed, errors, samples = 0, Counter(), []
        for ok, item in helpers.streaming_bulk(
            client, actions(), chunk_size=elasticsearch.chunk_size, max_chunk_bytes=elasticsearch.max_chunk_bytes,
            max_retries=elasticsearch.max_retries, initial_backoff=elasticsearch.initial_backoff_seconds,
            raise_on_error=False, raise_on_exception=False,
        ):
            if ok:
                indexed += 1
                continue
            detail = next(iter(item.values()))
            error = detail.get("error") or {}
            errors[error.get("type", str(detail.get("status")))] += 1
            if len(samples) < 5:
                samples.append({"_id": detail.get("_id"), "status": detail.get("status"), "reason": str(error.get("reason", error))[:300]})

        client.indices.refresh(index=elasticsearch.index)
        day_filter = {"term": {"dt": context.partition_key}}
        stale = client.delete_by_query(
            index=elasticsearch.index, refresh=True, conflicts="proceed",
            query={"bool": {"filter": [day_filter], "must_not": [{"term": {"load_id": load_id}}]}},
        )
        count = client.count(index=elasticsearch.index, query=day_filter)["count"]
    finally:
        client.close()

    if errors:
        context.log.error(f"Elasticsearch rejected {sum(errors.values())} documents: {dict(errors)}; e.g. {samples[:2]}")
    return dg.MaterializeResult(
        metadata={
            "rows": indexed,
            "rejected": sum(errors.values()),
            "rejected_by_type": dg.MetadataValue.json(dict(errors)),
            "rejected_samples": dg.MetadataValue.json(samples),
            "stale_deleted": int(stale.get("deleted", 0)),
            "documents_for_day": int(count),
            "index": elasticsearch.index,
        }
    )
