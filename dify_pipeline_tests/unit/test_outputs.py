import json

import pytest

from dify_pipeline.contract import DEFAULT_CATEGORIES
from dify_pipeline.resources.dify.errors import DifyCallError
from dify_pipeline.infer.outputs import Enrichment, parse_enrichment

ANSWER = {"category": "退款申请", "summary": "客户要求退回重复扣款。", "sentiment": "negative"}
EXPECTED = Enrichment(category="退款申请", summary="客户要求退回重复扣款。", sentiment="negative")


def contract_error(outputs) -> DifyCallError:
    with pytest.raises(DifyCallError) as caught:
        parse_enrichment(outputs, DEFAULT_CATEGORIES)
    return caught.value


def test_fields_are_read_from_a_workflow_outputs_object():
    assert parse_enrichment(dict(ANSWER), DEFAULT_CATEGORIES) == EXPECTED


def test_fields_are_read_from_json_text_in_a_single_output_field():
    outputs = {"text": json.dumps(ANSWER, ensure_ascii=False)}
    assert parse_enrichment(outputs, DEFAULT_CATEGORIES) == EXPECTED


def test_fields_are_read_from_a_completion_answer_in_a_json_fence():
    answer = "```json\n" + json.dumps(ANSWER, ensure_ascii=False, indent=2) + "\n```"
    assert parse_enrichment(answer, DEFAULT_CATEGORIES) == EXPECTED


def test_fields_are_read_from_a_fence_without_a_language_tag_in_an_output_field():
    outputs = {"result": "```\n" + json.dumps(ANSWER, ensure_ascii=False) + "\n```"}
    assert parse_enrichment(outputs, DEFAULT_CATEGORIES) == EXPECTED


def test_fields_are_read_from_a_plain_json_answer():
    assert parse_enrichment(json.dumps(ANSWER, ensure_ascii=False), DEFAULT_CATEGORIES) == EXPECTED


def test_other_output_fields_next_to_the_json_text_are_ignored():
    outputs = {"reasoning": "the customer was charged twice", "text": json.dumps(ANSWER, ensure_ascii=False)}
    assert parse_enrichment(outputs, DEFAULT_CATEGORIES) == EXPECTED


def test_sentiment_is_normalised_and_summary_trimmed():
    result = parse_enrichment({**ANSWER, "sentiment": " Negative ", "summary": "  客户要求退回重复扣款。\n"}, DEFAULT_CATEGORIES)
    assert result == EXPECTED


def test_a_category_outside_the_allowed_labels_is_invalid_category():
    error = contract_error({**ANSWER, "category": "投诉"})
    assert error.code == "invalid_category"
    assert "投诉" in error.message
    assert not error.retryable


def test_allowed_labels_come_from_the_caller_not_the_default_list():
    assert parse_enrichment({**ANSWER, "category": "billing"}, ["billing"]).category == "billing"
    with pytest.raises(DifyCallError):
        parse_enrichment(dict(ANSWER), ["billing"])


def test_an_unknown_sentiment_is_invalid_output():
    error = contract_error({**ANSWER, "sentiment": "angry"})
    assert error.code == "invalid_output"
    assert "angry" in error.message


@pytest.mark.parametrize(
    "outputs",
    [
        None,
        "",
        "the ticket is about a refund",
        "```json\n{not json}\n```",
        "[1, 2, 3]",
        {},
        {"text": "no json here"},
        {"answer": 42},
    ],
)
def test_answers_without_the_fields_are_invalid_output_not_a_crash(outputs):
    error = contract_error(outputs)
    assert error.code == "invalid_output"
    assert not error.retryable and not error.fatal


def test_invalid_output_message_shows_a_bounded_preview_of_the_answer():
    error = contract_error("I cannot help with that. " * 50)
    assert "I cannot help with that." in error.message
    assert len(error.message) < 300
