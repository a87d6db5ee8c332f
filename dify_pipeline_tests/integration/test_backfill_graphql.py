"""A backfill launched as the UI launches it — GraphQL `launchPartitionBackfill` on a running `dagster-webserver` —
and run by a `dagster-daemon`, both on the project's dagster.yaml over a fresh PostgreSQL database. The days run
concurrently; the Dify emulator's own counters show that Dify never saw more than the configured budget. The UI's
view of the days (numeric figures per day, run tags naming the app and prompt version) is read back the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from dify_pipeline.resources.dify import DifyResource
from dify_pipeline_dev.demo.sample_data import create_source_table, generate_tickets, insert_tickets
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig, max_runs_in_window
from dify_pipeline_tests.integration import services
from dify_pipeline_tests.integration.pipeline import DIFY_KEY

DAYS = ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]
TICKETS_PER_DAY = 18  # ~68 paid runs in all: more than a minute's budget, so the 60 s window can be exceeded
BUDGET_CONCURRENCY = 3  # DIFY_MAX_CONCURRENCY
BUDGET_PER_MINUTE = 60  # DIFY_REQUESTS_PER_MINUTE
# A run lasts as long as the pace lets the concurrency fill: one day alone uses the whole budget, both limits.
LATENCY_MS = BUDGET_CONCURRENCY * 60_000 / BUDGET_PER_MINUTE
ASSETS = [
    "raw_tickets", "clean_tickets", "quarantined_tickets", "ticket_shards", "enriched_tickets", "tickets_parquet",
    "tickets_elasticsearch",
]
BIN = Path(sys.executable).parent

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      runs {
        runId status startTime endTime tags { key value } stepStats { stepKey status startTime endTime }
      }
    }
    ... on Error { message }
  }
}"""
LOCATION = ("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }")
PARTITION_STATS = "{ assetNodes { assetKey { path } partitionStats { numMaterialized numFailed } } }"
HISTORY = """
query History($partitions: [String!]) {
  assetOrError(assetKey: {path: ["enriched_tickets"]}) {
    ... on Asset {
      assetMaterializations(partitions: $partitions) { partition runId metadataEntries { __typename label } }
    }
  }
}"""
# Figures the UI plots over the days: numeric entries (Int/Float), never text.
PLOTTED = {"rows": "IntMetadataEntry", "failed": "IntMetadataEntry", "failure_rate": "FloatMetadataEntry",
           "requests_sent": "IntMetadataEntry", "cache_hits": "IntMetadataEntry", "total_tokens": "IntMetadataEntry",
           "total_price": "FloatMetadataEntry", "price_spent_this_run": "FloatMetadataEntry",
           "latency_p50_ms": "FloatMetadataEntry", "latency_p95_ms": "FloatMetadataEntry"}


class Deployment:
    """dagster-webserver and dagster-daemon in process groups of their own, so that stop() also ends their code
    servers, run workers and step processes."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.processes: list[subprocess.Popen] = []
        self.url = f"http://127.0.0.1:{services.free_port()}"

    def _start(self, name: str, *command: str) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:
            self.processes.append(subprocess.Popen(
                [str(BIN / command[0]), *command[1:]], cwd=services.REPO_ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))

    def start_webserver(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self._start("webserver", "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", port)
        deadline = time.monotonic() + 120
        while True:
            try:
                [entry] = self.graphql(LOCATION)["workspaceOrError"]["locationEntries"]
                if entry["loadStatus"] == "LOADED":
                    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
                    return
            except httpx.TransportError:
                pass
            assert self.processes[-1].poll() is None, self.log_tail("webserver")
            assert time.monotonic() < deadline, self.log_tail("webserver")
            time.sleep(0.5)

    def start_daemon(self) -> None:
        self._start("daemon", "dagster-daemon", "run", "-w", "workspace.yaml")

    def graphql(self, query: str, **variables) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
        body = response.json()
        assert response.status_code == 200 and "errors" not in body, body
        return body["data"]

    def log_tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left in the group: code servers, run workers
            except ProcessLookupError:
                pass


@pytest.fixture
def deployment(pipeline_env, monkeypatch, tmp_path):
    database = services.create_postgres_database()
    cache_database = services.create_postgres_database()
    home_env = services.dagster_home_on_postgres(tmp_path / "dagster_home", database)
    for key, value in home_env.items():  # this process reads the same instance afterwards
        monkeypatch.setenv(key, value)
    pg = services.POSTGRES
    cache_url = f"postgresql+psycopg2://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{cache_database}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "SCHEDULE_", "DIFY_"))}
    env.update(pipeline_env, **home_env, RESULT_CACHE_URL=cache_url,
               DIFY_MAX_CONCURRENCY=str(BUDGET_CONCURRENCY), DIFY_REQUESTS_PER_MINUTE=str(BUDGET_PER_MINUTE))
    running = Deployment(env, tmp_path)
    try:
        yield running
    finally:
        running.stop()
        services.drop_postgres_database(database)
        services.drop_postgres_database(cache_database)


def overlapping(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that were open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = open_now = 0
    for _, change in edges:  # an end sorts before a start at the same instant
        open_now += change
        most = max(most, open_now)
    return most


def test_a_backfill_launched_through_graphql_keeps_every_run_together_within_the_dify_budget(
    deployment, pipeline_env, dify_emulator
):
    engine = sa.create_engine(pipeline_env["SOURCE_DATABASE_URL"])
    create_source_table(engine, "tickets")
    for seed, day in enumerate(DAYS):
        tickets = generate_tickets(date.fromisoformat(day), count=TICKETS_PER_DAY, seed=seed, timezone="UTC")
        insert_tickets(engine, "tickets", tickets)
    engine.dispose()
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=LATENCY_MS))
    dify_emulator.reset()

    started = time.monotonic()
    deployment.start_webserver()
    launched = deployment.graphql(LAUNCH_BACKFILL, params={
        "assetSelection": [{"path": [asset]} for asset in ASSETS], "partitionNames": DAYS, "title": "budget test",
    })["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deployment.start_daemon()  # after the launch: its first backfill iteration picks it up at once

    deadline = time.monotonic() + 300
    while True:
        backfill = deployment.graphql(BACKFILL, id=launched["backfillId"])["partitionBackfillOrError"]
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        assert time.monotonic() < deadline, f"backfill still {backfill['status']}\n{deployment.log_tail('daemon')}"
        time.sleep(2)
    elapsed = time.monotonic() - started

    runs = backfill["runs"]
    assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, deployment.log_tail("daemon"))
    assert len(runs) == len(DAYS) and {run["status"] for run in runs} == {"SUCCESS"}  # one run per day

    # Every day of every asset materialized.
    nodes = deployment.graphql(PARTITION_STATS)["assetNodes"]
    stats = {tuple(node["assetKey"]["path"]): node["partitionStats"] for node in nodes}
    assert {key[0]: stat["numMaterialized"] for key, stat in stats.items()} == dict.fromkeys(ASSETS, len(DAYS))
    with dg.DagsterInstance.from_config(deployment.env["DAGSTER_HOME"]) as instance:
        for asset in ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAYS)

    # History a user can read: each day's figures as numbers, and on each run what answered it.
    materializations = deployment.graphql(HISTORY, partitions=DAYS)["assetOrError"]["assetMaterializations"]
    assert sorted(m["partition"] for m in materializations) == DAYS
    for materialization in materializations:
        kinds = {entry["label"]: entry["__typename"] for entry in materialization["metadataEntries"]}
        assert {label: kinds.get(label) for label in PLOTTED} == PLOTTED
    identity = DifyResource(base_url=pipeline_env["DIFY_BASE_URL"], api_key=DIFY_KEY).app_identity()
    for run in runs:
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        assert tags["dify/app"] == identity
        assert tags["dify/cache_version"] == "v1" and tags["dify/app_mode"] == "workflow"
        assert tags["dify/workflow_ids"] == dify_emulator.config.apps[0].workflow_id
        assert DIFY_KEY not in str(tags)

    # The runs were in progress together, the Dify steps one after the other: the pool did the limiting.
    run_overlap = overlapping([(run["startTime"], run["endTime"]) for run in runs])
    dify_steps = [(step["startTime"], step["endTime"]) for run in runs for step in run["stepStats"]
                  if step["stepKey"] == "enriched_tickets"]
    assert run_overlap >= 2 and len(dify_steps) == len(DAYS) and overlapping(dify_steps) == 1

    # What Dify saw, by its own count: never more runs at once, or in any 60 s, than the budget.
    server = dify_emulator.stats()
    busiest_minute = max_runs_in_window(server["run_arrivals"], 60)
    print(f"\nbackfill of {len(DAYS)} days in {elapsed:.0f} s: {server['paid_runs']} paid runs, "
          f"{run_overlap} runs at once; "
          f"Dify server: max {server['max_active_runs']} concurrent (budget {BUDGET_CONCURRENCY}), "
          f"max {busiest_minute} runs in a 60 s window (budget {BUDGET_PER_MINUTE})")
    assert server["paid_runs"] > BUDGET_PER_MINUTE  # enough work that an excess in some minute would show
    assert server["max_active_runs"] <= BUDGET_CONCURRENCY
    assert busiest_minute <= BUDGET_PER_MINUTE
    assert server["rejected_concurrency"] == server["rejected_rate_limit"] == 0
