"""A run SIGKILLed in the middle of inference; the next materialization finishes the day and pays for
nothing twice. Proven from the Dify emulator's own record of what it received."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import sqlalchemy as sa
from elasticsearch import Elasticsearch

from dify_pipeline.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline.emulators.elasticsearch import ElasticsearchEmulatorConfig
from dify_pipeline.infer.cache_key import cache_key
from dify_pipeline.resources.dify import DifyResource
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY, materialization_metadata, run_day

RUN_IN_A_PROCESS_OF_ITS_OWN = f"""
from dagster import DagsterInstance
from dify_pipeline.definitions import build_definitions
with DagsterInstance.get() as instance:
    build_definitions().resolve_job_def("daily_enrichment").execute_in_process(partition_key="{DAY}", instance=instance)
"""


def accepted_runs(emulator) -> list[tuple[str, dict, str]]:
    """(canonical inputs, inputs, workflow_run_id) of every run request the emulator accepted, in order."""
    return [(json.dumps(r["body"]["inputs"], sort_keys=True, ensure_ascii=False), r["body"]["inputs"], r["workflow_run_id"])
            for r in emulator.requests() if r["path"].endswith("/workflows/run") and r["status"] == 200]


def cache_state(env) -> tuple[set[str], dict[str, str]]:
    """What the killed run had committed: answered cache keys, and started-but-unanswered key → run id."""
    engine = sa.create_engine(env["RESULT_CACHE_URL"])
    with engine.connect() as connection:
        answered = set(connection.execute(sa.text("SELECT cache_key FROM dify_results")).scalars())
        started = dict(connection.execute(sa.text("SELECT cache_key, run_id FROM dify_started_runs")).all())
    engine.dispose()
    return answered, started


def test_a_run_killed_during_inference_resumes_without_paying_twice_and_loses_nothing(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "streaming")
    monkeypatch.setenv("DIFY_MAX_CONCURRENCY", "8")
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=150, ping_interval=0.05))
    dify_emulator.reset()

    process = subprocess.Popen([sys.executable, "-c", RUN_IN_A_PROCESS_OF_ITS_OWN], env=dict(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while dify_emulator.stats()["paid_runs"] < 120:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "inference never got going"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # What "Terminate" in the UI (or run monitoring) does for a dead run: it ends, its `dify` pool slot is freed.
    for run in dagster_instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        dagster_instance.report_run_canceled(run)
        dagster_instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    time.sleep(0.5)  # requests already on the wire land, the runs in flight finish inside "Dify", as they would
    answered, started = cache_state(pipeline_env)
    before = accepted_runs(dify_emulator)
    assert started  # runs were in flight when the process died
    # The one window left: Dify accepted a run but the killed process had not yet written down its id.
    identity = DifyResource(base_url=dify_emulator.base_url, api_key=DIFY_KEY).app_identity()
    journaled = set(started.values())
    unjournaled = {text for text, inputs, run_id in before
                   if run_id not in journaled and cache_key(identity, "v1", inputs) not in answered}

    result = run_day(dagster_instance)
    assert result.success
    after = [text for text, _, _ in accepted_runs(dify_emulator)[len(before):]]
    enriched = materialization_metadata(result, "enriched_tickets")
    clean = materialization_metadata(result, "clean_tickets")

    # Nothing lost: every clean record has its answer.
    assert enriched["rows"] == clean["rows"] and enriched["failed"] == 0
    # Nothing paid twice: no input answered or journaled before the kill was sent again...
    assert set(after) & {text for text, _, _ in before} == unjournaled
    assert len(unjournaled) <= 8  # at most the runs in flight, in practice zero or one
    assert len(after) == len(set(after))
    assert enriched["resumed_runs"] == len(started)  # ...the in-flight runs were fetched, not re-run
    assert enriched["requests_sent"] == len(after)  # and the figure a user reads counts only what was paid for
    # ...and every distinct input was paid once over both runs, but for that window.
    assert len(before) == len(answered) + len(started) + len(unjournaled)
    assert dify_emulator.stats()["paid_runs"] == len(before) + len(after)


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

