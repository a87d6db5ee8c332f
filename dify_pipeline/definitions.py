"""The code location: the support-ticket enrichment, declared by the environment, built by the factory.

Every setting a user gives comes from an environment variable, read and validated once by
`environment.read_environment` (see README and .env.example); secrets go through `EnvVar`, so Dagster
resolves them at run time and never shows or stores their values. More enrichments: pass their contracts to
`build_definitions`, or declare each in a `defs.yaml` of the `dify_pipeline.DifyEnrichment` component.
"""

from __future__ import annotations

import dagster as dg

from dify_pipeline.contract import AppContract, EnrichmentContract, SourceContract, tickets_contract
from dify_pipeline.environment import PipelineEnvironment, read_environment
from dify_pipeline.factory import build_code_location, chain_of, own_resources, shared_resources, step_processes

__all__ = ["build_definitions", "build_resources", "defs", "step_processes", "tickets_from_environment"]


def tickets_from_environment(environment: PipelineEnvironment, **changes) -> EnrichmentContract:
    """The ticket contract as the environment sets it (SOURCE_TABLE, SOURCE_TIMEZONE, DIFY_APP_MODE)."""
    source = SourceContract(table=environment.source_table, timezone=environment.source_timezone)
    app = AppContract(mode=environment.dify_app_mode or "workflow")
    return tickets_contract(**{"source": source, "app": app, **changes})


def build_definitions(*contracts: EnrichmentContract, **resource_overrides) -> dg.Definitions:
    """The code location as the environment describes it now (tests call this after setting variables): the
    ticket enrichment, or the enrichments of `contracts` (the first keeps the names `daily_enrichment`, ...).

    Raises ConfigurationError, naming every variable to fix, when the environment cannot run the pipeline.
    """
    environment = read_environment()
    return build_code_location(contracts or [tickets_from_environment(environment)], environment,
                               **resource_overrides)


def build_resources(environment: PipelineEnvironment | None = None) -> dict:
    """The ticket enrichment's resources as `environment` (by default the current one) describes them."""
    env = environment or read_environment(require=False)
    return {**shared_resources(env), **own_resources(chain_of(tickets_from_environment(env), env), env)}


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster loads (`-m dify_pipeline.definitions`): the environment is validated here, at load time."""
    return build_definitions()
