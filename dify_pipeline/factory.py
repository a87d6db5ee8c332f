"""The daily chain of one declared enrichment, built from its contract: extract → clean → shard → enrich → Parquet
and search index, its checks, job, schedule and freshness sensor, and the resources it needs.

Several enrichments live side by side in one code location: each has its own asset keys (its name, under an
optional key prefix), group, job, schedule, stage folders, Parquet folder and search alias; each Dify app its
own resource and its own concurrency pool. Resources every enrichment shares (stage storage, Parquet output,
result cache, search cluster) are built once per environment, so definitions built separately (one Dagster
Component per enrichment) merge.

The environment is read once, by the caller (`environment.read_environment`); a contract's own variables (another
source URL, another app's URL and key) are checked here, at load time, and reach resources as `EnvVar`s.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from dify_pipeline.chain import DEFAULT_DIFY_API_KEY_ENV, DEFAULT_DIFY_BASE_URL_ENV, DEFAULT_SOURCE_URL_ENV, Chain
from dify_pipeline.checks import build_chain_freshness_checks, build_publish_checks
from dify_pipeline.clean.assets import build_clean_assets
from dify_pipeline.contract import ContractError, EnrichmentContract
from dify_pipeline.environment import PipelineEnvironment, check_contract_variables
from dify_pipeline.extract.assets import build_raw_asset
from dify_pipeline.infer.assets import build_enriched_asset
from dify_pipeline.partitions import daily_partitions
from dify_pipeline.pool_slots import pool_waiting_multiprocess_executor
from dify_pipeline.publish.elasticsearch_assets import build_elasticsearch_asset
from dify_pipeline.publish.parquet_assets import build_parquet_asset
from dify_pipeline.quality_checks import build_enriched_day_checks
from dify_pipeline.resources.dify import DifyResource
from dify_pipeline.resources.result_cache import ResultCache
from dify_pipeline.resources.search import SearchCluster
from dify_pipeline.resources.source_database import SourceDatabase
from dify_pipeline.resources.storage import ObjectStorage
from dify_pipeline.schedules import build_daily_job, build_daily_schedule
from dify_pipeline.shard.assets import build_shards_asset

# Each step in a process of its own, forked from one that has imported the code location once: a step starts in
# a fraction of a second instead of paying the imports again. A step waiting for a pool slot says who holds it
# and frees the slots of dead runs (pool_slots.py).
step_processes = pool_waiting_multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["dify_pipeline.definitions"]}}}
)


def build_enrichment(contract: EnrichmentContract, environment: PipelineEnvironment, *,
                     primary: bool = False) -> dg.Definitions:
    """The whole daily chain of `contract`, with its own resources and the shared ones (the same objects for
    every enrichment of one environment, so such definitions merge).

    `primary` keeps the names of the single-enrichment package (job `daily_enrichment`, schedule
    `daily_enrichment_schedule`, sensor `published_by_deadline`); others are `daily_<name>`, ....
    Raises ConfigurationError naming each of the contract's variables that is missing or malformed.
    """
    check_contract_variables([contract])
    chain = chain_of(contract, environment, primary=primary)
    parts = _chain_parts(chain, environment)
    return dg.Definitions(**parts, resources={**shared_resources(environment), **own_resources(chain, environment)})


def build_code_location(contracts: Sequence[EnrichmentContract], environment: PipelineEnvironment,
                        **resource_overrides) -> dg.Definitions:
    """Every enrichment of `contracts` in one code location (the first keeps the single-enrichment names), run
    by the pool-aware step executor. Raises ContractError when two enrichments would collide, and
    ConfigurationError naming each contract variable that is missing, before anything is built."""
    check_side_by_side(contracts, environment)
    check_contract_variables(contracts)
    assets, checks, jobs, schedules, sensors = [], [], [], [], []
    resources: dict[str, dg.ConfigurableResource] = dict(shared_resources(environment))
    for index, contract in enumerate(contracts):
        chain = chain_of(contract, environment, primary=index == 0)
        parts = _chain_parts(chain, environment)
        assets += parts["assets"]
        checks += parts["asset_checks"]
        jobs += parts["jobs"]
        schedules += parts["schedules"]
        sensors += parts["sensors"]
        resources.update(own_resources(chain, environment))  # alike where keys repeat: check_side_by_side
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, schedules=schedules, sensors=sensors,
                          resources={**resources, **resource_overrides}, executor=step_processes)


def steps_of(contract: EnrichmentContract, start_date: str = "2026-01-01", timezone: str = "UTC") -> dict:
    """The assets and checks of `contract`'s chain by name (`raw_<name>`, ..., `parquet_matches_enriched`,
    `elasticsearch_matches_parquet`, `enriched_day_checks`), without resources: for materializing single steps
    with resources of one's own (tests, benchmarks)."""
    chain = Chain(contract, _partitions(start_date, timezone), timezone, primary=True)
    with _partitioned_checks_allowed():
        return _steps(chain)


def _steps(chain: Chain) -> dict:
    parquet_check, elasticsearch_check = build_publish_checks(chain)
    return {
        chain.raw: build_raw_asset(chain), chain.clean: build_clean_assets(chain),
        chain.shards: build_shards_asset(chain), chain.enriched: build_enriched_asset(chain),
        chain.parquet: build_parquet_asset(chain), chain.elasticsearch: build_elasticsearch_asset(chain),
        "parquet_matches_enriched": parquet_check, "elasticsearch_matches_parquet": elasticsearch_check,
        "enriched_day_checks": build_enriched_day_checks(chain),
    }


def check_side_by_side(contracts: Sequence[EnrichmentContract], environment: PipelineEnvironment,
                       origins: Sequence[str] | None = None) -> None:
    """Enrichments of one code location must not write over each other: distinct names and record names, and
    with more than one, each its own Parquet folder (not inside another's) and search alias, and one app or
    source table configured one way. Raises ContractError naming both enrichments of every clash, each with its
    origin (where it is declared, e.g. `defs/reviews`) when `origins` gives them."""
    labels = [f"{c.name!r} ({origin})" if origin else repr(c.name)
              for c, origin in zip(contracts, origins or [""] * len(contracts))]
    problems = []
    if len(contracts) > 1:
        problems += [f"enrichment {label} has no sinks.parquet_prefix: beside others, each needs its own folder "
                     "under OUTPUT_PARQUET_URL" for c, label in zip(contracts, labels) if not c.sinks.parquet_prefix]
    for i, j in itertools.combinations(range(len(contracts)), 2):
        a, b = contracts[i], contracts[j]
        both = f"enrichments {labels[i]} and {labels[j]}"
        if a.name == b.name:
            problems.append(f"{both} have the same name: it names their assets, group, job and stage folders")
        elif a.singular == b.singular:
            problems.append(f"{both} have the same record name {a.singular!r}: it names the shards asset and its "
                            "stage folder (set record_name)")
        prefix_a, prefix_b = a.sinks.parquet_prefix, b.sinks.parquet_prefix
        if prefix_a and prefix_a == prefix_b:
            problems.append(f"{both} write the Parquet folder {prefix_a!r}: give each its own sinks.parquet_prefix")
        for inner, outer in ((j, i), (i, j)):
            inner_prefix, outer_prefix = contracts[inner].sinks.parquet_prefix, contracts[outer].sinks.parquet_prefix
            if outer_prefix and inner_prefix.startswith(outer_prefix + "/"):
                problems.append(f"enrichment {labels[inner]} writes the Parquet folder {inner_prefix!r}, inside "
                                f"{outer_prefix!r} of {labels[outer]}: a reader of that dataset would read both")
        alias = a.sinks.index_alias or environment.elasticsearch_index
        if alias == (b.sinks.index_alias or environment.elasticsearch_index):
            problems.append(f"{both} publish to the search alias {alias!r}: give each its own sinks.index_alias")
        problems += _resource_clashes(both, chain_of(a, environment), chain_of(b, environment), environment)
    if problems:
        raise ContractError("enrichments of one code location collide:\n  " + "\n  ".join(problems))


def _resource_clashes(both: str, a: Chain, b: Chain, environment: PipelineEnvironment) -> list[str]:
    """One app has one mode and base URL, one source table one time zone: two chains naming one resource must
    configure it alike."""
    own_a, own_b = own_resources(a, environment), own_resources(b, environment)
    problems = []
    if a.dify_resource == b.dify_resource and own_a[a.dify_resource] != own_b[b.dify_resource]:
        app_a, app_b = a.contract.app, b.contract.app
        problems.append(f"{both} ask the app of {app_a.api_key_env} (resource {a.dify_resource!r}) differently: "
                        f"mode {app_a.mode} and {app_b.mode}, base URL from {app_a.base_url_env} and "
                        f"{app_b.base_url_env}: make the contracts agree")
    if a.source_resource == b.source_resource and own_a[a.source_resource] != own_b[b.source_resource]:
        problems.append(f"{both} read {a.contract.source.table!r} (resource {a.source_resource!r}) in the time zones "
                        f"{a.source_timezone} and {b.source_timezone}: make the contracts agree")
    return problems


def chain_of(contract: EnrichmentContract, environment: PipelineEnvironment, *, primary: bool = False) -> Chain:
    """How the builders see `contract` in `environment`: names, partitions, the source's resource key."""
    source = contract.source
    default_source = source.url_env == DEFAULT_SOURCE_URL_ENV and source.table == environment.source_table
    if default_source:
        source_key = "source_database"
    elif source.url_env == DEFAULT_SOURCE_URL_ENV:
        source_key = f"source_{source.table}"
    else:
        source_key = f"source_{source.table}_{source.url_env.lower()}"
    return Chain(
        contract=contract,
        partitions=_partitions(environment.pipeline_start_date, environment.pipeline_timezone),
        # SOURCE_TIMEZONE is the default source's (SOURCE_DATABASE_URL, SOURCE_TABLE); a contract may name its own.
        source_timezone=source.timezone or (environment.source_timezone if default_source else None)
        or environment.pipeline_timezone,
        source_resource=source_key,
        primary=primary,
    )


@functools.cache
def _partitions(start_date: str, timezone: str) -> dg.DailyPartitionsDefinition:
    return daily_partitions(start_date, timezone)  # one object: assets of several enrichments share it


@contextlib.contextmanager
def _partitioned_checks_allowed():
    # Every check is partitioned like its asset, so its results carry their day; Dagster 1.13 calls that argument
    # a preview, and the warning says nothing else.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning)
        yield


def _chain_parts(chain: Chain, environment: PipelineEnvironment) -> dict:
    with _partitioned_checks_allowed():
        return _build_parts(chain, environment)


def _build_parts(chain: Chain, environment: PipelineEnvironment) -> dict:
    job = build_daily_job(chain)
    freshness_checks, freshness_sensor = build_chain_freshness_checks(chain, environment.published_by_hour)
    return {
        "assets": [build_raw_asset(chain), build_clean_assets(chain), build_shards_asset(chain),
                   build_enriched_asset(chain), build_parquet_asset(chain), build_elasticsearch_asset(chain)],
        "asset_checks": [*build_publish_checks(chain), build_enriched_day_checks(chain), *freshness_checks],
        "jobs": [job],
        "schedules": [build_daily_schedule(job, chain, environment.schedule_hour, environment.schedule_minute)],
        "sensors": [freshness_sensor],
    }


# -- resources ----------------------------------------------------------------------------------------------------

def _given(**options):
    """The options a variable set; the others keep the resource's own default."""
    return {name: value for name, value in options.items() if value is not None}


def _value_or_reference(value: str | None, name: str) -> str | dg.EnvVar:
    # Unset only when resources are built outside a validated load (a test of one resource): the reference then
    # fails the run that needs it, with Dagster's message naming the variable.
    return value if value is not None else dg.EnvVar(name)


@functools.cache
def shared_resources(environment: PipelineEnvironment) -> Mapping[str, dg.ConfigurableResource]:
    """The resources every enrichment of `environment` uses, one object each (cached: definitions merge)."""
    env = environment
    s3 = _given(s3_endpoint_url=env.s3_endpoint_url, s3_region=env.aws_region,
                s3_addressing_style=env.s3_addressing_style)
    state_dir = env.state_dir or Path.cwd() / "dify_pipeline"  # without DAGSTER_HOME only outside a validated load
    return {
        "stage_storage": ObjectStorage(url=env.pipeline_storage_url or str(state_dir / "stages"), **s3),
        "parquet_output": ObjectStorage(url=_value_or_reference(env.output_parquet_url, "OUTPUT_PARQUET_URL"), **s3),
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
    }


def own_resources(chain: Chain, environment: PipelineEnvironment) -> dict[str, dg.ConfigurableResource]:
    """The resources that differ between enrichments: the source table, and the Dify app (one per app)."""
    contract = chain.contract
    return {
        chain.source_resource: _source(contract.source.url_env, contract.source.table, chain.source_timezone),
        chain.dify_resource: _dify(environment, contract.app.base_url_env, contract.app.api_key_env, contract.app.mode),
    }


@functools.cache
def _source(url_env: str, table: str, timezone: str) -> SourceDatabase:
    return SourceDatabase(url=dg.EnvVar(url_env), table=table, source_timezone=timezone)


@functools.cache
def _dify(environment: PipelineEnvironment, base_url_env: str, api_key_env: str, mode: str) -> DifyResource:
    """The app behind these variables; the request budget variables (DIFY_MAX_CONCURRENCY, ...) apply to each app."""
    env = environment
    default_app = (base_url_env, api_key_env) == (DEFAULT_DIFY_BASE_URL_ENV, DEFAULT_DIFY_API_KEY_ENV)
    base_url = _value_or_reference(env.dify_base_url, base_url_env) if default_app else dg.EnvVar(base_url_env)
    return DifyResource(
        base_url=base_url,
        api_key=dg.EnvVar(api_key_env),
        app_mode=mode,
        **_given(response_mode=env.dify_response_mode, max_concurrency=env.dify_max_concurrency,
                 requests_per_minute=env.dify_requests_per_minute, max_outage_seconds=env.dify_max_outage_seconds,
                 keep_alive=env.dify_keep_alive, connection_reuse_seconds=env.dify_connection_reuse_seconds,
                 ca_file=env.dify_ca_file),
    )
