"""Concurrency pool slots (the `dify` pool) held by runs that died: found, named, and freed without the daemon.

Dagster gives a step's slot back from the process orchestrating its run, and frees the slots of a run that ended
only from the daemon's run monitoring. A run whose process was killed (`kill -9`, OOM) stays STARTED and keeps its
slot, and every later run's `enriched_tickets` waits for it without end, logging "Step blocked" at DEBUG only.
Two ways out, neither needing the webserver or the daemon:

- the code location's executor (`step_processes`): a step waiting for a slot says so at INFO, naming the runs
  that hold or queue for the pool; it frees those whose processes are gone, and it waits without spinning;
- `python -m dify_pipeline.pool_slots [--free] [--free-run RUN_ID]`: lists who holds and who waits for each pool,
  and frees those whose processes are gone (`--free-run`: a run the operator knows is dead, e.g. elsewhere).

A run is judged dead only from the machine it ran on: each run is tagged with its machine when it starts, and the
event log names the pid of each of its processes (the run's, each step's). On that machine, a run none of whose
processes still exist (a pid gone, or now taken by a younger process) is dead. A run elsewhere (another host, a
Kubernetes pod) is never judged from here: there, the launcher and run monitoring end dead runs.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
from dagster._utils.interrupts import check_captured_interrupt  # Dagster's own flag for a termination request

RUN_HOST_TAG = "dify_pipeline/host"
WAIT_POLL_SECONDS = 2.0
WAIT_REPORT_SECONDS = 300.0  # how often a long wait says again who holds the slot


def this_host() -> str:
    """Names the process space this process runs in: host name, boot and (on Linux) pid namespace."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:  # a reboot ends every process of before
            parts.append(boot.read().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))  # containers on one host have pid spaces of their own
    except OSError:
        pass  # no /proc (macOS): the host name alone
    return " ".join(parts)


def _started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat, open("/proc/stat") as system:
            fields = stat.read().rsplit(")", 1)[1].split()
            boot = next(float(line.split()[1]) for line in system if line.startswith("btime"))
    except (OSError, StopIteration, IndexError):
        return None
    if fields[0] == "Z":  # a zombie: it has exited, only its parent has not collected it
        return float("inf")
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _process_alive(pid: int, since: float) -> bool:
    """Whether the process that wrote an event at `since` under `pid` still exists (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process, alive
    started = _started_at(pid)
    return started is None or started <= since + 1.0  # clock ticks and clock steps: a second of slack


@dataclass(frozen=True)
class PoolMember:
    """A run holding or waiting for slots of a pool, and what can be said of its processes from here."""

    run_id: str
    steps: tuple[str, ...]
    holds_slot: bool
    status: str  # the run's status, or "DELETED"
    gone: bool  # its processes are known to be gone: freeing its slots is safe
    why: str

    def describe(self) -> str:
        role = "holding a slot" if self.holds_slot else "queued for a slot"
        return f"run {self.run_id} ({self.status}, {', '.join(self.steps)}, {role}): {self.why}"


def judge_run(instance: dg.DagsterInstance, run_id: str) -> tuple[str, bool, str]:
    """(status, gone, why) of a run holding slots."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return "DELETED", True, "the run was deleted"
    run = record.dagster_run
    status = run.status.value
    if run.is_finished:
        delay = instance.run_monitoring_settings.get("free_slots_after_run_end_seconds") or 0
        ended = record.end_time or 0
        if time.time() >= ended + delay:  # what the daemon's run monitoring does, done without it
            return status, True, f"the run ended ({status}) and Dagster did not give its slots back"
        return status, False, f"the run ended ({status}); its slots are freed {delay} s after its end"
    host, here = run.tags.get(RUN_HOST_TAG, "").split(), this_host().split()
    if host[:1] == here[:1] and len(host) > 1 and len(here) > 1 and host[1] != here[1]:
        return status, True, "this machine has restarted since the run started"
    if host != here:
        where = f"it runs on {host[0]}" if host else "its machine is not recorded (not this code location's executor)"
        return status, False, (f"{where}, so it cannot be checked from here; if it is dead: "
                               f"python -m dify_pipeline.pool_slots --free-run {run_id}")
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_START}).records
    processes = {(r.event_log_entry.dagster_event.pid, r.event_log_entry.timestamp) for r in records
                 if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.pid}
    if not processes:
        return status, False, "it is starting on this machine"
    alive = sorted({pid for pid, since in processes if _process_alive(pid, since)})
    if alive:
        pids = ", ".join(map(str, alive))
        return status, False, (f"its processes {pids} are running" if len(alive) > 1
                               else f"its process {pids} is running")
    pids = ", ".join(str(pid) for pid in sorted({pid for pid, _ in processes}))
    return status, True, f"its processes on this machine ({pids}) are gone"


def pool_members(instance: dg.DagsterInstance, pool: str, exclude: str | None = None) -> list[PoolMember]:
    """The runs holding or queued for `pool`'s slots (but `exclude`), judged."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    steps: dict[str, list[str]] = {}
    holding = {slot.run_id for slot in info.claimed_slots}
    for entry in [*info.claimed_slots, *info.pending_steps]:
        if entry.run_id != exclude and entry.step_key not in steps.setdefault(entry.run_id, []):
            steps[entry.run_id].append(entry.step_key)
    members = []
    for run_id, keys in steps.items():
        status, gone, why = judge_run(instance, run_id)
        members.append(PoolMember(run_id, tuple(keys), run_id in holding, status, gone, why))
    return members


def free_run(instance: dg.DagsterInstance, run_id: str, reason: str) -> None:
    """End a dead run (failed, with `reason`) if it has not ended, and give back all its pool slots."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, f"dify_pipeline.pool_slots: {reason}; marked failed to free its pool slots")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def free_dead_members(instance: dg.DagsterInstance, pool: str, exclude: str | None = None) -> list[str]:
    """Free the slots of every run in `pool` whose processes are gone; returns what was done, one line each."""
    freed = []
    for member in pool_members(instance, pool, exclude):
        if member.gone:
            free_run(instance, member.run_id, member.why)
            ended = "" if member.status in ("SUCCESS", "FAILURE", "CANCELED", "DELETED") else "; it is marked failed"
            freed.append(f"freed the slots of run {member.run_id} in the pool {pool} ({member.why}){ended}")
    return freed


# -- the code location's executor -------------------------------------------------------------------------------

def _blocked_pool(event: dg.DagsterEvent) -> str | None:
    """The pool named by Dagster's "Step blocked by limit for pool ..." event, if that is what `event` is."""
    if event.event_type != dg.DagsterEventType.ENGINE_EVENT or not event.step_key:
        return None
    pool = event.engine_event_data.metadata.get("pool")
    return getattr(pool, "pool", None)


_STEP_ENDS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE,
              dg.DagsterEventType.STEP_UP_FOR_RETRY, dg.DagsterEventType.STEP_SKIPPED}


class PoolWaitingExecutor(dg.Executor):
    """Dagster's multiprocess executor, which also reports and clears what a step waits for in a pool.

    When Dagster says a step is blocked by a pool's limit, this logs at INFO which runs hold or queue for the
    slots, frees those whose processes are gone (see the module's docstring) and, if no other step of the run
    is in progress, waits here, polling the pool every few seconds, until the slot is the step's: the
    multiprocess executor would otherwise loop without sleeping for as long as the wait lasts (a core per run).
    """

    def __init__(self, multiprocess: dg.Executor) -> None:
        self._multiprocess = multiprocess

    @property
    def retries(self):
        return self._multiprocess.retries

    @property
    def step_dependency_config(self):
        return self._multiprocess.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        instance, run_id = plan_context.instance, plan_context.run_id
        instance.add_run_tags(run_id, {RUN_HOST_TAG: this_host()})
        in_progress: set[str] = set()
        for event in self._multiprocess.execute(plan_context, execution_plan):
            yield event
            if event.event_type == dg.DagsterEventType.STEP_START:
                in_progress.add(event.step_key)
            elif event.event_type in _STEP_ENDS:
                in_progress.discard(event.step_key)
            pool = _blocked_pool(event)
            if pool and instance.event_log_storage.supports_global_concurrency_limits:
                log = plan_context.for_step(execution_plan.get_step_by_key(event.step_key)).log
                _report_and_clear(instance, log, pool, event.step_key, run_id, wait=not in_progress)


def _report_and_clear(instance, log, pool: str, step_key: str, run_id: str, wait: bool) -> None:
    log.info(_waiting_line(instance, pool, step_key, run_id))
    reported = time.monotonic()
    while True:
        for line in free_dead_members(instance, pool, exclude=run_id):
            log.info(line)
        if not wait or not _still_waiting(instance, pool, run_id, step_key) or check_captured_interrupt():
            return
        time.sleep(WAIT_POLL_SECONDS)
        if time.monotonic() - reported >= WAIT_REPORT_SECONDS:
            log.info(_waiting_line(instance, pool, step_key, run_id))
            reported = time.monotonic()


def _waiting_line(instance, pool: str, step_key: str, run_id: str) -> str:
    limit = instance.event_log_storage.get_concurrency_info(pool).limit
    members = "; ".join(m.describe() for m in pool_members(instance, pool, exclude=run_id)) or "no other run"
    return f"{step_key} waits for a slot of the pool {pool} (limit {limit}): {members}"


def _still_waiting(instance, pool: str, run_id: str, step_key: str) -> bool:
    """True while the step's claim would still be refused: not assigned a slot, and none is free."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    if info.limit is None or len(info.claimed_slots) < info.slot_count:
        return False
    mine = [p for p in info.pending_steps if p.run_id == run_id and p.step_key == step_key]
    return bool(mine) and mine[0].assigned_timestamp is None


@dg.executor(
    name="multiprocess",
    config_schema=dg.multiprocess_executor.config_schema,
    requirements=dg.multiple_process_executor_requirements(),
)
def pool_waiting_multiprocess_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's multiprocess executor (same configuration), wrapped in PoolWaitingExecutor."""
    return PoolWaitingExecutor(dg.multiprocess_executor.executor_creation_fn(init_context))


# -- the command --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """`python -m dify_pipeline.pool_slots`: who holds and who waits for each pool's slots, on $DAGSTER_HOME's
    instance; `--free` frees the slots of runs whose processes are gone, `--free-run RUN_ID` those of a run
    you know is dead (it is marked failed)."""
    parser = argparse.ArgumentParser(prog="python -m dify_pipeline.pool_slots", description=main.__doc__)
    parser.add_argument("--free", action="store_true", help="free the slots of runs whose processes are gone")
    parser.add_argument("--free-run", action="append", default=[], metavar="RUN_ID",
                        help="mark this run failed (if it has not ended) and free its slots; repeatable")
    parser.add_argument("--pool", action="append", default=None, help="only this pool (default: every pool)")
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            print("this instance keeps no pool slots (its storage does not support concurrency pools)")
            return 0
        for run_id in args.free_run:
            free_run(instance, run_id, "given to --free-run")
            print(f"freed the pool slots of run {run_id}")
        for pool in args.pool or sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(pool)
            print(f"pool {pool}: limit {info.limit}, {len(info.claimed_slots)} slot(s) held")
            for member in pool_members(instance, pool):
                print(f"  {member.describe()}")
            if args.free:
                for line in free_dead_members(instance, pool):
                    print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
