"""The `dg` command line on the package: the component is listed, the checkout's code location and a project of
two `defs.yaml` enrichments check, and `dg launch --assets ...` materializes a declared enrichment's day on real
services (each command in a process of its own, as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from dify_pipeline_dev.demo.sample_data import create_source_table, generate_tickets, insert_tickets
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline_tests.configuration import LOADABLE_ENVIRONMENT, environment_without_pipeline_variables
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY

CHECKOUT = Path(__file__).resolve().parents[2]
DG = str(Path(sys.executable).parent / "dg")
REVIEWS_KEY = "app-reviews-completion-key"

REVIEWS_YAML = """\
type: dify_pipeline.DifyEnrichment
attributes:
  name: reviews
  key_prefix: [shop]
  source: {table: reviews}
  app: {api_key_env: REVIEWS_DIFY_API_KEY, mode: completion}
  outputs:
    sentiment: {type: label, allowed: [positive, neutral, negative]}
    score: {type: integer, minimum: 1, maximum: 5, required: false}
    aspects: {type: list, required: false}
  sinks: {parquet_prefix: reviews, index_alias: ALIAS}
"""
TICKETS_YAML = """\
type: dify_pipeline.DifyEnrichment
attributes:
  name: tickets
  outputs:
    category:
      type: label
      allowed: [物流问题, 退款申请, 功能建议, 账户问题, 支付问题,
                产品质量, 售后维修, 订单修改, 技术故障, 其他]
    summary: {type: text, required: false}
    sentiment: {type: label, allowed: [positive, neutral, negative]}
  sinks: {parquet_prefix: tickets}
"""


def dg(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**env, "VIRTUAL_ENV": str(Path(sys.executable).parents[1]), "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run([DG, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def make_project(folder: Path, alias: str) -> Path:
    """A `dg` project of its own: a definitions module loading its defs folder, one `defs.yaml` per enrichment."""
    (folder / "shop_enrichments" / "defs" / "reviews").mkdir(parents=True)
    (folder / "shop_enrichments" / "defs" / "tickets").mkdir()
    (folder / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "shop_enrichments"
        version = "0.1.0"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "shop_enrichments"
        """))
    for module in ("shop_enrichments/__init__.py", "shop_enrichments/defs/__init__.py"):
        (folder / module).write_text("")
    (folder / "shop_enrichments" / "definitions.py").write_text(textwrap.dedent("""\
        from pathlib import Path

        import dagster as dg


        @dg.definitions
        def defs() -> dg.Definitions:
            return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
        """))
    (folder / "shop_enrichments" / "defs" / "reviews" / "defs.yaml").write_text(REVIEWS_YAML.replace("ALIAS", alias))
    (folder / "shop_enrichments" / "defs" / "tickets" / "defs.yaml").write_text(TICKETS_YAML)
    return folder


def test_dg_lists_the_component():
    listed = dg("list", "components", cwd=CHECKOUT, env=os.environ.copy())
    assert listed.returncode == 0, listed.stderr
    assert "dify_pipeline.DifyEnrichment" in listed.stdout


def test_dg_checks_the_checkout_s_code_location_and_names_a_missing_variable(tmp_path):
    env = {**environment_without_pipeline_variables(), **LOADABLE_ENVIRONMENT, "DAGSTER_HOME": str(tmp_path)}
    checked = dg("check", "defs", cwd=CHECKOUT, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    refused = dg("check", "defs", cwd=CHECKOUT, env={k: v for k, v in env.items() if k != "DIFY_API_KEY"})
    assert refused.returncode != 0 and "DIFY_API_KEY is not set" in refused.stdout + refused.stderr


def test_dg_check_refuses_two_declared_enrichments_on_one_search_alias_naming_both(tmp_path):
    # dg builds each component's definitions on its own: the check must see the other defs.yaml all the same.
    env = {**environment_without_pipeline_variables(), **LOADABLE_ENVIRONMENT, "DAGSTER_HOME": str(tmp_path),
           "REVIEWS_DIFY_API_KEY": REVIEWS_KEY}
    project = make_project(tmp_path / "project", alias="tickets_enriched")  # the tickets' (ELASTICSEARCH_INDEX)
    refused = dg("check", "defs", cwd=project, env=env)
    printed = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert ("enrichments 'reviews' (defs/reviews) and 'tickets' (defs/tickets) publish to the search alias "
            "'tickets_enriched'") in printed, printed[-3000:]


def test_a_project_of_two_declared_enrichments_checks_and_dg_launch_materializes_a_day(
    tmp_path, pipeline_env, source_tickets, dify_emulator, dagster_instance, monkeypatch
):
    dify_emulator.configure(DifyEmulatorConfig(latency_ms=5, apps=[
        DifyApp(api_key=DIFY_KEY), DifyApp(api_key=REVIEWS_KEY, mode="completion")]))
    monkeypatch.setenv("REVIEWS_DIFY_API_KEY", REVIEWS_KEY)
    engine = sa.create_engine(pipeline_env["SOURCE_DATABASE_URL"])
    create_source_table(engine, "reviews")
    insert_tickets(engine, "reviews", generate_tickets(date.fromisoformat(DAY), count=200, seed=3, timezone="UTC"))
    engine.dispose()
    project = make_project(tmp_path / "project", alias=f"{pipeline_env['ELASTICSEARCH_INDEX']}_reviews")

    checked = dg("check", "defs", cwd=project, env=os.environ.copy())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = dg("list", "defs", cwd=project, env=os.environ.copy())
    assert "shop/enriched_reviews" in listed.stdout and "daily_reviews" in listed.stdout
    assert "daily_tickets" in listed.stdout

    launched = dg("launch", "--assets", "group:reviews", "--partition", DAY, cwd=project, env=os.environ.copy(),
                  timeout=600)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    materialized = {record.asset_key.to_user_string() for record in dagster_instance.fetch_materializations(
        __import__("dagster").AssetRecordsFilter(asset_key=__import__("dagster").AssetKey(["shop", "reviews_parquet"]),
                                                 asset_partitions=[DAY]), limit=1).records}
    assert materialized == {"shop/reviews_parquet"}
    assert [r["path"] for r in dify_emulator.requests()].count("/v1/completion-messages") > 0


@pytest.fixture(autouse=True)
def _no_dg_telemetry(monkeypatch):
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")  # the commands must not try to reach the network
