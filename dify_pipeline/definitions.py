"""The code location: assets of the daily flow, their checks, the job and schedule, resources from the environment.

Every setting a user gives comes from an environment variable, read and validated once by
`environment.read_environment` (see README and .env.example); secrets go through `EnvVar`, so Dagster
resolves them at run time and never shows or stores their values.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dify_pipeline.checks import build_freshness_checks, publish_checks
from dify_pipeline.clean.assets import clean_tickets
from dify_pipeline.environment import PipelineEnvironment, read_environment
from dify_pipeline.extract.assets import raw_tickets
from dify_pipeline.infer.assets import enriched_tickets
from dify_pipeline.pool_slots import pool_waiting_multiprocess_executor
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


def _given(**options):
    """The options a variable set; the others keep the resource's own default."""
    return {name: value for name, value in options.items() if value is not None}


def _value_or_reference(value: str | None, name: str) -> str | dg.EnvVar:
    # Unset only when resources are built without build_definitions (a test of one resource): the reference
    # then fails the run that needs it, with Dagster's message naming the variable.
    return value if value is not None else dg.EnvVar(name)


def build_resources(environment: PipelineEnvironment | None = None) -> dict:
    """The resources as `environment` (by default the current one) describes them."""
    env = environment or read_environment(require=False)
    s3 = _given(s3_endpoint_url=env.s3_endpoint_url, s3_region=env.aws_region,
                s3_addressing_style=env.s3_addressing_style)
    state_dir = env.state_dir or Path.cwd() / "dify_pipeline"  # without DAGSTER_HOME only outside build_definitions
    return {
        "source_database": SourceDatabase(
            url=dg.EnvVar("SOURCE_DATABASE_URL"),
            table=env.source_table,
            source_timezone=env.source_timezone or env.pipeline_timezone,
        ),
        "stage_storage": ObjectStorage(url=env.pipeline_storage_url or str(state_dir / "stages"), **s3),
        "parquet_output": ObjectStorage(url=_value_or_reference(env.output_parquet_url, "OUTPUT_PARQUET_URL"), **s3),
        "dify": DifyResource(
            base_url=_value_or_reference(env.dify_base_url, "DIFY_BASE_URL"),
            api_key=dg.EnvVar("DIFY_API_KEY"),
            **_given(app_mode=env.dify_app_mode, response_mode=env.dify_response_mode,
                     max_concurrency=env.dify_max_concurrency, requests_per_minute=env.dify_requests_per_minute,
                     ca_file=env.dify_ca_file),
        ),
        "result_cache": ResultCache(
            url=dg.EnvVar("RESULT_CACHE_URL") if env.result_cache_url
            else f"sqlite:///{state_dir / 'result_cache.sqlite'}",
            enabled=env.result_cache_enabled,
        ),
        "elasticsearch": SearchCluster(
            url=_value_or_reference(env.elasticsearch_url, "ELASTICSEARCH_URL"),
            index=env.elasticsearch_index,
            api_key=dg.EnvVar("ELASTICSEARCH_API_KEY") if env.elasticsearch_api_key else None,
            password=dg.EnvVar("ELASTICSEARCH_PASSWORD") if env.elasticsearch_password else None,
            aws_sigv4=env.opensearch_auth == "sigv4",
            **_given(engine=env.search_engine, username=env.elasticsearch_username, ca_file=env.elasticsearch_ca_file,
                     aws_region=env.opensearch_aws_region),
        ),
        "settings": PipelineSettings(),
    }


# Each step in a process of its own, forked from one that has imported the code location once: a step starts in
# a fraction of a second instead of paying ~2 s of imports (8 steps a day, 30 days a backfill). A step waiting for
# a pool slot says who holds it and frees the slots of dead runs (pool_slots.py).
step_processes = pool_waiting_multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["dify_pipeline.definitions"]}}}
)


def build_definitions(**resource_overrides) -> dg.Definitions:
    """The code location as the environment describes it now (tests call this after setting variables).

    Raises ConfigurationError, naming every variable to fix, when the environment cannot run the pipeline.
    """
    environment = read_environment()
    freshness_checks, freshness_sensor = build_freshness_checks(environment.published_by_hour,
                                                                environment.pipeline_timezone)
    return dg.Definitions(
        assets=[raw_tickets, clean_tickets, ticket_shards, enriched_tickets, tickets_parquet, tickets_elasticsearch],
        asset_checks=[*publish_checks, enriched_day_checks, *freshness_checks],
        jobs=[daily_enrichment_job],
        schedules=[daily_schedule],
        sensors=[freshness_sensor],
        resources={**build_resources(environment), **resource_overrides},
        executor=step_processes,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster loads (`-m dify_pipeline.definitions`): the environment is validated here, at load time."""
    return build_definitions()
