"""`dify_pipeline.DifyEnrichment`: one enrichment declared in a `defs.yaml`, its attributes the contract's fields.

    type: dify_pipeline.DifyEnrichment
    attributes:
      name: reviews
      key_prefix: [reviews]
      source: {url_env: REVIEWS_DATABASE_URL, table: reviews, text_columns: [title, body]}
      app: {api_key_env: REVIEWS_DIFY_API_KEY, mode: completion, inputs: {title: title, body: body}}
      outputs: {sentiment: {type: label, allowed: [positive, neutral, negative]}}
      sinks: {parquet_prefix: reviews, index_alias: reviews_enriched}

The sections are read by the contract (`contract.parse_contract`), whose errors name each field at fault: Dagster's
YAML schema cannot express the contract's bounds (a minimum length, a range), so the sections are plain mappings
here and validated there, when the definitions load. The deployment's settings (storage, search cluster, the
default source and app, schedule) come from the environment, as for the package's own code location.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from dify_pipeline.contract import EnrichmentContract, parse_contract
from dify_pipeline.environment import read_environment
from dify_pipeline.factory import build_enrichment


class DifyEnrichment(dg.Component, dg.Resolvable, dg.Model):
    """The daily chain of one Dify enrichment (extract → clean → shard → enrich → Parquet and search index, its
    checks, job `daily_<name>`, schedule and freshness sensor), built from the contract its attributes declare."""

    name: str
    record_name: str | None = None
    key_prefix: list[str] = []
    source: dict[str, Any] = {}
    cleaning: dict[str, Any] = {}
    app: dict[str, Any] = {}
    outputs: dict[str, dict[str, Any]]
    cache_version: str = "v1"
    max_failure_rate: float = 0.02
    price_per_1k_input_tokens: float | None = None
    price_per_1k_output_tokens: float | None = None
    price_currency: str = "USD"
    sinks: dict[str, Any] = {}

    def contract(self) -> EnrichmentContract:
        """The declared contract, or a ContractError naming each field at fault."""
        return parse_contract(self.model_dump(exclude_unset=True), origin=f"DifyEnrichment {self.name!r}")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_enrichment(self.contract(), read_environment())
