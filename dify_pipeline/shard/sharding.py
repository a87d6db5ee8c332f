"""Split a day into bounded shards, the same way every time for the same records."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np


def key_hash(record_key: str) -> int:
    """A stable 64-bit hash (Python's hash() is salted per process, so never that)."""
    return int.from_bytes(hashlib.blake2b(record_key.encode(), digest_size=8).digest(), "big")


def key_hashes(record_keys: Iterable[str]) -> np.ndarray:
    """`key_hash` of each key, as uint64."""
    return np.fromiter((key_hash(k) for k in record_keys), dtype=np.uint64)


def assign_shards(record_keys: Sequence[str], max_shard_rows: int) -> np.ndarray:
    """Shard number of each record: records ordered by key hash, cut into ceil(n / max) even pieces.

    Every shard holds at most `max_shard_rows` rows and sizes differ by at most one; the assignment
    depends only on the set of keys, not on their order.
    """
    return shards_of_hashes(key_hashes(record_keys), lambda positions: [record_keys[p] for p in positions],
                            max_shard_rows)


def shards_of_hashes(
    hashes: np.ndarray, keys_at: Callable[[np.ndarray], Sequence[str]], max_shard_rows: int
) -> np.ndarray:
    """`assign_shards` from the keys' hashes; `keys_at(positions)` gives the keys at those positions, asked
    only for keys whose hashes tie (so a day's keys need not be held as Python strings)."""
    if max_shard_rows < 1:
        raise ValueError("max_shard_rows must be at least 1")
    count = len(hashes)
    if count == 0:
        return np.zeros(0, dtype=np.int32)
    shard_count = math.ceil(count / max_shard_rows)
    order = np.argsort(hashes, kind="stable")
    ranked = hashes[order]
    tied = np.flatnonzero(ranked[1:] == ranked[:-1])
    if len(tied):  # ties broken by key, as a sort by (hash, key) does
        starts = np.flatnonzero(np.diff(np.concatenate(([-2], tied))) != 1)
        for first, last in zip(tied[starts], np.append(tied[starts[1:] - 1], tied[-1]) + 1):
            positions = order[first : last + 1]
            keys = np.asarray(keys_at(positions), dtype=object).astype(str)
            order[first : last + 1] = positions[np.argsort(keys, kind="stable")]
    shards = np.empty(count, dtype=np.int32)
    shards[order] = (np.arange(count) * shard_count) // count
    return shards
