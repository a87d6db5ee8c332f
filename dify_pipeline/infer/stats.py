"""Figures a user reads about a day's inference: counts, tokens, cost, latency percentiles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np


def latency_percentiles(latencies_ms: Iterable[float]) -> dict[str, float]:
    values = np.fromiter((v for v in latencies_ms if v is not None and v == v), dtype=float)
    if values.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1)}


def error_counts(codes: Iterable[str | None]) -> dict[str, int]:
    return dict(Counter(code for code in codes if code).most_common())
