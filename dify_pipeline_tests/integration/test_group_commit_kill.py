"""A run SIGKILLed while answers are being committed in groups, at a rate where a group holds many answers:
no answer the cache had acknowledged (committed) is paid again, and the answers of the open group are not lost
either: their attempts are still in the run journal, so the next run looks them up instead of paying. Proven
from the Dify emulator's own counters."""

from __future__ import annotations

import pytest

from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline_tests.integration.pipeline import DIFY_KEY, materialization_metadata, run_day
from dify_pipeline_tests.integration.test_crash_resume import journal_state, kill_the_day_once_paid

CONCURRENCY = 16


@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_a_kill_during_group_commits_pays_nothing_twice(
    pipeline_env, source_tickets, dagster_instance, dify_emulator, monkeypatch, response_mode
):
    monkeypatch.setenv("DIFY_RESPONSE_MODE", response_mode)
    monkeypatch.setenv("DIFY_MAX_CONCURRENCY", str(CONCURRENCY))
    dify_emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=20, ping_interval=0.05))
    dify_emulator.reset()

    kill_the_day_once_paid(dify_emulator, dagster_instance, paid_runs=150, poll_seconds=0.005)
    acknowledged, unacknowledged = journal_state(pipeline_env)
    paid_before_kill = dify_emulator.stats()["paid_runs"]
    assert acknowledged, "nothing was committed before the kill"

    result = run_day(dagster_instance)
    assert result.success
    stats = dify_emulator.stats()
    enriched = materialization_metadata(result, "enriched_tickets")
    print(f"{response_mode}: kill -9 after {paid_before_kill} paid runs, {len(acknowledged)} acknowledged, "
          f"{len(unacknowledged)} journaled without an answer; paid runs {stats['paid_runs']} for "
          f"{stats['distinct_inputs']} distinct inputs")
    assert enriched["failed"] == 0
    assert enriched["answered_from_cache"] >= len(acknowledged)  # an acknowledged answer is never paid for again
    assert stats["paid_runs"] == stats["distinct_inputs"], {k: n for k, n in stats["runs_by_input"].items() if n > 1}
