"""The day's figures: where answers came from, what the day cost and what this run spent, failures with examples."""

import pyarrow as pa

from dify_pipeline.infer.stats import (
    CACHE,
    DUPLICATE,
    REFUSED,
    SENT,
    DayFigures,
    TokenPrices,
    blocked_day_message,
    row_costs,
)
from dify_pipeline.schemas import ENRICHMENT_FIELDS

PRICES = TokenPrices(input_per_1k=0.5, output_per_1k=2.0, currency="USD")


def costs(price, prompt, completion, total, prices=PRICES):
    cost, estimated = row_costs(pa.array(price, pa.float64()), pa.array(prompt, pa.int64()),
                                pa.array(completion, pa.int64()), pa.array(total, pa.int64()), prices)
    return cost.to_pylist(), estimated.to_pylist()


def test_difys_price_wins_over_the_estimate():
    assert costs([0.25], [1000], [1000], [2000]) == ([0.25], [False])


def test_without_a_price_tokens_are_priced_input_and_output_apart():
    assert costs([None], [1000], [500], [1500]) == ([0.5 + 1.0], [True])


def test_a_total_without_its_split_is_priced_at_the_input_price():
    assert costs([None], [None], [None], [3000]) == ([1.5], [True])


def test_no_price_and_no_token_prices_configured_is_no_cost():
    assert costs([None], [None], [None], [3000], prices=None) == ([None], [False])


def table(rows: list[dict]) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in ENRICHMENT_FIELDS.names}
    columns["dify_status"] = [row.get("dify_status", "succeeded") for row in rows]
    return pa.table(columns, schema=ENRICHMENT_FIELDS)


def add(figures: DayFigures, rows: list[dict], sources: list[str], first: list[bool], cost: list, estimated: list):
    figures.add_shard(table(rows), pa.array([row["key"] for row in rows]), pa.array(sources), pa.array(first),
                      pa.array(cost, pa.float64()), pa.array(estimated))


def test_sources_are_counted_apart_and_the_day_costs_each_input_once():
    figures = DayFigures(label_outputs=("category",))
    ok = {"category": "其他", "total_tokens": 100, "total_price": 0.1, "currency": "USD"}
    add(figures, [{"key": "a", **ok}, {"key": "b", **ok}, {"key": "c", **ok}, {"key": "d", **ok}],
        [SENT, DUPLICATE, CACHE, CACHE], [True, False, True, False], [0.1] * 4, [False] * 4)
    add(figures, [{"key": "e", "dify_status": "failed", "error_code": "invalid_input", "error_message": "x"}],
        [REFUSED], [False], [None], [False])
    assert dict(figures.by_source) == {SENT: 1, DUPLICATE: 1, CACHE: 2, REFUSED: 1}
    assert (figures.rows, figures.failed) == (5, 1)
    assert (figures.tokens_day, figures.tokens_run) == (200, 100)
    cost = figures.cost()
    assert (cost["cost_day"], cost["cost_spent_this_run"], cost["cost_currency"]) == (0.2, 0.1, "USD")
    assert cost["cost_is_estimate"] is False
    assert figures.labels == {"category": {"其他": 4}}


def test_a_failed_run_dify_charged_counts_in_what_the_run_spent():
    figures = DayFigures(estimate_currency="EUR")
    add(figures, [{"key": "a", "dify_status": "failed", "error_code": "run_failed", "error_message": "boom",
                   "total_tokens": 50}], [SENT], [True], [0.025], [True])
    assert figures.failed_runs_charged == 1
    assert figures.cost()["cost_spent_this_run"] == 0.025
    assert figures.cost()["cost_is_estimate"] is True
    assert figures.cost()["cost_currency"] == "EUR"


def failing_day() -> DayFigures:
    figures = DayFigures(label_outputs=("category", "sentiment"),
                         mask=lambda text: text.replace("alice@example.com", "[EMAIL]"))
    rows = [{"key": f"k{i}", "dify_status": "failed", "error_code": "run_failed",
             "error_message": "model failed for alice@example.com " + "x" * 500} for i in range(7)]
    rows += [{"key": "k-cat", "dify_status": "failed", "error_code": "invalid_category",
              "error_message": "category '投诉' is not one of the allowed labels"}]
    rows += [{"key": f"ok{i}", "category": "其他"} for i in range(12)]
    n = len(rows)
    add(figures, rows, [SENT] * n, [True] * n, [None] * n, [False] * n)
    return figures


def test_failure_samples_hold_a_masked_capped_example_and_at_most_five_keys_per_code():
    samples = failing_day().failure_samples()
    assert list(samples) == ["run_failed", "invalid_category"]
    assert samples["run_failed"]["count"] == 7
    assert samples["run_failed"]["records"] == ["k0", "k1", "k2", "k3", "k4"]
    example = samples["run_failed"]["example"]
    assert "[EMAIL]" in example and "alice" not in example and len(example) <= 300
    assert samples["invalid_category"] == {"count": 1, "example": "category '投诉' is not one of the allowed labels",
                                           "records": ["k-cat"]}


def test_the_blocked_day_message_says_rate_codes_examples_keys_and_what_to_do():
    message = blocked_day_message(failing_day(), 0.02, "2026-11-20")
    assert "8 of 20 records failed (40.0%, threshold 2.0%)" in message
    assert "run_failed × 7" in message and "k0, k1, k2, k3, k4" in message and "k5" not in message
    assert "invalid_category × 1" in message and "outputs.category.allowed" in message
    assert "app's logs in Dify" in message
    assert "alice" not in message


def test_labels_outside_their_allowed_values_are_counted_per_output():
    from dify_pipeline.infer.stats import labels_outside

    day = pa.table({"category": pa.array(["其他", "投诉", "投诉", None]).dictionary_encode(),
                    "sentiment": ["positive", "angry", "neutral", "negative"]})
    found = labels_outside(day, {"category": ["其他"], "sentiment": ["positive", "neutral", "negative"]})
    assert found == {"category": {"投诉": 2}, "sentiment": {"angry": 1}}
    assert labels_outside(day, {"sentiment": ["positive", "neutral", "negative", "angry"]}) == {"sentiment": {}}
