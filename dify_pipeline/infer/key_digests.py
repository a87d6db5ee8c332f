"""A set of cache keys kept as 8-byte digests in one sorted array: a day's million inputs in 8 MB, not the ~150 MB
of their key strings in a Python set.

Two keys may share a digest: about once in 3·10^7 days of a million distinct inputs. The one met second is then
taken for the first (not sent, shown `not_answered`, counted a failure) for this run only: the digests are salted
per process, so the next materialization of the day sends it. `duplicate_keys` counts repeated keys exactly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

_SALT = os.urandom(16)


def digests(keys: Iterable[str]) -> np.ndarray:
    """The digest of each of `keys`, in order."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, key=_SALT).digest(), "little")
                        for key in keys), dtype=np.uint64)


class KeyDigests:
    """Cache keys by digest, with a mark per key (`take`): which were sent already."""

    def __init__(self, sorted_digests: np.ndarray | None = None) -> None:
        self._sorted = np.empty(0, np.uint64) if sorted_digests is None else sorted_digests
        self._taken = np.zeros(len(self._sorted), dtype=bool)

    @classmethod
    def of(cls, keys: Iterable[str]) -> KeyDigests:
        return cls(np.unique(digests(keys)))

    def __len__(self) -> int:
        return len(self._sorted)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and len(self._sorted) > 0 and bool(self.contains(digests([key]))[0])

    def contains_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` the set holds: one hashing pass and one search for them all (asked once per shard, not
        once per key)."""
        if not len(self._sorted) or not keys:
            return set()
        return {key for key, held in zip(keys, self.contains(digests(keys)).tolist()) if held}

    def _positions(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positions = np.searchsorted(self._sorted, values)
        inside = positions < len(self._sorted)
        found = np.zeros(len(values), dtype=bool)
        found[inside] = self._sorted[positions[inside]] == values[inside]
        return positions, found

    def contains(self, values: np.ndarray) -> np.ndarray:
        """Per digest of `values`, whether the set holds it."""
        return self._positions(values)[1]

    def add(self, values: np.ndarray) -> None:
        """Add the digests `values` (merged in place of a Python set: one copy of the array per call)."""
        values = np.unique(values)
        values = values[~self.contains(values)]
        positions = np.searchsorted(self._sorted, values)
        self._sorted = np.insert(self._sorted, positions, values)
        self._taken = np.insert(self._taken, positions, False)

    def union(self, other: KeyDigests) -> KeyDigests:
        return KeyDigests(np.union1d(self._sorted, other._sorted))

    def difference(self, other: KeyDigests) -> KeyDigests:
        return KeyDigests(self._sorted[~other.contains(self._sorted)])

    def take(self, keys: Sequence[str]) -> list[bool]:
        """Per key of `keys`, True the first time a key of the set is met (marked taken), False otherwise: each
        key of the set is taken once."""
        if not len(self._sorted) or not keys:
            return [False] * len(keys)
        positions, found = self._positions(digests(keys))
        fresh = np.zeros(len(keys), dtype=bool)
        untaken = np.flatnonzero(found & ~self._taken[np.minimum(positions, len(self._sorted) - 1)])
        _, first = np.unique(positions[untaken], return_index=True)  # a key repeated in `keys`: its first place
        fresh[untaken[first]] = True
        self._taken[positions[fresh]] = True
        return fresh.tolist()


def duplicate_keys(read_keys: Callable[[], Iterable[pa.Array]], rows: int) -> int:
    """How many of the `rows` keys `read_keys()` yields (batch by batch) repeat an earlier one, exactly, in 8 bytes
    per key: their digests are sorted, and the keys of a digest met twice read again and compared as text."""
    values = np.empty(rows, dtype=np.uint64)
    filled = 0
    for keys in read_keys():
        values[filled:filled + len(keys)] = digests(keys.to_pylist())
        filled += len(keys)
    values = np.sort(values[:filled])
    suspects = set(values[1:][values[1:] == values[:-1]].tolist())
    if not suspects:
        return 0
    found = [key for keys in read_keys() for key, value in zip(keys.to_pylist(), digests(keys.to_pylist()).tolist())
             if value in suspects]
    return len(found) - len(set(found))
