"""A progress line for long days: done / total, rate, ETA and errors so far, at most every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    def __init__(self, total: int, every_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.every_seconds = every_seconds
        self._clock = clock
        self._started = clock()
        self._last_report = self._started

    def record(self, succeeded: bool) -> str | None:
        """Count one finished record; returns a line to log when one is due."""
        self.done += 1
        self.failed += 0 if succeeded else 1
        now = self._clock()
        if now - self._last_report < self.every_seconds and self.done < self.total:
            return None
        self._last_report = now
        return self.line(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or self._clock()) - self._started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (
            f"{self.done}/{self.total} records ({self.done / max(self.total, 1):.0%}), {rate:.1f}/s, "
            f"ETA {eta:.0f}s, {self.failed} failed so far"
        )
