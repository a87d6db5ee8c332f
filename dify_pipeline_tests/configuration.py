"""A complete environment the code location loads with: valid values, no service behind them (loading connects
to nothing). Tests start from it and change the variables they are about."""

from __future__ import annotations

import os

LOADABLE_ENVIRONMENT = {
    "SOURCE_DATABASE_URL": "mysql+pymysql://etl_reader:change-me@127.0.0.1:1/support",
    "DIFY_BASE_URL": "http://127.0.0.1:1/v1",
    "DIFY_API_KEY": "app-not-a-real-key",
    "OUTPUT_PARQUET_URL": "s3://analytics/dify/tickets_enriched",
    "ELASTICSEARCH_URL": "http://127.0.0.1:1",
    "DAGSTER_HOME": "/opt/dagster/home",
}


def environment_without_pipeline_variables() -> dict[str, str]:
    """This process's environment minus every variable the package reads (so a developer's own do not leak in)."""
    from dify_pipeline.environment import VARIABLES

    return {name: value for name, value in os.environ.items() if name not in VARIABLES}
