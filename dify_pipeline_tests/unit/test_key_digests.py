"""Cache keys and record keys counted by digest: exact where it matters, a few bytes per key."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa

from dify_pipeline.infer import key_digests
from dify_pipeline.infer.key_digests import KeyDigests, digests, duplicate_keys


def batches(keys: list[str], size: int = 1000):
    return lambda: (pa.array(keys[start:start + size]) for start in range(0, len(keys), size))


def test_duplicate_keys_counts_each_repeat_of_a_key():
    keys = ["a", "b", "a", "c", "a", "b"]
    assert duplicate_keys(batches(keys, size=2), len(keys)) == 3
    assert duplicate_keys(batches(["a", "b"]), 2) == 0


def test_two_keys_sharing_a_digest_are_not_a_duplicate(monkeypatch):
    monkeypatch.setattr(key_digests, "digests", lambda keys: np.zeros(len(list(keys)), dtype=np.uint64))
    assert duplicate_keys(batches(["a", "b", "c"]), 3) == 0
    assert duplicate_keys(batches(["a", "b", "a"]), 3) == 1


def test_duplicate_keys_holds_a_few_bytes_per_key_not_the_column():
    def peak_for(count: int) -> int:
        keys = [f"record-{i:040d}" for i in range(count)]
        tracemalloc.start()
        assert duplicate_keys(batches(keys), count) == 0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak

    small, large = peak_for(5_000), peak_for(50_000)
    assert large - small < 45_000 * 24  # the digests (8 bytes each, sorted once): not the keys' ~90 bytes each


def test_key_digests_hold_and_merge_keys():
    held = KeyDigests()
    held.add(digests(["a", "b"]))
    held.add(digests(["b", "c", "c"]))
    assert len(held) == 3 and "c" in held and "d" not in held
    assert len(held.difference(KeyDigests.of(["a"]))) == 2 and len(held.union(KeyDigests.of(["d"]))) == 4


def test_key_digests_answer_many_keys_at_once_and_an_empty_set_without_hashing(monkeypatch):
    held = KeyDigests.of(["a", "b"])
    assert held.contains_keys(["b", "x", "a", "b"]) == {"a", "b"}
    assert held.contains_keys([]) == set()
    monkeypatch.setattr("dify_pipeline.infer.key_digests.digests", lambda keys: 1 / 0)
    assert "a" not in KeyDigests() and KeyDigests().contains_keys(["a"]) == set()
