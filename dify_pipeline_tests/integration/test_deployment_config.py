"""The deployment's configuration loads as documented: the project's dagster.yaml on PostgreSQL, and the Kubernetes
instance of deploy/k8s with the code location configured for runs spread over machines.

What is validated without a cluster: the K8s instance file against dagster-k8s's own schema, the launcher built
from it (against a kubeconfig naming a cluster nobody calls), the pool and queue limits, and the code location
served by a gRPC code server, as in a pod, with the cache on PostgreSQL and the stages on S3. Launching a Job is not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import PoolGranularity
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresRunStorage

from dify_pipeline.definitions import build_definitions, build_resources
from dify_pipeline_tests.configuration import LOADABLE_ENVIRONMENT
from dify_pipeline_tests.integration import services
from dify_pipeline_tests.integration.conftest import S3_BUCKET

# The variables a code location needs to load, on top of the instance's own (DAGSTER_HOME, DAGSTER_PG_*).
LOCATION_ENVIRONMENT = {k: v for k, v in LOADABLE_ENVIRONMENT.items() if k != "DAGSTER_HOME"}

K8S_INSTANCE = services.REPO_ROOT / "deploy" / "k8s" / "dagster.yaml"
UNREACHABLE_CLUSTER = """
apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: nobody, user: {token: not-a-token}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
"""


def test_the_project_instance_queues_runs_and_gives_the_dify_pool_one_step_at_a_time(dagster_instance, monkeypatch):
    for key, value in LOCATION_ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    concurrency = dagster_instance.get_concurrency_config()
    assert isinstance(dagster_instance.run_storage, PostgresRunStorage)
    assert isinstance(dagster_instance.run_coordinator, QueuedRunCoordinator)
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
    assert dagster_instance.run_monitoring_enabled
    assert dagster_instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0

    job = build_definitions().resolve_job_def("daily_enrichment")
    pools = {node.name: node.definition.pool for node in job.nodes if node.definition.pool}
    assert pools == {"enriched_tickets": "dify"}  # the one step that spends the Dify budget, and only it


def test_the_project_instance_runs_one_run_per_day_at_a_time(dagster_instance):
    """Judged by the counter the daemon's run queue uses: a second run of a day already in progress (a backfill
    while the schedule's run goes on) waits; other days do not."""
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    limits = dagster_instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    day = lambda partition: dg.DagsterRun(job_name="daily_enrichment", tags={"dagster/partition": partition})  # noqa: E731
    queue = TagConcurrencyLimitsCounter(limits, [day("2026-11-20")])
    assert queue.is_blocked(day("2026-11-20"))
    assert not queue.is_blocked(day("2026-11-19"))
    assert not queue.is_blocked(dg.DagsterRun(job_name="__ASSET_JOB"))  # runs without a day are not limited


@pytest.fixture
def k8s_home(tmp_path, monkeypatch):
    """A DAGSTER_HOME with deploy/k8s/dagster.yaml on a fresh PostgreSQL database; the launcher reads a kubeconfig
    instead of the in-cluster service account, the only change."""
    database = services.create_postgres_database()
    env = services.dagster_home_on_postgres(tmp_path / "k8s_home", database)
    config = yaml.safe_load(K8S_INSTANCE.read_text())
    (tmp_path / "kubeconfig").write_text(UNREACHABLE_CLUSTER)
    config["run_launcher"]["config"].update(load_incluster_config=False, kubeconfig_file=str(tmp_path / "kubeconfig"))
    (tmp_path / "k8s_home" / "dagster.yaml").write_text(yaml.safe_dump(config))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield Path(env["DAGSTER_HOME"])
    services.drop_postgres_database(database)


def test_the_kubernetes_instance_launches_runs_as_jobs_under_the_same_dify_pool(k8s_home):
    on_one_machine = yaml.safe_load((services.REPO_ROOT / "dagster.yaml").read_text())
    on_kubernetes = yaml.safe_load(K8S_INSTANCE.read_text())
    for block in ("storage", "concurrency", "run_monitoring"):
        assert on_kubernetes[block] == on_one_machine[block], block  # one budget, whatever runs the runs

    with dg.DagsterInstance.from_config(str(k8s_home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.supports_check_run_worker_health  # a dead run pod is noticed, its run ends, its slot frees
        assert launcher.env_secrets == ["dify-pipeline-secrets"] and launcher.env_config_maps == ["dify-pipeline-env"]
        assert launcher.instance_config_map == "dagster-instance"
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
        assert concurrency.run_queue_config.max_concurrent_runs == 4


def test_the_code_location_serves_over_grpc_with_the_cache_on_postgresql_and_stages_on_s3(
    k8s_home, s3_server, monkeypatch, tmp_path
):
    cache_database = services.create_postgres_database()
    pg = services.POSTGRES
    distributed = {
        **LOCATION_ENVIRONMENT,
        "RESULT_CACHE_URL": f"postgresql+psycopg2://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{cache_database}",
        "PIPELINE_STORAGE_URL": f"s3://{S3_BUCKET}/{tmp_path.name}/stages",
        "OUTPUT_PARQUET_URL": f"s3://{S3_BUCKET}/{tmp_path.name}/tickets",
        "S3_ENDPOINT_URL": s3_server.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    for key, value in distributed.items():
        monkeypatch.setenv(key, value)
    try:
        # As in a code-server pod: the location is loaded by `dagster api grpc` and validated through it.
        validated = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml",
             "--load-with-grpc"],
            cwd=services.REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=180)
        assert validated.returncode == 0, validated.stdout + validated.stderr

        # Every run pod reaches the same cache and stages.
        shared = {key: resource for key, resource in build_resources().items()
                  if key in ("stage_storage", "result_cache")}
        with dg.build_resources(shared) as resources:
            assert resources.stage_storage.is_s3 and resources.stage_storage.url == distributed["PIPELINE_STORAGE_URL"]
            cache = resources.result_cache.open()
            cache.close()
    finally:
        services.drop_postgres_database(cache_database)
