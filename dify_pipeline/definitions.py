"""The code location: assets of the daily flow, their checks, the job and schedule, resources from the environment.

Every setting a user gives comes from an environment variable (see README and .env.example); secrets go
through `EnvVar`, so Dagster resolves them at run time and never shows or stores their values.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from dify_pipeline.checks import publish_checks
from dify_pipeline.clean.assets import clean_tickets
from dify_pipeline.extract.assets import raw_tickets
from dify_pipeline.infer.assets import enriched_tickets
from dify_pipeline.partitions import PIPELINE_TIMEZONE
from dify_pipeline.publish.elasticsearch_assets import tickets_elasticsearch
from dify_pipeline.publish.parquet_assets import tickets_parquet
from dify_pipeline.quality_checks import enriched_day_checks
from dify_pipeline.resources.dify import DifyResource
from dify_pipeline.resources.result_cache import ResultCache
from dify_pipeline.resources.search import SearchCluster
from dify_pipeline.resources.source_database import SourceDatabase
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schedules import daily_enrichment_job, daily_schedule
from dify_pipeline.settings import PipelineSettings
from dify_pipeline.shard.assets import ticket_shards


def _optional(name: str) -> str | None:
    return os.environ.get(name) or None


def _secret(name: str) -> dg.EnvVar | None:
    """An optional secret: passed by reference when set, absent otherwise."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def _local_state_dir() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or ".").resolve() / "dify_pipeline"


def build_resources() -> dict:
    s3 = dict(s3_endpoint_url=_optional("S3_ENDPOINT_URL"), s3_region=_optional("AWS_REGION"),
              s3_addressing_style=os.environ.get("S3_ADDRESSING_STYLE") or "auto")
    state_dir = _local_state_dir()
    return {
        "source_database": SourceDatabase(
            url=dg.EnvVar("SOURCE_DATABASE_URL"),
            table=os.environ.get("SOURCE_TABLE", "tickets"),
            source_timezone=os.environ.get("SOURCE_TIMEZONE", PIPELINE_TIMEZONE),
        ),
        "stage_storage": ObjectStorage(url=os.environ.get("PIPELINE_STORAGE_URL") or str(state_dir / "stages"), **s3),
        "parquet_output": ObjectStorage(url=dg.EnvVar("OUTPUT_PARQUET_URL"), **s3),
        "dify": DifyResource(
            base_url=dg.EnvVar("DIFY_BASE_URL"),
            api_key=dg.EnvVar("DIFY_API_KEY"),
            app_mode=os.environ.get("DIFY_APP_MODE", "workflow"),
            response_mode=os.environ.get("DIFY_RESPONSE_MODE", "blocking"),
            max_concurrency=int(os.environ.get("DIFY_MAX_CONCURRENCY", "16")),
            requests_per_minute=int(os.environ["DIFY_REQUESTS_PER_MINUTE"]) if _optional("DIFY_REQUESTS_PER_MINUTE") else None,
            ca_file=_optional("DIFY_CA_FILE"),
        ),
        "result_cache": ResultCache(
            url=_secret("RESULT_CACHE_URL") or f"sqlite:///{state_dir / 'result_cache.sqlite'}",
            enabled=os.environ.get("RESULT_CACHE_ENABLED", "true").lower() != "false",
        ),
        "elasticsearch": SearchCluster(
            url=dg.EnvVar("ELASTICSEARCH_URL"),
            engine=os.environ.get("SEARCH_ENGINE") or "elasticsearch",
            index=os.environ.get("ELASTICSEARCH_INDEX", "tickets_enriched"),
            api_key=_secret("ELASTICSEARCH_API_KEY"),
            username=_optional("ELASTICSEARCH_USERNAME"),
            password=_secret("ELASTICSEARCH_PASSWORD"),
            ca_file=_optional("ELASTICSEARCH_CA_FILE"),
            aws_sigv4=(os.environ.get("OPENSEARCH_AUTH") or "basic").lower() == "sigv4",
            aws_region=_optional("OPENSEARCH_AWS_REGION"),
        ),
        "settings": PipelineSettings(),
    }


# Each step in a process of its own, forked from one that has imported the code location once: a step starts in
# a fraction of a second instead of paying ~2 s of imports (8 steps a day, 30 days a backfill).
step_processes = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["dify_pipeline.definitions"]}}}
)


def build_definitions(**resource_overrides) -> dg.Definitions:
    """The code location as the environment describes it now (tests call this after setting variables)."""
    return dg.Definitions(
        assets=[raw_tickets, clean_tickets, ticket_shards, enriched_tickets, tickets_parquet, tickets_elasticsearch],
        asset_checks=[*publish_checks, enriched_day_checks],
        jobs=[daily_enrichment_job],
        schedules=[daily_schedule],
        resources={**build_resources(), **resource_overrides},
        executor=step_processes,
    )


defs = build_definitions()
