"""RequestGate on virtual time: the gate's clock and sleep are fakes, so minutes pass in microseconds."""

import asyncio
import heapq

import pytest

from dify_pipeline.resources.dify.gate import MAX_PATIENCE, RequestGate
from dify_pipeline_dev.emulators.dify import max_runs_in_window  # the server's own count of a window

EPSILON = 1e-9


class VirtualTime:
    """A clock plus a sleep that only returns when `run` moves the clock to its wake-up time.

    `run` lets every task go as far as it can, then jumps to the earliest pending wake-up, one sleeper at a time.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list = []
        self._order = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), self._order, wake))
        self._order += 1
        await wake

    async def run(self, *coroutines):
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while True:
            await self._settle()
            if all(t.done() for t in tasks):
                return [t.result() for t in tasks]
            if not self._sleepers:
                raise AssertionError("tasks are blocked and no timer is pending: the gate deadlocked")
            when, _, wake = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            if not wake.done():
                wake.set_result(None)

    @staticmethod
    async def _settle() -> None:
        for _ in range(50):
            await asyncio.sleep(0)


class Recorder:
    """Runs attempts through the gate and records when each one started and how many were in flight."""

    def __init__(self, gate: RequestGate, time: VirtualTime) -> None:
        self.gate, self.time = gate, time
        self.starts: list[float] = []
        self.in_flight = 0
        self.peak = 0

    async def attempt(self, hold: float = 0.0, **release) -> None:
        await self.gate.acquire()
        self.starts.append(self.time.now)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if hold:
            await self.time.sleep(hold)
        self.in_flight -= 1
        await self.gate.release(**release)


def run_gate(scenario, **gate_options):
    """Build a gate on virtual time inside an event loop and run `scenario(gate, time, recorder)`."""

    async def main():
        time = VirtualTime()
        gate = RequestGate(clock=time.clock, sleep=time.sleep, **gate_options)
        recorder = Recorder(gate, time)
        await scenario(gate, time, recorder)
        return gate, time, recorder

    return asyncio.run(main())


async def admitted(gate: RequestGate) -> None:
    """Acquire a slot that is free now (no pace, no pause): waiting would mean the gate shut for good."""
    await asyncio.wait_for(gate.acquire(), timeout=1.0)


async def throttle(gate: RequestGate, times: int = 1) -> None:
    for _ in range(times):
        await admitted(gate)
        await gate.release(throttled=True)


async def succeed(gate: RequestGate, times: int = 1) -> None:
    for _ in range(times):
        await admitted(gate)
        await gate.release(succeeded=True)


# -- requests per minute ---------------------------------------------------------------------------


def test_starts_are_at_least_sixty_over_rpm_seconds_apart():
    async def scenario(gate, time, recorder):
        await time.run(*(recorder.attempt() for _ in range(8)))

    _, _, recorder = run_gate(scenario, max_concurrency=10, requests_per_minute=120)
    starts = sorted(recorder.starts)
    assert len(starts) == 8
    assert starts[0] == 0.0
    assert all(later - earlier >= 0.5 - EPSILON for earlier, later in zip(starts, starts[1:]))
    assert starts[-1] <= 7 * 0.5 + EPSILON  # paced, not slowed down further


def test_no_sixty_second_window_holds_more_starts_than_the_rpm():
    async def scenario(gate, time, recorder):
        await time.run(*(recorder.attempt(hold=0.2) for _ in range(35)))

    _, _, recorder = run_gate(scenario, max_concurrency=5, requests_per_minute=10)
    starts = sorted(recorder.starts)
    per_window = [sum(1 for s in starts if begin <= s < begin + 60.0) for begin in starts]
    assert max(per_window) == 10


class LateWakingTime(VirtualTime):
    """Virtual time whose sleeps return up to 60 ms late, as a loaded event loop's timers do."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._random = __import__("random").Random(seed)

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self._random.uniform(0.0, 0.06))



@pytest.mark.parametrize("seed", range(3))
def test_no_sixty_second_window_at_the_server_holds_more_than_the_rpm_despite_late_timers_and_jitter(seed):
    """Issue 16: with DIFY_REQUESTS_PER_MINUTE=3000 the server counted 3,003-3,030 runs in its busiest 60 s."""
    network = __import__("random").Random(seed + 100)

    async def main():
        time = LateWakingTime(seed)
        gate = RequestGate(50, requests_per_minute=120, clock=time.clock, sleep=time.sleep)
        recorder = Recorder(gate, time)
        await time.run(*(recorder.attempt(hold=0.1) for _ in range(400)))
        return recorder

    recorder = asyncio.run(main())
    arrivals = [start + network.uniform(0.0, 0.5) for start in recorder.starts]  # a varying network delay
    assert max_runs_in_window(arrivals) <= 120
    assert (max(recorder.starts) - min(recorder.starts)) <= 400 / 120 * 60 * 1.03  # the pace itself holds


def test_without_rpm_every_start_is_immediate():
    async def scenario(gate, time, recorder):
        await time.run(*(recorder.attempt() for _ in range(5)))

    _, _, recorder = run_gate(scenario, max_concurrency=5)
    assert recorder.starts == [0.0] * 5


# -- concurrency -----------------------------------------------------------------------------------


def test_attempts_in_flight_never_exceed_the_limit():
    async def scenario(gate, time, recorder):
        await time.run(*(recorder.attempt(hold=1.0) for _ in range(10)))

    gate, time, recorder = run_gate(scenario, max_concurrency=3)
    assert recorder.peak == 3
    assert time.now == 4.0  # ceil(10 / 3) rounds of one second
    assert gate.active == 0


def test_throttled_answer_lowers_the_limit_by_one():
    async def scenario(gate, time, recorder):
        await throttle(gate)

    gate, _, _ = run_gate(scenario, max_concurrency=4)
    assert gate.limit == 3


def test_limit_never_drops_below_one():
    async def scenario(gate, time, recorder):
        await throttle(gate, times=10)

    gate, _, _ = run_gate(scenario, max_concurrency=4)
    assert gate.limit == 1


def test_lowered_limit_holds_back_new_starts():
    async def scenario(gate, time, recorder):
        await throttle(gate, times=2)
        await time.run(*(recorder.attempt(hold=1.0) for _ in range(4)))

    gate, _, recorder = run_gate(scenario, max_concurrency=3, adaptive=True)
    assert gate.limit == 1
    assert recorder.peak == 1
    assert sorted(recorder.starts) == [0.0, 1.0, 2.0, 3.0]


def test_limit_grows_by_one_after_limit_successes_in_a_row_while_nothing_was_throttled():
    async def scenario(gate, time, recorder):
        gate.limit = 2  # as if lowered by hand: no throttle, so patience is still 1
        await succeed(gate)
        assert gate.limit == 2
        await succeed(gate)
        assert gate.limit == 3
        await succeed(gate, times=2)
        assert gate.limit == 3
        await succeed(gate)
        assert gate.limit == 4

    run_gate(scenario, max_concurrency=4)


def test_after_throttles_the_limit_grows_only_after_limit_times_patience_successes():
    async def scenario(gate, time, recorder):
        await throttle(gate, times=2)  # limit 4 -> 2, patience 1 -> 4
        assert (gate.limit, gate.patience) == (2, 4)
        await succeed(gate, times=7)
        assert gate.limit == 2
        await succeed(gate)
        assert gate.limit == 3

    run_gate(scenario, max_concurrency=4)


def test_a_raise_that_holds_halves_the_patience_for_the_next_one():
    async def scenario(gate, time, recorder):
        await throttle(gate, times=2)  # limit 2, patience 4
        await succeed(gate, times=8)  # first probe: limit 3
        assert (gate.limit, gate.patience) == (3, 4)
        await succeed(gate, times=11)
        assert gate.limit == 3
        await succeed(gate)  # 3 x 4 successes and no throttle since the probe: limit 4, patience halved
        assert (gate.limit, gate.patience) == (4, 2)

    run_gate(scenario, max_concurrency=4)


def test_patience_doubles_with_every_throttle_up_to_its_cap():
    async def scenario(gate, time, recorder):
        await throttle(gate)
        assert gate.patience == 2
        await throttle(gate)
        assert gate.patience == 4
        await throttle(gate, times=20)
        assert gate.patience == MAX_PATIENCE

    run_gate(scenario, max_concurrency=4)


def test_limit_never_grows_past_max_concurrency():
    async def scenario(gate, time, recorder):
        await throttle(gate)
        await succeed(gate, times=500)

    gate, _, _ = run_gate(scenario, max_concurrency=4)
    assert gate.limit == 4


def test_a_throttle_restarts_the_count_of_successes():
    async def scenario(gate, time, recorder):
        await throttle(gate)  # limit 3, patience 2: a raise needs 6 successes in a row
        await succeed(gate, times=5)
        await throttle(gate)  # limit 2, patience 4: now 8, and the 5 before no longer count
        await succeed(gate, times=7)
        assert gate.limit == 2
        await succeed(gate)
        assert gate.limit == 3

    run_gate(scenario, max_concurrency=4)


def test_failures_that_are_not_throttles_leave_the_limit_alone():
    async def scenario(gate, time, recorder):
        await throttle(gate)
        for _ in range(10):
            await admitted(gate)
            await gate.release()

    gate, _, _ = run_gate(scenario, max_concurrency=4)
    assert gate.limit == 3


def test_non_adaptive_gate_keeps_its_limit():
    async def scenario(gate, time, recorder):
        await throttle(gate, times=3)
        await time.run(*(recorder.attempt(hold=1.0) for _ in range(6)))

    gate, _, recorder = run_gate(scenario, max_concurrency=3, adaptive=False)
    assert gate.limit == 3
    assert recorder.peak == 3


def test_max_concurrency_below_one_is_rejected():
    with pytest.raises(ValueError):
        RequestGate(0)


# -- pauses ----------------------------------------------------------------------------------------


def test_pause_holds_every_new_start_until_it_ends():
    async def scenario(gate, time, recorder):
        gate.pause(10.0)
        await time.run(*(recorder.attempt() for _ in range(4)))

    _, _, recorder = run_gate(scenario, max_concurrency=4)
    assert recorder.starts == [10.0] * 4


def test_pause_that_begins_while_a_request_waits_for_its_slot_holds_that_request_too():
    async def pause_later(gate, time):
        await time.sleep(0.5)
        gate.pause(5.0)

    async def scenario(gate, time, recorder):
        await time.run(recorder.attempt(), recorder.attempt(), pause_later(gate, time))

    _, _, recorder = run_gate(scenario, max_concurrency=4, requests_per_minute=60)
    first, second = sorted(recorder.starts)
    assert first == 0.0
    assert second >= 5.5


def test_the_longest_pause_asked_for_wins():
    async def scenario(gate, time, recorder):
        gate.pause(10.0)
        gate.pause(2.0)
        await time.run(recorder.attempt())

    _, _, recorder = run_gate(scenario, max_concurrency=1)
    assert recorder.starts == [10.0]


def test_pace_still_holds_when_a_pause_ends():
    async def scenario(gate, time, recorder):
        gate.pause(5.0)
        await time.run(*(recorder.attempt() for _ in range(3)))

    _, _, recorder = run_gate(scenario, max_concurrency=3, requests_per_minute=60)
    starts = sorted(recorder.starts)
    assert starts[0] >= 5.0
    assert all(later - earlier >= 1.0 - EPSILON for earlier, later in zip(starts, starts[1:]))


def test_request_cancelled_while_waiting_for_its_start_gives_its_slot_back():
    async def scenario(gate, time, recorder):
        await gate.acquire()  # takes the t=0 start; the next one is due at t=1
        await gate.release()
        waiting = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        assert gate.active == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert gate.active == 0

    run_gate(scenario, max_concurrency=2, requests_per_minute=60)


def test_a_waiter_woken_for_a_free_slot_and_then_cancelled_does_not_strand_that_slot():
    async def scenario(gate, time, recorder):
        await admitted(gate)
        first = asyncio.ensure_future(gate.acquire())
        second = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)  # both now wait for the one slot
        await gate.release()  # the slot frees and a waiter is woken for it...
        first.cancel()  # ...but that waiter is cancelled before it can take it
        await asyncio.wait_for(second, timeout=1.0)
        assert gate.active == 1
        with pytest.raises(asyncio.CancelledError):
            await first

    run_gate(scenario, max_concurrency=1)
