"""The client's one backoff policy: doubling ceilings with jitter, capped, a Retry-After a floor."""

from __future__ import annotations

import random

from dify_pipeline.resources.dify.backoff import Backoff


def test_the_ceiling_doubles_from_the_initial_wait_up_to_the_maximum():
    policy = Backoff(1.0, 10.0, random.Random(0))
    assert [policy.ceiling(step) for step in (1, 2, 3, 4, 5, 100)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_each_wait_is_jittered_in_the_upper_half_of_its_ceiling():
    policy = Backoff(1.0, 60.0, random.Random(0))
    waits = [policy.delay(3) for _ in range(200)]
    assert all(2.0 <= wait <= 4.0 for wait in waits) and len(set(waits)) > 100


def test_a_retry_after_is_a_floor_with_a_little_jitter():
    policy = Backoff(0.05, 0.5, random.Random(0))
    waits = [policy.delay(1, retry_after=5.0) for _ in range(100)]
    assert all(5.0 <= wait <= 5.5 for wait in waits)
