"""Figures a user reads about a day's inference: counts by where each answer came from, tokens, cost, latency
percentiles, and failures with examples. Pure functions over Arrow columns; the step feeds them shard by shard."""

from __future__ import annotations

import random
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Where a row's answer came from.
SENT = "sent"  # the first record of inputs sent to Dify by this run
DUPLICATE = "duplicate"  # a later record of the day with the same inputs as one sent by this run
CACHE = "cache"  # inputs answered by an earlier run or day, read from the cache
REFUSED = "refused"  # inputs the app's form refuses: never sent
SOURCES = (SENT, DUPLICATE, CACHE, REFUSED)

SAMPLES_PER_CODE = 5
SAMPLE_MESSAGE_CHARS = 300

# What to do about each kind of failure, said in the step's error when the failure-rate check blocks a day.
# A label outside its allowed values is `invalid_<output>` (label_advice).
ADVICE = {
    "invalid_output": "the app's answers break the contract's outputs (a required output missing, a wrong type, "
                      "a value out of range): fix the app's output and change the contract's cache_version to pay "
                      "for fresh answers",
    "invalid_input": "the inputs break the app's input form (a select option, a required variable): fix the data "
                     "or the contract's app.inputs",
    "run_failed": "the app's runs fail inside Dify: read the error in the app's logs in Dify, fix the app, then "
                  "materialize the day again (failed runs are not cached, so only they are sent again)",
}
DEFAULT_ADVICE = ("Dify or the network failed these records: materialize the day again once it is healthy; the "
                  "answers received are cached, so only the failed records are sent")


def label_advice(output: str) -> str:
    return (f"the app answered {output} labels outside the contract's outputs.{output}.allowed: add them there "
            "(re-judged from the cache, no paid call) or fix the prompt and change the contract's cache_version "
            "(pays for fresh answers)")


@dataclass(frozen=True)
class TokenPrices:
    """What the model costs per 1,000 tokens, for apps whose answers carry tokens but no price."""

    input_per_1k: float
    output_per_1k: float
    currency: str = "USD"


def row_costs(price: pa.Array, prompt_tokens: pa.Array, completion_tokens: pa.Array, total_tokens: pa.Array,
              prices: TokenPrices | None) -> tuple[pa.Array, pa.Array]:
    """(cost, estimated) per row: Dify's price when it gave one, else tokens × `prices` (input tokens at the input
    price, output tokens at the output price; a total without its split at the input price), else null."""
    price = pc.cast(price, pa.float64())
    if prices is None:
        estimate = pa.nulls(len(price), pa.float64())
    else:
        split = pc.add(pc.multiply(pc.cast(prompt_tokens, pa.float64()), prices.input_per_1k / 1000),
                       pc.multiply(pc.cast(completion_tokens, pa.float64()), prices.output_per_1k / 1000))
        whole = pc.multiply(pc.cast(total_tokens, pa.float64()), prices.input_per_1k / 1000)
        estimate = pc.coalesce(split, whole)
    cost = pc.coalesce(price, estimate)
    estimated = pc.and_(pc.is_null(price), pc.is_valid(estimate))
    return cost, estimated


class LatencySample:
    """A day's answer latencies for its percentiles, in memory that does not grow with the day: every one up to
    `capacity` (exact), then a uniform sample of that many (reservoir sampling; seeded, so a run is repeatable)."""

    def __init__(self, capacity: int = 100_000, seed: int = 0) -> None:
        self.capacity, self.seen = capacity, 0
        self._values = array("d")
        self._rng = random.Random(seed)

    def append(self, value: float) -> None:
        self.seen += 1
        if len(self._values) < self.capacity:
            self._values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self._values[slot] = value

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self):
        return iter(self._values)


def latency_percentiles(latencies_ms: Iterable[float]) -> dict[str, float]:
    values = np.fromiter((v for v in latencies_ms if v is not None and v == v), dtype=float)
    if values.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1)}


def error_counts(codes: Iterable[str | None]) -> dict[str, int]:
    return dict(Counter(code for code in codes if code).most_common())


def _sum(values: pa.Array | pa.ChunkedArray, where: pa.Array | None = None) -> float:
    if where is not None:
        values = pc.filter(values, where)
    total = pc.sum(values).as_py()
    return total or 0


@dataclass
class DayFigures:
    """The day's figures, added shard by shard (memory does not grow with the day, only with its error codes)."""

    mask: Callable[[str], str] = lambda text: text  # masks personal data in error messages
    estimate_currency: str | None = None  # the currency of the token prices behind estimated costs
    label_outputs: tuple[str, ...] = ()  # the contract's label outputs, counted by value
    rows: int = 0
    failed: int = 0
    by_source: Counter = field(default_factory=Counter)
    labels: dict = field(default_factory=dict)  # label output → Counter of its values
    failures: Counter = field(default_factory=Counter)
    samples: dict = field(default_factory=dict)  # code → {"example": message, "records": [keys]}
    workflow_ids: set = field(default_factory=set)
    tokens_day: int = 0
    tokens_run: int = 0
    price_day: float = 0.0  # what Dify reported
    price_run: float = 0.0
    cost_day: float = 0.0  # Dify's price, else the estimate
    cost_run: float = 0.0
    estimated_rows: int = 0
    priced_rows: int = 0
    currencies: Counter = field(default_factory=Counter)
    failed_runs_charged: int = 0

    def add_shard(self, enrichment: pa.Table, record_keys: pa.Array, source: pa.Array, first_in_day: pa.Array,
                  cost: pa.Array, estimated: pa.Array) -> None:
        """One shard's enrichment columns, with per row: where its answer came from, whether it is the first
        record of its inputs in the day (what the day's answers cost counts once), its cost and whether that
        cost is an estimate."""
        self.rows += enrichment.num_rows
        status = enrichment.column("dify_status")
        failed = pc.equal(pc.cast(status, pa.string()), "failed")
        self.failed += int(_sum(pc.cast(failed, pa.int64())))
        for value in pc.value_counts(source).to_pylist():
            self.by_source[value["values"]] += value["counts"]
        for name in self.label_outputs:
            counts = self.labels.setdefault(name, Counter())
            for value in pc.value_counts(pc.drop_null(pc.cast(enrichment.column(name), pa.string()))).to_pylist():
                counts[value["values"]] += value["counts"]
        workflow_ids = pc.unique(pc.drop_null(enrichment.column("dify_workflow_id")))
        self.workflow_ids.update(workflow_ids.to_pylist())
        this_run = pc.equal(source, SENT)
        tokens = enrichment.column("total_tokens")
        prices = enrichment.column("total_price")
        self.tokens_day += int(_sum(tokens, first_in_day))
        self.tokens_run += int(_sum(tokens, this_run))
        self.price_day += float(_sum(prices, first_in_day))
        self.price_run += float(_sum(prices, this_run))
        self.cost_day += float(_sum(cost, first_in_day))
        self.cost_run += float(_sum(cost, this_run))
        self.estimated_rows += int(_sum(pc.cast(pc.and_(estimated, first_in_day), pa.int64())))
        self.priced_rows += int(_sum(pc.cast(pc.and_(pc.is_valid(prices), first_in_day), pa.int64())))
        for value in pc.value_counts(pc.drop_null(pc.filter(enrichment.column("currency"), first_in_day))).to_pylist():
            self.currencies[value["values"]] += value["counts"]
        charged = pc.and_(pc.and_(failed, this_run), pc.is_valid(cost))
        self.failed_runs_charged += int(_sum(pc.cast(charged, pa.int64())))
        if pc.any(failed).as_py():
            self._add_failures(enrichment, record_keys, failed)

    def _add_failures(self, enrichment: pa.Table, record_keys: pa.Array, failed: pa.Array) -> None:
        codes = pc.filter(enrichment.column("error_code"), failed).to_pylist()
        messages = pc.filter(enrichment.column("error_message"), failed)
        keys = pc.filter(record_keys, failed)
        for index, code in enumerate(codes):
            code = code or "unknown"
            self.failures[code] += 1
            sample = self.samples.setdefault(code, {"example": None, "records": []})
            if len(sample["records"]) < SAMPLES_PER_CODE:
                sample["records"].append(keys[index].as_py())
            if sample["example"] is None:
                sample["example"] = self.mask(str(messages[index].as_py() or ""))[:SAMPLE_MESSAGE_CHARS]

    @property
    def failure_rate(self) -> float:
        return round(self.failed / self.rows, 4) if self.rows else 0.0

    def failure_samples(self) -> dict:
        """Per error code, most frequent first: its count, one example message (masked, capped) and up to five
        record keys."""
        return {code: {"count": count, **self.samples[code]} for code, count in self.failures.most_common()}

    def cost(self) -> dict:
        """What the day's answers cost (each distinct input once) and what this run spent, in the main currency,
        and whether any of it is an estimate from token prices."""
        currency = self.currencies.most_common(1)[0][0] if self.currencies else None
        if currency is None and self.estimated_rows:
            currency = self.estimate_currency
        return {
            "cost_day": float(round(self.cost_day, 6)),
            "cost_spent_this_run": float(round(self.cost_run, 6)),
            "cost_currency": currency or "",
            "cost_is_estimate": self.estimated_rows > 0,
            "cost_estimated_answers": self.estimated_rows,
            "cost_priced_by_dify_answers": self.priced_rows,
        }


def blocked_day_message(figures: DayFigures, threshold: float, day: str) -> str:
    """The step's error when the failure-rate check blocks a day: the rate, the top codes with an example and
    record keys each, and what to do."""
    lines = [f"{day}: {figures.failed} of {figures.rows} records failed ({figures.failure_rate:.1%}, threshold "
             f"{threshold:.1%}); the day is not published. Top errors:"]
    for code, sample in list(figures.failure_samples().items())[:3]:
        records = ", ".join(str(key) for key in sample["records"])
        lines.append(f"  {code} × {sample['count']}: e.g. {sample['example']!r} (records {records})")
        lines.append(f"    what to do: {_advice(code, figures.label_outputs)}")
    return "\n".join(lines)


def _advice(code: str, label_outputs: tuple[str, ...]) -> str:
    label = code.removeprefix("invalid_")
    if code.startswith("invalid_") and label in label_outputs:
        return label_advice(label)
    return ADVICE.get(code, DEFAULT_ADVICE)


def labels_outside(table: pa.Table, allowed: dict[str, list[str]]) -> dict[str, Counter]:
    """Per label output of `allowed` (name → its values), the values in `table` that are not allowed, counted."""
    found = {}
    for name, values in allowed.items():
        column = pc.cast(table.column(name), pa.string())
        outside = pc.filter(column, pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, pa.array(values)))))
        found[name] = Counter({item["values"]: item["counts"] for item in pc.value_counts(outside).to_pylist()})
    return found
