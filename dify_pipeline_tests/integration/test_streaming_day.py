"""A day is streamed, not held: the client takes its requests a few ahead of the calls in flight, and a pinned day
sends one at a time from the same stream until pinned."""

from __future__ import annotations

from dify_pipeline.resources.dify import DifyRequest
from dify_pipeline_tests.integration.test_dify_resource import client, configure


def counted_requests(count: int, taken: list[int], answered: list[int], ahead: list[int]):
    for i in range(count):
        taken[0] += 1
        ahead[0] = max(ahead[0], taken[0] - answered[0])
        yield DifyRequest(f"ticket-{i}", {"subject": f"ticket {i}", "body": f"body {i}"})


def test_run_all_takes_a_generator_lazily_a_bounded_number_ahead_of_the_answers(dify_emulator):
    configure(dify_emulator, latency_ms=2)
    taken, answered, ahead = [0], [0], [0]
    resource = client(dify_emulator, max_concurrency=2)
    resource.run_all(counted_requests(300, taken, answered, ahead),
                     lambda result: answered.__setitem__(0, answered[0] + 1))
    assert taken[0] == answered[0] == 300
    assert ahead[0] <= 2 * 4 + 1  # the workers' requests in flight, never the day


def test_a_pinned_day_sends_one_at_a_time_from_the_stream_then_the_rest_at_that_version(dify_emulator):
    configure(dify_emulator, latency_ms=2)
    taken, answered, ahead = [0], [0], [0]
    pinned: list[str] = []
    results = []
    resource = client(dify_emulator, max_concurrency=2)
    resource.run_all(counted_requests(50, taken, answered, ahead),
                     lambda result: (results.append(result), answered.__setitem__(0, answered[0] + 1)),
                     pin=lambda workflow_id: pinned.append(workflow_id) or workflow_id)
    assert len(results) == 50 == len({r.record_key for r in results}) and len(pinned) == 1
    assert {r.workflow_id for r in results} == set(pinned)
    assert ahead[0] <= 2 * 4 + 1
