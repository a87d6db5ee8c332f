"""Judging whether a run holding a pool slot is dead: only from its own machine, and never by a reused pid."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from dify_pipeline.pool_slots import RUN_HOST_TAG, _process_alive, judge_run, this_host


def report_run_start(instance: dg.DagsterInstance, run_id: str, pid: int) -> None:
    """The event a run's process writes first, as if written by process `pid`."""
    event = dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name="daily_enrichment", pid=pid)
    instance.report_dagster_event(event, run_id)


def test_a_live_process_is_alive_and_an_exited_one_is_not():
    assert _process_alive(os.getpid(), since=time.time())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not _process_alive(child.pid, since=time.time())


def test_a_pid_taken_by_a_younger_process_is_not_the_process_that_wrote_the_event():
    assert not _process_alive(os.getpid(), since=time.time() - 3600 * 24 * 365)  # "written" before this process began


def test_a_run_on_another_machine_is_never_judged_dead_from_here():
    with dg.instance_for_test() as instance:
        run = create_run_for_test(instance, job_name="daily_enrichment", tags={RUN_HOST_TAG: "elsewhere boot ns"})
        report_run_start(instance, run.run_id, pid=999_999_999)
        status, gone, why = judge_run(instance, run.run_id)
        assert not gone and why.startswith("it runs on elsewhere, so it cannot be checked from here")
        assert f"python -m dify_pipeline.pool_slots --free-run {run.run_id}" in why


def test_a_run_of_this_machine_before_it_restarted_is_dead():
    hostname, boot, *rest = this_host().split()
    with dg.instance_for_test() as instance:
        before_restart = " ".join([hostname, "another-boot-id", *rest])
        run = create_run_for_test(instance, job_name="daily_enrichment", tags={RUN_HOST_TAG: before_restart})
        report_run_start(instance, run.run_id, pid=os.getpid())  # a pid that exists again after the restart
        assert judge_run(instance, run.run_id)[1:] == (True, "this machine has restarted since the run started")


def test_a_run_on_this_machine_whose_processes_are_gone_is_dead():
    with dg.instance_for_test() as instance:
        run = create_run_for_test(instance, job_name="daily_enrichment", status=dg.DagsterRunStatus.STARTED,
                                  tags={RUN_HOST_TAG: this_host()})
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        report_run_start(instance, run.run_id, pid=child.pid)
        gone = f"its processes on this machine ({child.pid}) are gone"
        assert judge_run(instance, run.run_id) == ("STARTED", True, gone)
