"""A day's plan without Dify or a database: what is sent, what is asked again of the pinned version, how each
shard's answers are judged, and what the step reports."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from datetime import date

import pyarrow as pa
import pytest

from dify_pipeline.contract import TICKET_OUTPUTS, tickets_contract
from dify_pipeline.infer.day_plan import DayInputs, DayPin, judge_shard, version_of_most_answers
from dify_pipeline.infer.day_report import day_checks, day_metadata, token_prices
from dify_pipeline.infer.enrichment import RecordPlan, enrichment_columns
from dify_pipeline.infer.key_digests import KeyDigests
from dify_pipeline.infer.stats import DayFigures
from dify_pipeline.resources.day_versions import DayVersions
from dify_pipeline.resources.dify import DifyResult

ANSWER = {"category": "物流问题", "summary": "包裹三天未到。", "sentiment": "negative"}
DAY = date(2026, 3, 1)


def plan(record: str, key: str, problem: str | None = None) -> RecordPlan:
    return RecordPlan(record_key=record, inputs={"body": key}, cache_key=key, inputs_truncated=False,
                      input_problem=problem)


def answer(key: str, workflow_id: str | None = "wf-1", **fields) -> DifyResult:
    return DifyResult(record_key=key, succeeded=True, attempts=1, outputs=ANSWER, workflow_id=workflow_id, **fields)


# -- the first pass ---------------------------------------------------------------------------------


def test_each_distinct_input_is_counted_once_as_answered_before_or_to_send():
    day = DayInputs()
    first = [plan("r1", "a"), plan("r2", "a"), plan("r3", "b"), plan("r4", "x", problem="too long")]
    assert set(day.new_inputs(first)) == {"a", "b"}
    day.add(first, {"b": "wf-1"})
    second = [plan("r5", "a"), plan("r6", "c"), plan("r7", "b")]
    assert set(day.new_inputs(second)) == {"c"}
    day.add(second, {})
    assert (day.records, day.distinct, day.answered_count) == (7, 4, 1)
    unanswered = day.finish()
    assert day.distinct == 4
    assert len(unanswered) == 2 and "a" in unanswered and "c" in unanswered and "b" not in unanswered
    assert day.answered_versions() == {"wf-1": 1}


def test_under_reask_the_answers_of_other_versions_are_asked_again_of_the_pinned_one():
    day = DayInputs()
    day.add([plan("r1", "a"), plan("r2", "b"), plan("r3", "c")], {"a": "wf-1", "b": "wf-0", "c": None})
    again = day.to_ask_again("reask", "wf-1")
    assert len(again) == 2 and "b" in again and "c" in again  # another version, and one not known
    assert len(day.to_ask_again("reuse", "wf-1")) == 0
    assert len(day.to_ask_again("reask", None)) == 0  # nothing pinned: every answer counts


def test_the_first_pass_keeps_digests_not_inputs_its_memory_grows_by_bytes_per_input():
    def peak_for(count: int) -> int:
        day = DayInputs()
        tracemalloc.start()
        for start in range(0, count, 1000):
            shard = [RecordPlan(record_key=f"r{i}", inputs={"subject": f"s{i}" * 20, "body": f"b{i}" * 200},
                                cache_key=f"{i:064x}", inputs_truncated=False) for i in range(start, start + 1000)]
            day.add(shard, {})
            del shard
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(day.finish()) == count
        return peak

    small, large = peak_for(2_000), peak_for(20_000)
    # One shard's plans (~1.5 MB here) plus ~16 bytes per input (digests); the inputs themselves were ~2 KB each.
    assert large - small < 18_000 * 100


def test_once_the_first_pass_ends_only_the_digests_to_send_stay_in_memory():
    """While a day is sent, the pass's other digests (every input met, per shard) would double them."""
    tracemalloc.start()
    day = DayInputs()
    for start in range(0, 50_000, 1000):
        day.add([plan(f"r{i}", f"{i:064x}") for i in range(start, start + 1000)], {})
    during, _ = tracemalloc.get_traced_memory()
    to_send = day.finish()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(to_send) == 50_000 and day.distinct == 50_000
    assert during > 50_000 * 16 and after < 50_000 * 12  # 8 bytes of digest and 1 of its mark per input
    with pytest.raises(RuntimeError):
        day.add([plan("r", "z")], {})


def test_each_key_of_a_batch_is_taken_once_whatever_shard_meets_it():
    batch = KeyDigests.of(["a", "b"])
    assert batch.take(["a", "x", "a"]) == [True, False, False]
    assert batch.take(["b", "a"]) == [True, False]


def test_a_day_answered_before_by_several_versions_is_pinned_to_the_version_of_most():
    assert version_of_most_answers(Counter({"wf-1": 1, "wf-2": 2, None: 1})) == "wf-2"
    assert version_of_most_answers(Counter({None: 1})) is None


# -- the day's pin ----------------------------------------------------------------------------------


def test_with_the_cache_off_the_day_is_pinned_for_this_run_only_first_answer_wins():
    pin = DayPin(None, "tickets", DAY, "workflow:app", "v1")
    assert pin.workflow_id is None
    assert pin.pin("wf-1") == "wf-1" and pin.pin("wf-2") == "wf-1"


def test_the_pin_is_kept_in_the_cache_database_for_every_later_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    first = DayPin(DayVersions.open(url), "tickets", DAY, "workflow:app", "v1")
    assert first.pin("wf-1") == "wf-1"
    later = DayPin(DayVersions.open(url), "tickets", DAY, "workflow:app", "v1")
    assert later.workflow_id == "wf-1" and later.pin("wf-2") == "wf-1"
    assert DayPin(DayVersions.open(url), "tickets", DAY, "workflow:app", "v2").workflow_id is None
    assert later.pin_answered(Counter({"wf-3": 1})) == "wf-1"


# -- the second pass --------------------------------------------------------------------------------


def test_each_input_of_a_shard_is_judged_from_this_run_the_cache_or_not_at_all():
    plans = [plan("r1", "sent"), plan("r2", "cached"), plan("r3", "failed"), plan("r4", "lost"),
             plan("r5", "bad", problem="option 'x' is not allowed"), plan("r6", "sent")]
    failed = DifyResult("failed", False, attempts=5, error_code="gateway_error", error_message="HTTP 502")
    from dify_pipeline.infer.enrichment import judge

    outcomes = judge_shard(plans, {"sent": answer("sent"), "cached": answer("cached")},
                           {"failed": judge(failed, TICKET_OUTPUTS)}, {"sent", "failed", "lost"}, TICKET_OUTPUTS)
    assert set(outcomes) == {"sent", "cached", "failed", "lost", "bad"}
    assert outcomes["sent"].succeeded and not outcomes["sent"].from_cache
    assert outcomes["cached"].from_cache and outcomes["cached"].values["category"] == "物流问题"
    assert outcomes["failed"].error_code == "gateway_error"
    assert outcomes["lost"].error_code == "not_answered" and outcomes["lost"].result is None
    assert outcomes["bad"].error_code == "invalid_input"


# -- what the step reports --------------------------------------------------------------------------


def figures_of(outcomes: dict, plans: list[RecordPlan], sources: list[str]) -> DayFigures:
    figures = DayFigures(mask=lambda text: text, estimate_currency="USD", label_outputs=("category", "sentiment"))
    enrichment = enrichment_columns(plans, outcomes, {p.record_key for p in plans}, "workflow:app", "v1",
                                    fields=TICKET_OUTPUTS)
    rows = len(plans)
    figures.add_shard(enrichment, pa.array([p.record_key for p in plans]), pa.array(sources, pa.string()),
                      pa.array([True] * rows), pa.array([0.0] * rows, pa.float64()), pa.array([False] * rows))
    return figures


def test_the_metadata_says_what_was_sent_asked_again_and_which_version_the_day_is_pinned_to():
    plans = [plan("r1", "a"), plan("r2", "b")]
    outcomes = judge_shard(plans, {"a": answer("a", total_tokens=10), "b": answer("b", total_tokens=5)}, {},
                           {"a", "b"}, TICKET_OUTPUTS)
    figures = figures_of(outcomes, plans, ["sent", "sent"])
    metadata = day_metadata(figures, 2, {"http_attempts": 3, "retries": 1}, [10.0, 20.0], "s3://b/enriched",
                            asked_again=1, pinned_workflow_id="wf-1")
    assert (metadata["rows"], metadata["failed"], metadata["requests_sent"]) == (2, 0, 2)
    assert (metadata["asked_again_other_version"], metadata["dify_pinned_workflow_id"]) == (1, "wf-1")
    assert (metadata["http_attempts"], metadata["retries"], metadata["resumed_runs"]) == (3, 1, 0)
    assert metadata["total_tokens"] == 15 and metadata["dify_workflow_ids"].value == ["wf-1"]
    checks = {check.check_name: check for check in day_checks(figures, metadata, 0.02, None)}
    assert checks["failure_rate_below_threshold"].passed and checks["single_app_version"].passed


def test_a_day_of_two_versions_fails_its_version_check_with_a_hint():
    plans = [plan("r1", "a"), plan("r2", "b")]
    outcomes = judge_shard(plans, {"a": answer("a", "wf-1"), "b": answer("b", "wf-2")}, {}, set(), TICKET_OUTPUTS)
    figures = figures_of(outcomes, plans, ["cache", "cache"])
    metadata = day_metadata(figures, 0, {}, [], "s3://b/enriched")
    [_, versions] = day_checks(figures, metadata, 0.02, None)
    assert not versions.passed and "other_version_answers" in versions.metadata["hint"].value
    assert metadata["dify_pinned_workflow_id"] == ""


def test_token_prices_only_when_the_contract_declares_one():
    assert token_prices(tickets_contract()) is None
    prices = token_prices(tickets_contract(price_per_1k_output_tokens=2.0, price_currency="EUR"))
    assert (prices.input_per_1k, prices.output_per_1k, prices.currency) == (0.0, 2.0, "EUR")
