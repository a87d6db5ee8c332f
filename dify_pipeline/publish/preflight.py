"""Before Dify is paid for a day: prove the day's outputs can be written, or stop naming what to fix."""

from __future__ import annotations

import uuid

import dagster as dg

from dify_pipeline.contract import EnrichmentContract
from dify_pipeline.publish.documents import MAPPING_VERSION, index_mapping
from dify_pipeline.resources.search import SearchCluster, SearchClusterError
from dify_pipeline.resources.storage import ObjectStorage

S3_VARIABLES = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_REGION and S3_ENDPOINT_URL"


def check_sinks_before_paying(
    parquet_output: ObjectStorage, search: SearchCluster, contract: EnrichmentContract
) -> None:
    """The Parquet prefix takes a tiny object (written, then removed); the search cluster answers, is a product
    and version the package supports, and its index takes a document (written, then removed).

    Raises dg.Failure listing every problem found, each naming the environment variable to fix."""
    problems = []
    try:
        parquet_output.check_writable()
    except Exception as error:  # what the store said: missing bucket, denied, unreachable endpoint
        hint = f"; check {S3_VARIABLES}" if parquet_output.is_s3 else ""
        problems.append(f"OUTPUT_PARQUET_URL={parquet_output.url} cannot be written ({type(error).__name__}: "
                        f"{str(error)[:300]}){hint}")
    try:
        with search.connect() as sink:
            mapping = index_mapping(contract.source.text_columns, [], contract.outputs)
            physical = sink.ensure_index(mapping, MAPPING_VERSION)
            probe = f"dify_pipeline-preflight-{uuid.uuid4().hex}"  # no day: no count of a day ever sees it
            version = sink.create_document(physical, probe, {"record_key": probe})
            if version is not None:
                sink.delete_document(physical, probe, version)
    except SearchClusterError as error:
        problems.append(str(error))
    except Exception as error:  # the cluster answered but refused the index or the write (read-only, no rights)
        problems.append(f"ELASTICSEARCH_INDEX={search.index} on ELASTICSEARCH_URL={search.shown_url} cannot be written "
                        f"({type(error).__name__}: {str(error)[:300]})")
    if problems:
        raise dg.Failure(description="the day's outputs cannot be written, so nothing was sent to Dify: "
                         + "; ".join(problems))
