"""Shared by the benchmarks: an emulator in its own process, CPU and memory of this one, a result line."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass


@contextmanager
def emulator_process(module: str, config: dict | None = None, url_prefix: str = "="):
    """Run `python -m <module>` on a free loopback port; yields its URL. Its CPU is not ours."""
    with emulator(module, config) as running:
        yield running.url


@dataclass
class Emulator:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """The emulator process's CPU time so far (user + system): what it costs the machine's cores."""
        return process_cpu_seconds(self.pid)


@contextmanager
def emulator(module: str, config: dict | None = None):
    """As `emulator_process`, yielding its URL and its process (for its CPU time)."""
    args = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"]
    if config is not None:
        args += ["--config", json.dumps(config)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline().strip()
        if "=" not in line:
            raise RuntimeError(f"{module} did not start: {line!r}")
        yield Emulator(line.split("=", 1)[1], process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """This process's CPU time so far, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Usage:
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float

    @property
    def cpu_cores(self) -> float:
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0


@contextmanager
def measured():
    """Wall time, this process's CPU time (user + system) and its peak resident memory (over its whole life)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    usage = Usage(0.0, 0.0, 0.0)
    yield usage
    after = resource.getrusage(resource.RUSAGE_SELF)
    usage.wall_seconds = time.perf_counter() - started
    usage.cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    usage.peak_rss_mb = peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: that one survives exec, so a
    process started by a parent holding a big day would report the parent's size as its own peak."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def report(name: str, figures: dict, ratio: float, bound: float, passed: bool) -> None:
    shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
    print(f"{name}: {shown} | ratio {ratio:.3f} (bound {bound}) {'OK' if passed else 'BELOW BOUND'}", flush=True)
