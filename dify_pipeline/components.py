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

import contextlib
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from dify_pipeline.contract import ContractError, EnrichmentContract, parse_contract
from dify_pipeline.environment import read_environment
from dify_pipeline.factory import build_enrichment, check_side_by_side


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
    _declared_in: str = PrivateAttr("")

    def contract(self) -> EnrichmentContract:
        """The declared contract, or a ContractError naming each field at fault."""
        return parse_contract(self.model_dump(exclude_unset=True), origin=f"DifyEnrichment {self.name!r}")

    @classmethod
    def load(cls, attributes, context: dg.ComponentLoadContext) -> DifyEnrichment:
        component = super().load(attributes, context)
        component._declared_in = _declared_in(context)
        return component

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """This enrichment's chain, after checking it against every other DifyEnrichment of the code location:
        dg builds each component's definitions on its own and merges them, so the check looks at the whole tree."""
        contract, environment = self.contract(), read_environment()
        siblings = [c for c in context.component_tree.get_all_components(DifyEnrichment) if c is not self]
        contracts, origins = [contract], [self._declared_in]
        for sibling in siblings:
            with contextlib.suppress(ContractError):  # a sibling's own errors are reported by its own build
                contracts.append(sibling.contract())
                origins.append(sibling._declared_in)
        check_side_by_side(contracts, environment, origins)
        return build_enrichment(contract, environment)


def _declared_in(context: dg.ComponentLoadContext) -> str:
    """Where the component is declared, for messages: `defs/reviews`, `defs/shop[1]` for a second YAML document."""
    loc = context.component_path
    root = context.component_tree.defs_module_path.parent
    place = loc.file_path.relative_to(root).as_posix() if loc.file_path.is_relative_to(root) else str(loc.file_path)
    return f"{place}[{loc.instance_key}]" if loc.instance_key not in (None, 0) else place
