"""A day's plan without Dify or a database: what is sent, what is asked again of the pinned version, how each
shard's answers are judged, and what the step reports."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from dify_pipeline.contract import TICKET_OUTPUTS, tickets_contract
from dify_pipeline.infer.day_plan import DayInputs, DayPin, judge_shard, version_of_most_answers
from dify_pipeline.infer.day_report import day_checks, day_metadata, token_prices
from dify_pipeline.infer.enrichment import RecordPlan, enrichment_columns
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
    assert (day.records, day.distinct) == (7, 4)
    assert set(day.unanswered) == {"a", "c"} and day.answered == {"b": "wf-1"}
    assert day.answered_plans == {}  # not kept unless they may be asked again


def test_under_reask_the_answers_of_other_versions_are_asked_again_of_the_pinned_one():
    day = DayInputs(keep_answered=True)
    day.add([plan("r1", "a"), plan("r2", "b"), plan("r3", "c")], {"a": "wf-1", "b": "wf-0", "c": None})
    assert set(day.to_ask_again("reask", "wf-1")) == {"b", "c"}  # another version, and one not known
    assert day.to_ask_again("reuse", "wf-1") == {}
    assert day.to_ask_again("reask", None) == {}  # nothing pinned: every answer counts


def test_a_day_answered_before_by_several_versions_is_pinned_to_the_version_of_most():
    assert version_of_most_answers({"a": "wf-1", "b": "wf-2", "c": "wf-2", "d": None}) == "wf-2"
    assert version_of_most_answers({"a": None}) is None


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
    assert later.pin_answered({"a": "wf-3"}) == "wf-1"


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
