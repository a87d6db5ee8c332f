"""Which shards of a day are answered while the day is still sent, so each one's rows are written beside the calls
rather than in a pass after them.

The requests leave shard by shard, in the order of the shards; an input met in several shards is sent with the
first. A shard is answered once the requests of every shard up to it were all taken and have their result.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence


class ShardsAnswered:
    """Told by the sending side (`sending`, `taken_all`, `answered`, `end`), waited on by the rows' writer (`wait`)."""

    def __init__(self, shards: int) -> None:
        self._open = [0] * shards  # per shard, its requests taken and not answered yet
        self._shard_of: dict[str, int] = {}  # each key taken and not answered yet: the shard that sent it
        self._taken = 0  # the shards before this one have all their requests taken
        self._answered = 0  # the shards before this one are answered
        self._ended = self._stopped = False
        self._changed = threading.Condition()

    def sending(self, shard: int, keys: Sequence[str]) -> None:
        """Shard `shard`'s requests (their cache keys) are about to be taken: the shards before it are all taken."""
        with self._changed:
            for key in keys:
                self._shard_of[key] = shard
            self._open[shard] += len(keys)
            self._taken = max(self._taken, shard)
            self._advance()

    def taken_all(self) -> None:
        """Every request of the day is taken."""
        with self._changed:
            self._taken = len(self._open)
            self._advance()

    def answered(self, key: str) -> None:
        """The request of `key` has its result (a key not taken through `sending` is not counted)."""
        with self._changed:
            shard = self._shard_of.pop(key, None)
            if shard is not None:
                self._open[shard] -= 1
                self._advance()

    def end(self, stopped: bool = False) -> None:
        """The sending is over: every shard is answered, or, `stopped`, the day stops and nothing more is written."""
        with self._changed:
            self._ended, self._stopped = True, stopped
            self._changed.notify_all()

    def wait(self, shard: int) -> bool:
        """Block until `shard` is answered (True) or the day stopped (False)."""
        with self._changed:
            while not self._ended and shard >= self._answered:
                self._changed.wait()
            return not self._stopped

    def _advance(self) -> None:
        answered = self._answered
        while answered < self._taken and not self._open[answered]:
            answered += 1
        if answered != self._answered:
            self._answered = answered
            self._changed.notify_all()
