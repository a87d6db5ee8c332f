"""What the enrichment step reports about a day: its materialization metadata and its two checks, built from the
day's figures without Dagster's context (so unit tests call them directly)."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from dify_pipeline.contract import EnrichmentContract
from dify_pipeline.infer.stats import CACHE, DUPLICATE, REFUSED, SENT, DayFigures, TokenPrices, latency_percentiles

MIXED_VERSIONS_HINT = ("answers from several app versions: set the contract's app.other_version_answers to reask "
                       "(pays for the other versions' answers again), or bump cache_version and re-run the day to "
                       "answer it all with the version published now")


def token_prices(contract: EnrichmentContract) -> TokenPrices | None:
    """The contract's token prices, for days whose answers carry tokens but no price (None: none declared)."""
    if contract.price_per_1k_input_tokens is None and contract.price_per_1k_output_tokens is None:
        return None
    return TokenPrices(contract.price_per_1k_input_tokens or 0.0, contract.price_per_1k_output_tokens or 0.0,
                       contract.price_currency)


def day_metadata(figures: DayFigures, sent: int, call_counters: dict, fresh_latencies: Iterable[float], path: str, *,
                 asked_again: int = 0, pinned_workflow_id: str | None = None) -> dict:
    """The enriched day's metadata: rows and failures, where answers came from, what this run paid, latencies,
    labels and app versions. `sent` counts the requests this run paid for, `asked_again` those of them that
    re-asked a cached answer of another app version; `pinned_workflow_id` is the day's version (None: not pinned)."""
    percentiles = latency_percentiles(fresh_latencies)
    cost = figures.cost()
    return {
        "rows": figures.rows,
        "dagster/row_count": figures.rows,
        "succeeded": figures.rows - figures.failed,
        "failed": figures.failed,
        "failure_rate": figures.failure_rate,
        "failures_by_code": dg.MetadataValue.json(dict(figures.failures.most_common())),
        "failure_samples": dg.MetadataValue.json(figures.failure_samples()),
        "requests_sent": sent,
        "asked_again_other_version": asked_again,
        # Where the rows' answers came from: this run, a duplicate of this run's input, or an earlier run or day.
        "answered_this_run": figures.by_source[SENT],
        "duplicates_within_day": figures.by_source[DUPLICATE],
        "answered_from_cache": figures.by_source[CACHE],
        "cache_hits": figures.by_source[CACHE],
        "refused_inputs": figures.by_source[REFUSED],
        "http_attempts": call_counters.get("http_attempts", 0),
        "retries": call_counters.get("retries", 0),
        "throttled": call_counters.get("throttled", 0),
        "recovered_runs": call_counters.get("recovered_runs", 0),
        "resumed_runs": call_counters.get("resumed_runs", 0),
        # Each distinct input of the day counted once; "this run" is what this run paid for.
        "total_tokens": figures.tokens_day,
        "tokens_spent_this_run": figures.tokens_run,
        "total_price": float(round(figures.price_day, 6)),  # Dify's own price; float even when 0: one series
        "price_spent_this_run": float(round(figures.price_run, 6)),
        **cost,
        "failed_runs_charged": figures.failed_runs_charged,
        "latency_p50_ms": percentiles["p50"],
        "latency_p95_ms": percentiles["p95"],
        "latency_p99_ms": percentiles["p99"],
        "labels": dg.MetadataValue.json({name: dict(counts.most_common()) for name, counts in figures.labels.items()}),
        "dify_workflow_ids": dg.MetadataValue.json(sorted(figures.workflow_ids)),
        "dify_pinned_workflow_id": pinned_workflow_id or "",
        "path": dg.MetadataValue.path(path),
    }


def day_checks(figures: DayFigures, metadata: dict, max_failure_rate: float,
               message: str | None) -> list[dg.AssetCheckResult]:
    """The step's two checks: the failure rate under the contract's threshold (`message`: why not, else None),
    and one app version for every answer of the day."""
    workflow_ids = sorted(figures.workflow_ids)
    return [dg.AssetCheckResult(
        check_name="failure_rate_below_threshold", passed=figures.failure_rate <= max_failure_rate,
        description=message,
        metadata={"failure_rate": figures.failure_rate, "threshold": max_failure_rate,
                  "failures_by_code": metadata["failures_by_code"], "failure_samples": metadata["failure_samples"]},
    ), dg.AssetCheckResult(
        check_name="single_app_version", passed=len(workflow_ids) <= 1,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"dify_workflow_ids": dg.MetadataValue.json(workflow_ids), "hint": MIXED_VERSIONS_HINT},
    )]
