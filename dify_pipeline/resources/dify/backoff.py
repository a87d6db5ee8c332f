"""The one backoff policy of the Dify client: exponential with jitter, capped, a server's Retry-After a floor."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """`delay(step)` for the step-th wait in a row (1, 2, ...): uniform in [ceiling / 2, ceiling], where the
    ceiling doubles from `initial` up to `maximum`. A record's retries and a pause of everyone use it alike."""

    initial: float
    maximum: float
    rng: random.Random = field(default_factory=random.Random)

    def ceiling(self, step: int) -> float:
        return min(self.maximum, self.initial * 2 ** min(max(step, 1) - 1, 60))

    def delay(self, step: int, retry_after: float | None = None) -> float:
        ceiling = self.ceiling(step)
        wait = self.rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:  # the server's word, plus a little jitter so the waiters do not return together
            wait = max(wait, retry_after + self.rng.uniform(0, 0.1 * max(retry_after, 1)))
        return wait
