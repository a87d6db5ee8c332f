"""Split a day into bounded shards, the same way every time for the same records."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np


def key_hash(record_key: str) -> int:
    """A stable 64-bit hash (Python's hash() is salted per process, so never that)."""
    return int.from_bytes(hashlib.blake2b(record_key.encode(), digest_size=8).digest(), "big")


def assign_shards(record_keys: Sequence[str], max_shard_rows: int) -> np.ndarray:
    """Shard number of each record: records ordered by key hash, cut into ceil(n / max) even pieces.

    Every shard holds at most `max_shard_rows` rows and sizes differ by at most one; the assignment
    depends only on the set of keys, not on their order.
    """
    if max_shard_rows < 1:
        raise ValueError("max_shard_rows must be at least 1")
    count = len(record_keys)
    if count == 0:
        return np.zeros(0, dtype=np.int32)
    shard_count = math.ceil(count / max_shard_rows)
    hashes = np.fromiter((key_hash(k) for k in record_keys), dtype=np.uint64, count=count)
    order = np.lexsort((np.asarray(record_keys, dtype=object).astype(str), hashes))  # ties broken by key
    shards = np.empty(count, dtype=np.int32)
    shards[order] = (np.arange(count) * shard_count) // count
    return shards
