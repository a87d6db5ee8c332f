"""What the builders of one enrichment's daily chain share: its contract, its names, its partitions, its resources.

Every name of the chain derives from the contract's `name` (and `record_name`, `key_prefix`), so two enrichments in
one code location never collide: their assets, group, job, schedule, stage folders and checks are their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from dify_pipeline.contract import EnrichmentContract
from dify_pipeline.resources.search import SearchCluster

DEFAULT_SOURCE_URL_ENV = "SOURCE_DATABASE_URL"
DEFAULT_DIFY_BASE_URL_ENV = "DIFY_BASE_URL"
DEFAULT_DIFY_API_KEY_ENV = "DIFY_API_KEY"
# The pool of the default app: one step at a time across all runs holds its budget (dagster.yaml: concurrency.pools).
DEFAULT_DIFY_POOL = "dify"


@dataclass(frozen=True)
class Chain:
    """One enrichment as its builders see it. `primary` keeps the names the package had with a single enrichment
    (job `daily_enrichment`, its schedule, the sensor `published_by_deadline`)."""

    contract: EnrichmentContract
    partitions: dg.DailyPartitionsDefinition
    source_timezone: str
    source_resource: str = "source_database"
    primary: bool = False

    # -- asset names (also the stage folders, which are per asset name)
    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def raw(self) -> str:
        return f"raw_{self.name}"

    @property
    def clean(self) -> str:
        return f"clean_{self.name}"

    @property
    def quarantined(self) -> str:
        return f"quarantined_{self.name}"

    @property
    def shards(self) -> str:
        return f"{self.contract.singular}_shards"

    @property
    def enriched(self) -> str:
        return f"enriched_{self.name}"

    @property
    def parquet(self) -> str:
        return f"{self.name}_parquet"

    @property
    def elasticsearch(self) -> str:
        return f"{self.name}_elasticsearch"

    def key(self, asset: str) -> dg.AssetKey:
        """The asset key of one of this chain's assets, under the contract's key prefix."""
        return dg.AssetKey([*self.contract.key_prefix, asset])

    def op_name(self, name: str) -> str:
        """An op name unique in the code location (prefix parts joined like Dagster joins asset keys)."""
        return "__".join([*self.contract.key_prefix, name])

    @property
    def group(self) -> str:
        return self.name

    # -- jobs and sensors
    @property
    def job_name(self) -> str:
        return "daily_enrichment" if self.primary else f"daily_{self.name}"

    @property
    def schedule_name(self) -> str:
        return f"{self.job_name}_schedule"

    @property
    def freshness_sensor_name(self) -> str:
        return "published_by_deadline" if self.primary else f"{self.name}_published_by_deadline"

    # -- resources that differ between enrichments
    @property
    def dify_resource(self) -> str:
        """`dify` for the default app (DIFY_BASE_URL, DIFY_API_KEY); another app is named by its key's variable."""
        return "dify" if _default_app(self.contract) else f"dify_{self.contract.app.api_key_env.lower()}"

    @property
    def dify_pool(self) -> str:
        """One pool per app: two apps never share one slot, two enrichments on one app do."""
        return DEFAULT_DIFY_POOL if _default_app(self.contract) else f"dify_{self.contract.app.api_key_env.lower()}"

    def search(self, cluster: SearchCluster) -> SearchCluster:
        """The shared search cluster, publishing under this enrichment's alias."""
        alias = self.contract.sinks.index_alias
        if alias is None or alias == cluster.index:
            return cluster
        fields = {name: getattr(cluster, name) for name in type(cluster).model_fields}
        return type(cluster)(**{**fields, "index": alias})

    def parquet_path(self, *parts: str) -> tuple[str, ...]:
        """Path parts under OUTPUT_PARQUET_URL for this enrichment (its `sinks.parquet_prefix` first)."""
        prefix = self.contract.sinks.parquet_prefix
        return (*prefix.split("/"), *parts) if prefix else parts


def _default_app(contract: EnrichmentContract) -> bool:
    app = contract.app
    return (app.base_url_env, app.api_key_env) == (DEFAULT_DIFY_BASE_URL_ENV, DEFAULT_DIFY_API_KEY_ENV)

