import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dify_pipeline.contract import DEFAULT_INPUT_MAPPING, TICKET_OUTPUTS
from dify_pipeline.infer.app_form import InputVariable
from dify_pipeline.infer.cache_key import cache_key
from dify_pipeline.infer.enrichment import enrichment_columns, judge, plan_records
from dify_pipeline.infer.progress import Progress
from dify_pipeline.infer.stats import LatencySample, error_counts, latency_percentiles
from dify_pipeline.resources.dify import DifyResult
from dify_pipeline.schemas import ENRICHMENT_FIELDS, PIPELINE_VERSION

APP = "app-3f2a"
VERSION = "v1"
VARIABLES = {
    "subject": InputVariable("subject", required=True, max_length=10, options=()),
    "body": InputVariable("body", required=True, max_length=None, options=()),
}
ANSWER = {"category": "物流问题", "summary": "包裹三天未到。", "sentiment": "negative"}
ENRICHED_AT = datetime(2026, 3, 9, 1, 2, 3, tzinfo=UTC)


def row(key: str, subject: str | None = "快递没到", body: str | None = "三天了还没收到包裹", **other) -> dict:
    return {"record_key": key, "subject": subject, "body": body, **other}


def plan(rows):
    return plan_records(rows, DEFAULT_INPUT_MAPPING, VARIABLES, APP, VERSION)


def answered(outputs, fields=TICKET_OUTPUTS, *, from_cache=False, **call):
    """The outcome of a call Dify answered with `outputs` (the client's result, judged against `fields`)."""
    return judge(DifyResult(record_key="k", succeeded=True, outputs=outputs, **{"attempts": 0, **call}), fields,
                 from_cache=from_cache)


# -- cache key -------------------------------------------------------------------------------------


def test_cache_key_ignores_the_order_of_inputs():
    assert cache_key(APP, VERSION, {"subject": "a", "body": "b"}) == cache_key(APP, VERSION,
                                                                               {"body": "b", "subject": "a"})


@pytest.mark.parametrize(
    ("app", "version", "inputs"),
    [("app-other", VERSION, {"subject": "a"}), (APP, "v2", {"subject": "a"}), (APP, VERSION, {"subject": "a "})],
)
def test_cache_key_changes_with_app_prompt_version_or_inputs(app, version, inputs):
    assert cache_key(app, version, inputs) != cache_key(APP, VERSION, {"subject": "a"})


def test_cache_key_fields_cannot_run_into_each_other():
    assert cache_key("app", "v1x", {}) != cache_key("appv", "1x", {})


def test_cache_key_is_the_same_in_another_process():
    """The key is persisted in the result cache: a new process (new hash seed) must compute the same one."""
    inputs = {"subject": "快递没到", "body": "三天了"}
    module = Path(__file__).resolve().parents[2] / "dify_pipeline" / "infer" / "cache_key.py"
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('cache_key', {str(module)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"print(m.cache_key({APP!r}, {VERSION!r}, json.loads(sys.argv[1])))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, json.dumps(inputs)], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == cache_key(APP, VERSION, inputs)


# -- planning --------------------------------------------------------------------------------------


def test_plan_maps_columns_to_the_apps_variables():
    [only] = plan_records([{"record_key": "r1", "title": "t", "content": "c", "other": "x"}],
                          {"subject": "title", "body": "content"}, VARIABLES, APP, VERSION)
    assert only.record_key == "r1"
    assert only.inputs == {"subject": "t", "body": "c"}
    assert only.cache_key == cache_key(APP, VERSION, {"subject": "t", "body": "c"})
    assert not only.inputs_truncated


def test_records_with_the_same_inputs_share_a_cache_key_and_different_inputs_do_not():
    first, repeat, different = plan([row("r1"), row("r2"), row("r3", body="另一件事")])
    assert first.cache_key == repeat.cache_key
    assert different.cache_key != first.cache_key


def test_plan_fits_inputs_to_the_form_and_keys_what_is_actually_sent():
    long_subject = "快递" * 20
    [cut] = plan([row("r1", subject=long_subject)])
    assert cut.inputs["subject"] == long_subject[:10]
    assert cut.inputs_truncated
    [same_after_cut] = plan([row("r2", subject=long_subject[:10])])
    assert same_after_cut.cache_key == cut.cache_key


def test_plan_sends_missing_columns_as_empty_text():
    [only] = plan([{"record_key": "r1", "subject": None}])
    assert only.inputs == {"subject": "", "body": ""}


def test_plan_keeps_record_order():
    keys = [f"r{i}" for i in range(20)]
    assert [p.record_key for p in plan([row(k, body=k) for k in keys])] == keys


def test_a_chat_message_is_planned_from_its_column_and_is_part_of_the_cache_key():
    mapping = {"subject": "subject"}
    first, same, other = plan_records([row("r1", body="包裹没到"), row("r2", body="包裹没到"), row("r3", body="退款")],
                                      mapping, VARIABLES, APP, VERSION, query_column="body")
    assert (first.query, first.inputs) == ("包裹没到", {"subject": "快递没到"})
    assert first.request().query == "包裹没到" and first.request().record_key == first.cache_key
    assert first.cache_key == same.cache_key != other.cache_key  # another message, another answer
    assert first.cache_key == cache_key(APP, VERSION, {"subject": "快递没到"}, "包裹没到")
    assert first.cache_key != cache_key(APP, VERSION, {"subject": "快递没到"})


def test_an_empty_chat_message_is_refused_without_being_sent():
    [empty] = plan_records([row("r1", body="  ")], {"subject": "subject"}, VARIABLES, APP, VERSION,
                           query_column="body")
    assert empty.input_problem == "the chat message (column 'body') is empty"


def test_planning_reads_the_mapped_columns_and_the_chat_message():
    from dify_pipeline.infer.enrichment import plan_columns

    assert plan_columns({"subject": "title", "body": "content"}) == ["record_key", "content", "title"]
    assert plan_columns({"subject": "title"}, "content") == ["record_key", "content", "title"]


def test_without_a_chat_message_the_cache_key_is_the_one_stored_before():
    """Workflow and completion answers cached before chat queries existed keep their keys."""
    assert cache_key(APP, VERSION, {"subject": "a"}, None) == cache_key(APP, VERSION, {"subject": "a"})


# -- outcome of an answer --------------------------------------------------------------------------


def test_a_valid_answer_is_a_success_with_typed_fields_and_the_call_details():
    outcome = answered(ANSWER, attempts=2, latency_ms=812.5, total_tokens=321, run_id="run-1")
    assert outcome.succeeded
    assert outcome.values == {"category": "物流问题", "summary": "包裹三天未到。", "sentiment": "negative"}
    assert (outcome.result.attempts, outcome.result.latency_ms, outcome.result.total_tokens,
            outcome.result.run_id) == (2, 812.5, 321, "run-1")
    assert outcome.result.outputs == ANSWER


def test_an_answer_breaking_the_contract_is_a_failed_outcome_not_a_crash():
    outputs = {**ANSWER, "category": "投诉"}
    outcome = answered(outputs, attempts=1, total_tokens=99)
    assert not outcome.succeeded
    assert outcome.error_code == "invalid_category"
    assert "投诉" in outcome.error_message
    assert outcome.values is None
    assert (outcome.result.outputs, outcome.result.attempts, outcome.result.total_tokens) == (outputs, 1, 99)  # kept


def test_a_failed_run_keeps_its_error_and_its_result():
    result = DifyResult("k", False, attempts=3, error_code="run_failed", error_message="model down")
    outcome = judge(result, TICKET_OUTPUTS)
    assert not outcome.succeeded and (outcome.error_code, outcome.error_message) == ("run_failed", "model down")
    assert outcome.result is result and outcome.values is None


# -- enrichment columns ----------------------------------------------------------------------------


def columns_for(plans, outcomes, paying):
    table = enrichment_columns(plans, outcomes, paying, APP, VERSION, fields=TICKET_OUTPUTS, enriched_at=ENRICHED_AT)
    return table, {name: table.column(name).to_pylist() for name in table.column_names}


def test_enrichment_columns_follow_the_enrichment_schema():
    plans = plan([row("r1")])
    outcomes = {plans[0].cache_key: answered(ANSWER, attempts=1)}
    table, _ = columns_for(plans, outcomes, {"r1"})
    assert table.schema == ENRICHMENT_FIELDS


def test_no_plans_give_an_empty_table_with_the_schema():
    table, _ = columns_for([], {}, set())
    assert table.num_rows == 0
    assert table.schema == ENRICHMENT_FIELDS


def test_only_the_paying_record_carries_attempts_and_latency_and_its_repeats_are_cache_hits():
    plans = plan([row("r1"), row("r2"), row("r3")])
    assert len({p.cache_key for p in plans}) == 1
    outcomes = {plans[0].cache_key: answered(ANSWER, attempts=3, latency_ms=950.0)}
    _, columns = columns_for(plans, outcomes, {"r2"})  # r2 paid; r1 and r3 reuse its answer
    assert columns["attempts"] == [0, 3, 0]
    assert columns["latency_ms"] == [None, 950.0, None]
    assert columns["cache_hit"] == [True, False, True]
    assert columns["category"] == ["物流问题"] * 3


def test_an_answer_from_the_cache_is_a_cache_hit_without_attempts_or_latency():
    plans = plan([row("r1")])
    cached = answered(ANSWER, attempts=2, latency_ms=700.0, from_cache=True)
    _, columns = columns_for(plans, {plans[0].cache_key: cached}, {"r1"})
    assert columns["cache_hit"] == [True]
    assert columns["attempts"] == [0]
    assert columns["latency_ms"] == [None]
    assert columns["dify_status"] == ["succeeded"]


def test_a_failure_is_never_a_cache_hit_and_its_attempts_stay_on_the_paying_record():
    plans = plan([row("r1"), row("r2")])
    failed = judge(DifyResult("k", False, attempts=4, latency_ms=30000.0, error_code="gateway_error",
                              error_message="HTTP 502"), TICKET_OUTPUTS)
    _, columns = columns_for(plans, {plans[0].cache_key: failed}, {"r1"})
    assert columns["dify_status"] == ["failed", "failed"]
    assert columns["cache_hit"] == [False, False]
    assert columns["attempts"] == [4, 0]
    assert columns["error_code"] == ["gateway_error", "gateway_error"]
    assert columns["category"] == [None, None]
    assert columns["outputs_json"] == [None, None]


def test_enrichment_columns_carry_the_answer_and_the_run_identity():
    plans = plan([row("r1", subject="快递" * 20)])
    outcome = answered(ANSWER, attempts=1, latency_ms=10.0, total_tokens=321,
                                  total_price=0.0012, currency="USD", run_id="run-1", workflow_id="wf-1")
    _, columns = columns_for(plans, {plans[0].cache_key: outcome}, {"r1"})
    assert json.loads(columns["outputs_json"][0]) == ANSWER
    assert columns["summary"] == ["包裹三天未到。"]
    assert columns["sentiment"] == ["negative"]
    assert (columns["total_tokens"], columns["total_price"], columns["currency"]) == ([321], [0.0012], ["USD"])
    assert (columns["dify_run_id"], columns["dify_workflow_id"]) == (["run-1"], ["wf-1"])
    assert columns["inputs_truncated"] == [True]
    assert columns["enriched_at"] == [ENRICHED_AT]
    assert (columns["app_identity"], columns["cache_version"], columns["pipeline_version"]) == (
        [APP], [VERSION], [PIPELINE_VERSION])


def test_rows_follow_the_order_of_the_plans():
    plans = plan([row(f"r{i}", body=f"body {i}") for i in range(5)])
    outcomes = {p.cache_key: answered({**ANSWER, "summary": p.record_key}) for p in plans}
    _, columns = columns_for(plans, outcomes, {p.record_key for p in plans})
    assert columns["summary"] == [p.record_key for p in plans]


# -- progress --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_stays_quiet_until_the_interval_has_passed():
    clock = FakeClock()
    progress = Progress(total=10, every_seconds=5.0, clock=clock)
    clock.now += 1.0
    assert progress.record(True) is None
    clock.now += 3.9
    assert progress.record(True) is None
    clock.now += 0.1
    assert progress.record(True) is not None
    clock.now += 1.0
    assert progress.record(True) is None  # the interval restarts at each line


def test_progress_line_reports_done_rate_eta_and_failures():
    clock = FakeClock()
    progress = Progress(total=10, every_seconds=5.0, clock=clock)
    clock.now += 2.0
    progress.record(True)
    progress.record(False)
    clock.now += 8.0
    line = progress.record(True)  # 3 done in 10 s: 0.3/s, 7 left -> 23 s
    assert line == "3/10 records (30%), 0.3/s, ETA 23s, 1 failed so far"


def test_progress_always_reports_the_last_record():
    clock = FakeClock()
    progress = Progress(total=2, every_seconds=60.0, clock=clock)
    assert progress.record(True) is None
    line = progress.record(False)
    assert line is not None and line.startswith("2/2 records (100%)")
    assert "1 failed so far" in line


# -- stats -----------------------------------------------------------------------------------------


def test_latency_percentiles_ignore_missing_values():
    latencies = [float(v) for v in range(1, 101)]
    with_gaps = latencies + [None, math.nan]
    assert latency_percentiles(with_gaps) == latency_percentiles(latencies)
    result = latency_percentiles(latencies)
    assert result["p50"] == pytest.approx(50.5, abs=0.05)
    assert result["p50"] < result["p95"] < result["p99"] <= 100.0


def test_a_day_keeps_its_latencies_exactly_up_to_a_bound_then_a_uniform_sample_of_that_size():
    small = LatencySample(capacity=1000)
    for value in range(1, 501):
        small.append(float(value))
    assert latency_percentiles(small) == latency_percentiles([float(v) for v in range(1, 501)])
    large = LatencySample(capacity=1000)
    for value in range(1, 200_001):
        large.append(float(value))
    assert len(large) == 1000 and large.seen == 200_000
    result = latency_percentiles(large)
    assert result["p50"] == pytest.approx(100_000, rel=0.08) and result["p99"] == pytest.approx(198_000, rel=0.02)


def test_latency_percentiles_of_nothing_are_zero():
    assert latency_percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    assert latency_percentiles([None]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


def test_error_counts_skip_successes_and_list_the_commonest_first():
    counts = error_counts([None, "gateway_error", "invalid_category", None, "gateway_error", "", "gateway_error"])
    assert counts == {"gateway_error": 3, "invalid_category": 1}
    assert list(counts) == ["gateway_error", "invalid_category"]


# -- where each answer came from -------------------------------------------------------------------


def test_answer_sources_tell_sent_from_duplicate_within_the_day_from_cache_and_refused():
    from dify_pipeline.infer.enrichment import answer_sources, refused_inputs_outcome
    from dify_pipeline.infer.key_digests import KeyDigests

    first_shard = plan([row("r1", body="a"), row("r2", body="a"), row("r3", body="cached")])
    second_shard = plan([row("r4", body="a"), row("r5", body="cached")])
    refused = [RecordPlanWithProblem("r6")]
    answer = answered(ANSWER)
    cached = answered(ANSWER, from_cache=True)
    outcomes = {first_shard[0].cache_key: answer, first_shard[2].cache_key: cached,
                refused[0].cache_key: refused_inputs_outcome(refused[0])}
    seen = KeyDigests()
    assert answer_sources(first_shard, outcomes, seen) == (["sent", "duplicate", "cache"], [True, False, True])
    assert answer_sources(second_shard, outcomes, seen) == (["duplicate", "cache"], [False, False])
    assert answer_sources(refused, outcomes, seen) == (["refused"], [False])


def RecordPlanWithProblem(key):
    from dify_pipeline.infer.enrichment import RecordPlan

    return RecordPlan(record_key=key, inputs={}, cache_key=f"refused-{key}", inputs_truncated=False,
                      input_problem="option 'x' is not allowed")


def test_another_contracts_outputs_become_typed_columns_and_nothing_of_the_tickets():
    from dify_pipeline.contract import parse_contract
    from dify_pipeline.schemas import enrichment_fields

    outputs = parse_contract({"name": "reviews", "outputs": {
        "sentiment": {"type": "label", "allowed": ["positive", "negative"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "aspects": {"type": "list", "required": False}}}).outputs
    plans = plan([row("r1", body="a"), row("r2", body="b")])
    outcomes = {plans[0].cache_key: answered({"sentiment": "positive", "score": 5, "aspects": ["fit"]},
                                                        outputs, attempts=1),
                plans[1].cache_key: answered({"sentiment": "positive", "score": 9}, outputs, attempts=1)}
    table = enrichment_columns(plans, outcomes, {"r1", "r2"}, APP, VERSION, fields=outputs, enriched_at=ENRICHED_AT)
    assert table.schema == enrichment_fields(outputs)
    assert table.column_names[:3] == ["sentiment", "score", "aspects"] and "category" not in table.column_names
    assert table.column("score").to_pylist() == [5, None]
    assert table.column("aspects").to_pylist() == [["fit"], None]
    assert table.column("error_code").to_pylist() == [None, "invalid_output"]
