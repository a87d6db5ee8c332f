"""A run SIGKILLed while answers are being committed in groups (blocking mode, where no run id is journaled):
every answer the cache had acknowledged (committed) is never paid again, and what is paid twice is bounded by the
runs in flight plus one uncommitted group. Proven from the Dify emulator's own record of what it received."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg

from dify_pipeline.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline.infer.cache_key import cache_key
from dify_pipeline.resources.dify import DifyResource
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY, materialization_metadata, run_day
from dify_pipeline_tests.integration.test_crash_resume import RUN_IN_A_PROCESS_OF_ITS_OWN, accepted_runs, cache_state

CONCURRENCY = 16


def test_a_kill_during_group_commits_never_pays_again_for_an_acknowledged_answer(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", "blocking")
    monkeypatch.setenv("DIFY_MAX_CONCURRENCY", str(CONCURRENCY))
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=20))
    dify_emulator.reset()

    process = subprocess.Popen([sys.executable, "-c", RUN_IN_A_PROCESS_OF_ITS_OWN], env=dict(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while dify_emulator.stats()["paid_runs"] < 150:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "inference never got going"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for run in dagster_instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        dagster_instance.report_run_canceled(run)
        dagster_instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    time.sleep(0.3)  # runs in flight finish inside "Dify"
    acknowledged, _ = cache_state(pipeline_env)
    before = accepted_runs(dify_emulator)
    assert acknowledged, "nothing was committed before the kill"

    result = run_day(dagster_instance)
    assert result.success
    identity = DifyResource(base_url=dify_emulator.base_url, api_key=DIFY_KEY).app_identity()
    after = accepted_runs(dify_emulator)[len(before):]
    paid_again = {cache_key(identity, "v1", inputs) for _, inputs, _ in after} & {
        cache_key(identity, "v1", inputs) for _, inputs, _ in before}
    assert not paid_again & acknowledged  # an acknowledged answer is never paid for again
    # The window: answers paid before the kill but not yet acknowledged, i.e. in flight or in the open group.
    window = len({text for text, _, _ in before}) - len(acknowledged)
    print(f"kill -9 after {len(before)} paid runs: {len(acknowledged)} acknowledged, {len(paid_again)} paid again "
          f"(in flight or in the uncommitted group)")
    assert len(paid_again) == window <= 2 * CONCURRENCY + 20
    enriched = materialization_metadata(result, "enriched_tickets")
    assert enriched["failed"] == 0 and enriched["requests_sent"] == len(after)
