"""Admission control for calls to Dify: concurrency that adapts, a requests-per-minute pace, global cool-downs.

Written here rather than taken from a library because the three interact: a throttled answer lowers the
concurrency limit *and* can pause everyone, and the pace must hold across pauses.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

MAX_PATIENCE = 64
# The server counts arrivals, not our starts: network delays that vary by up to this much cannot squeeze more
# than the limit into its 60 s (it costs 1/61 of the rate).
WINDOW_MARGIN_SECONDS = 1.0


class RequestGate:
    """`await gate.acquire()` before every HTTP attempt, `await gate.release(...)` after it.

    - at most `limit` attempts in flight; `limit` starts at `max_concurrency`, drops by one for every
      throttled answer (each one means we were one over the server's limit) and grows by one after
      `limit × patience` successes in a row, up to `max_concurrency`, so we find the limit again when the
      server frees up. A throttle doubles `patience` (a probe that failed is not repeated at once: each
      costs a rejected attempt), a probe that holds halves it;
    - starts are paced `60 / requests_per_minute` seconds apart, and no `60 + WINDOW_MARGIN_SECONDS` window of
      actual starts holds more than the limit (a late timer must not let the next starts catch up), so no 60 s
      window at the server holds more either;
    - `pause(seconds)` holds every new start until the cool-down ends (Retry-After, gateway 429s).
    """

    def __init__(
        self,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.limit = max_concurrency
        self.adaptive = adaptive
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._recent_starts: collections.deque[float] = collections.deque(maxlen=int(requests_per_minute or 0))
        self._clock = clock
        self._sleep = sleep
        self._active = 0
        self._next_start = 0.0
        self._paused_until = 0.0
        self._successes_in_a_row = 0
        self.patience = 1
        self._probing = False  # the limit was raised and no throttle has answered since
        self._changed = asyncio.Condition()

    @property
    def active(self) -> int:
        return self._active

    def pause(self, seconds: float) -> None:
        """Hold all new starts for `seconds` from now (the longest pause asked for wins)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self) -> None:
        async with self._changed:
            try:
                await self._changed.wait_for(lambda: self._active < self.limit)
            except asyncio.CancelledError:  # we may have been the one woken for a free slot: pass it on
                self._changed.notify(max(0, self.limit - self._active))
                raise
            self._active += 1
        try:
            await self._wait_for_start_time()
        except BaseException:
            await self._release()
            raise

    async def _wait_for_start_time(self) -> None:
        while True:
            now = self._clock()
            if now < self._paused_until:
                await self._sleep(self._paused_until - now)
                continue
            start = max(now, self._next_start, self._window_opens())
            if start > now:
                self._next_start = start + self.interval  # reserve the slot before sleeping: waiters queue up
                await self._sleep(start - now)
                if self._clock() < self._paused_until:  # a pause began while we waited: do not send
                    continue
                if self._clock() < self._window_opens():  # others took the window's last starts meanwhile
                    continue
            else:
                self._next_start = now + self.interval
            if self._recent_starts.maxlen:
                self._recent_starts.append(self._clock())
            return

    def _window_opens(self) -> float:
        """When the window of the last `requests_per_minute` actual starts lets one more in."""
        if not self._recent_starts.maxlen or len(self._recent_starts) < self._recent_starts.maxlen:
            return 0.0
        return self._recent_starts[0] + 60.0 + WINDOW_MARGIN_SECONDS

    async def release(self, throttled: bool = False, succeeded: bool = False) -> None:
        if self.adaptive:
            if throttled:
                self.limit = max(1, self.limit - 1)
                self._successes_in_a_row = 0
                self.patience = min(self.patience * 2, MAX_PATIENCE)
                self._probing = False
            elif succeeded:
                self._successes_in_a_row += 1
                if self._successes_in_a_row >= self.limit * self.patience and self.limit < self.max_concurrency:
                    if self._probing:  # the previous raise held: probe sooner
                        self.patience = max(1, self.patience // 2)
                    self.limit += 1
                    self._successes_in_a_row = 0
                    self._probing = True
        await self._release()

    async def _release(self) -> None:
        async with self._changed:
            self._active -= 1
            # Wake only as many waiters as there are free slots: notify_all would wake every worker per call.
            self._changed.notify(max(0, self.limit - self._active))
