"""A run SIGKILLed in the middle of inference; the next materialization finishes the day and pays for
nothing twice. Proven from the Dify emulator's own record of what it received."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
import sqlalchemy as sa
from elasticsearch import Elasticsearch

from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline_dev.emulators.elasticsearch import ElasticsearchEmulatorConfig
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY, materialization_metadata, run_day

RUN_IN_A_PROCESS_OF_ITS_OWN = f"""
from dagster import DagsterInstance
from dify_pipeline.definitions import build_definitions
with DagsterInstance.get() as instance:
    build_definitions().resolve_job_def("daily_enrichment").execute_in_process(partition_key="{DAY}", instance=instance)
"""


def journal_state(env) -> tuple[set[str], set[str]]:
    """What the killed run had committed: answered cache keys, and keys with an attempt but no answer."""
    engine = sa.create_engine(env["RESULT_CACHE_URL"])
    with engine.connect() as connection:
        answered = set(connection.execute(sa.text("SELECT cache_key FROM dify_results")).scalars())
        attempted = set(connection.execute(sa.text("SELECT cache_key FROM dify_attempts")).scalars())
    engine.dispose()
    return answered, attempted - answered


def kill_the_day_once_paid(dify_emulator, dagster_instance, paid_runs: int, poll_seconds: float) -> None:
    """Run the day in a process of its own, kill -9 it once Dify has been paid `paid_runs` times, and end the dead
    run as "Terminate" in the UI (or run monitoring) does: its `dify` pool slot is freed."""
    process = subprocess.Popen([sys.executable, "-c", RUN_IN_A_PROCESS_OF_ITS_OWN], env=dict(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while dify_emulator.stats()["paid_runs"] < paid_runs:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "inference never got going"
        time.sleep(poll_seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for run in dagster_instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        dagster_instance.report_run_canceled(run)
        dagster_instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_a_run_killed_during_inference_resumes_without_paying_twice_and_loses_nothing(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch, response_mode
):
    """kill -9 with runs in flight: 16 of 3,100 (blocking) and 9 of 16 (streaming) were paid again (issue 10).

    Every attempt is journaled before it is sent, under a `user` naming the record; the next run looks those
    runs up in Dify (also the ones the server accepted from its backlog after the client died)."""
    monkeypatch.setenv("DIFY_RESPONSE_MODE", response_mode)
    monkeypatch.setenv("DIFY_MAX_CONCURRENCY", "8")
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=150, ping_interval=0.05,
                                               server_worker_connections=4))
    dify_emulator.reset()

    kill_the_day_once_paid(dify_emulator, dagster_instance, paid_runs=60, poll_seconds=0.02)
    answered, in_flight = journal_state(pipeline_env)
    assert in_flight  # runs were in flight when the process died

    result = run_day(dagster_instance)
    assert result.success
    enriched = materialization_metadata(result, "enriched_tickets")
    clean = materialization_metadata(result, "clean_tickets")
    stats = dify_emulator.stats()
    # Nothing lost: every clean record has its answer; nothing paid twice: one run per distinct input.
    assert enriched["rows"] == clean["rows"] and enriched["failed"] == 0
    assert stats["paid_runs"] == stats["distinct_inputs"], {k: n for k, n in stats["runs_by_input"].items() if n > 1}
    assert enriched["resumed_runs"] >= 1  # in-flight runs were fetched, not re-run


def test_a_run_killed_while_loading_leaves_no_duplicates_after_the_next_run(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, es_emulator
):
    es_emulator.configure(ElasticsearchEmulatorConfig(bulk_latency_ms=3000))  # the load is under way for 3 s
    process = subprocess.Popen([sys.executable, "-c", RUN_IN_A_PROCESS_OF_ITS_OWN], env=dict(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not es_emulator.stats()["bulk_in_flight"]:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "loading never started"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # in the middle of the load
    process.wait()
    paid = dify_emulator.stats()["paid_runs"]
    es_emulator.configure(ElasticsearchEmulatorConfig())

    result = run_day(dagster_instance)
    assert result.success
    clean_rows = materialization_metadata(result, "clean_tickets")["rows"]
    assert materialization_metadata(result, "enriched_tickets")["requests_sent"] == 0
    assert dify_emulator.stats()["paid_runs"] == paid  # the answers were all in the cache
    assert materialization_metadata(result, "tickets_parquet")["rows"] == clean_rows
    client = Elasticsearch(pipeline_env["ELASTICSEARCH_URL"])
    client.indices.refresh(index=pipeline_env["ELASTICSEARCH_INDEX"])
    assert client.count(index=pipeline_env["ELASTICSEARCH_INDEX"])["count"] == clean_rows

