"""A run killed while it holds the `dify` pool's slot never blocks the next one: on the project's PostgreSQL
instance, with runs started from the CLI (no webserver, no daemon), as an operator with only a shell would.

The slot is judged from the machine the run ran on: a run whose processes are all gone is ended and its slot
freed, by the next run waiting for it or by `python -m dify_pipeline.pool_slots --free`; a run whose step is
still at work (its CLI killed, its step process orphaned but alive) keeps the slot until that step ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig
from dify_pipeline_tests.integration import services
from dify_pipeline_tests.integration.pipeline import DAY, DIFY_KEY

MATERIALIZE_THE_DAY = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "dify_pipeline.definitions",
                       "--select", "*", "--partition", DAY]


@pytest.fixture
def instance_env(pipeline_env, source_tickets, dify_emulator, tmp_path, monkeypatch):
    """The project's dagster.yaml on a PostgreSQL database of this test; Dify slow enough to kill a run in it."""
    slow_dify(dify_emulator, latency_ms=100)
    database = services.create_postgres_database()
    home = services.dagster_home_on_postgres(tmp_path / "home", database)
    for key, value in home.items():  # this process reads the same instance
        monkeypatch.setenv(key, value)
    env = {**os.environ, **pipeline_env, **home, "DIFY_MAX_CONCURRENCY": "4"}
    yield env
    services.drop_postgres_database(database)


def slow_dify(emulator, latency_ms: float) -> None:
    emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=DIFY_KEY)], latency_ms=latency_ms))
    emulator.reset()


def start_cli(env: dict, log: Path) -> subprocess.Popen:
    """`dagster asset materialize` for the day, in a process group of its own (so all of it can be killed)."""
    return subprocess.Popen(MATERIALIZE_THE_DAY, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def slot_holders(env: dict) -> set[str]:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info("dify").claimed_slots}


def run_status(env: dict, run_id: str) -> dg.DagsterRunStatus:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return instance.get_run_by_id(run_id).status


def kill_while_holding_the_slot(env: dict, dify_emulator, log: Path, whole_group: bool) -> str:
    """Start a run, wait until its enriched_tickets holds the slot and is paying Dify, SIGKILL it; its run id."""
    first = start_cli(env, log)
    wait_until(lambda: dify_emulator.stats()["paid_runs"] >= 8, "the first run to call Dify")
    [holder] = slot_holders(env)
    if whole_group:
        os.killpg(first.pid, signal.SIGKILL)  # the run and its step processes: an OOM kill, a container gone
    else:
        first.send_signal(signal.SIGKILL)  # the CLI only: its step process lives on, orphaned
    first.wait()
    assert run_status(env, holder) == dg.DagsterRunStatus.STARTED  # what Dagster leaves: a run that never ends
    return holder


def pool_slots(env: dict, *args: str) -> str:
    command = subprocess.run([sys.executable, "-m", "dify_pipeline.pool_slots", *args], env=env,
                             capture_output=True, text=True, timeout=120)
    assert command.returncode == 0, command.stderr
    return command.stdout


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_the_next_cli_run_frees_the_slot_of_a_killed_run_and_completes(instance_env, dify_emulator, tmp_path):
    dead = kill_while_holding_the_slot(instance_env, dify_emulator, tmp_path / "first.log", whole_group=True)

    second = subprocess.run(MATERIALIZE_THE_DAY, env=instance_env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    # Said at INFO, naming the run that held the slot and why it could be freed.
    assert (f"enriched_tickets waits for a slot of the pool dify (limit 1): run {dead} (STARTED, enriched_tickets, "
            "holding a slot): its processes on this machine (") in second.stderr
    assert f"freed the slots of run {dead} in the pool dify (its processes on this machine (" in second.stderr
    assert "; it is marked failed" in second.stderr
    assert run_status(instance_env, dead) == dg.DagsterRunStatus.FAILURE
    assert slot_holders(instance_env) == set()
    assert dify_emulator.stats()["max_active_runs"] <= 4  # never two days' budgets at once


def test_a_run_whose_step_outlived_its_cli_keeps_the_slot_until_the_step_ends(instance_env, dify_emulator, tmp_path):
    slow_dify(dify_emulator, latency_ms=1000)  # the orphaned step works on for ~70 s: the second run waits in it
    orphaned = kill_while_holding_the_slot(instance_env, dify_emulator, tmp_path / "first.log", whole_group=False)
    listed = pool_slots(instance_env, "--free")
    assert f"run {orphaned} (STARTED, enriched_tickets, holding a slot): its process " in listed
    assert slot_holders(instance_env) == {orphaned}  # alive: the command leaves it alone

    log = tmp_path / "second.log"
    second = start_cli(instance_env, log)
    wait_until(lambda: "waits for a slot of the pool dify" in log.read_text(), "the second run to wait for the slot")
    assert f"run {orphaned} (STARTED, enriched_tickets, holding a slot): its process " in log.read_text()
    # It waits without spinning (Dagster's own loop takes a core while a step is blocked).
    before, started = cpu_seconds(second.pid), time.monotonic()
    time.sleep(5)
    assert cpu_seconds(second.pid) - before < 0.2 * (time.monotonic() - started)
    assert slot_holders(instance_env) == {orphaned}  # the orphaned step still works inside the budget

    assert second.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert f"freed the slots of run {orphaned} in the pool dify (its processes on this machine (" in log.read_text()
    assert run_status(instance_env, orphaned) == dg.DagsterRunStatus.FAILURE
    assert dify_emulator.stats()["max_active_runs"] <= 4  # the two steps never called Dify at once
    # The orphan finished the day and stored every answer: the second run paid for nothing.
    assert dify_emulator.stats()["paid_runs"] == len({str(r["body"]["inputs"]) for r in dify_emulator.requests()
                                                       if r["path"].startswith("/v1/workflows/")
                                                       and r["path"].endswith("/run")})


def test_the_command_frees_the_slot_of_a_run_whose_processes_are_gone(instance_env, dify_emulator, tmp_path):
    dead = kill_while_holding_the_slot(instance_env, dify_emulator, tmp_path / "first.log", whole_group=True)
    listed = pool_slots(instance_env)
    assert f"run {dead} (STARTED, enriched_tickets, holding a slot): its processes on this machine (" in listed
    assert slot_holders(instance_env) == {dead}  # listing frees nothing

    freed = pool_slots(instance_env, "--free")
    assert f"freed the slots of run {dead} in the pool dify" in freed
    assert slot_holders(instance_env) == set()
    assert run_status(instance_env, dead) == dg.DagsterRunStatus.FAILURE
    assert "pool dify: limit 1, 0 slot(s) held" in pool_slots(instance_env)
