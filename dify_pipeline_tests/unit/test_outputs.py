import json

import pytest

from dify_pipeline.contract import TICKET_OUTPUTS, OutputField, parse_contract
from dify_pipeline.infer.outputs import parse_outputs
from dify_pipeline.resources.dify.errors import DifyCallError

ANSWER = {"category": "退款申请", "summary": "客户要求退回重复扣款。", "sentiment": "negative"}
EXPECTED = dict(ANSWER)


def parse_enrichment(outputs, fields):
    """The ticket outputs, or `fields` given as a list of allowed categories."""
    if isinstance(fields, list):
        fields = {**TICKET_OUTPUTS, "category": OutputField(type="label", allowed=fields)}
    return parse_outputs(outputs, fields)


def contract_error(outputs) -> DifyCallError:
    with pytest.raises(DifyCallError) as caught:
        parse_enrichment(outputs, TICKET_OUTPUTS)
    return caught.value


def test_fields_are_read_from_a_workflow_outputs_object():
    assert parse_enrichment(dict(ANSWER), TICKET_OUTPUTS) == EXPECTED


def test_fields_are_read_from_json_text_in_a_single_output_field():
    outputs = {"text": json.dumps(ANSWER, ensure_ascii=False)}
    assert parse_enrichment(outputs, TICKET_OUTPUTS) == EXPECTED


def test_fields_are_read_from_a_completion_answer_in_a_json_fence():
    answer = "```json\n" + json.dumps(ANSWER, ensure_ascii=False, indent=2) + "\n```"
    assert parse_enrichment(answer, TICKET_OUTPUTS) == EXPECTED


def test_fields_are_read_from_a_fence_without_a_language_tag_in_an_output_field():
    outputs = {"result": "```\n" + json.dumps(ANSWER, ensure_ascii=False) + "\n```"}
    assert parse_enrichment(outputs, TICKET_OUTPUTS) == EXPECTED


def test_fields_are_read_from_a_plain_json_answer():
    assert parse_enrichment(json.dumps(ANSWER, ensure_ascii=False), TICKET_OUTPUTS) == EXPECTED


def test_other_output_fields_next_to_the_json_text_are_ignored():
    outputs = {"reasoning": "the customer was charged twice", "text": json.dumps(ANSWER, ensure_ascii=False)}
    assert parse_enrichment(outputs, TICKET_OUTPUTS) == EXPECTED


def test_sentiment_is_normalised_and_summary_trimmed():
    answer = {**ANSWER, "sentiment": " Negative ", "summary": "  客户要求退回重复扣款。\n"}
    result = parse_enrichment(answer, TICKET_OUTPUTS)
    assert result == EXPECTED


def test_a_category_outside_the_allowed_labels_is_invalid_category():
    error = contract_error({**ANSWER, "category": "投诉"})
    assert error.code == "invalid_category"
    assert "投诉" in error.message
    assert not error.retryable


def test_allowed_labels_come_from_the_caller_not_the_default_list():
    assert parse_enrichment({**ANSWER, "category": "billing"}, ["billing"])["category"] == "billing"
    with pytest.raises(DifyCallError):
        parse_enrichment(dict(ANSWER), ["billing"])


def test_an_unknown_sentiment_is_invalid_sentiment_the_code_naming_the_label():
    error = contract_error({**ANSWER, "sentiment": "angry"})
    assert error.code == "invalid_sentiment"
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


# -- outputs of any declared type --------------------------------------------------------------------------------

REVIEW_OUTPUTS = parse_contract({
    "name": "reviews",
    "outputs": {
        "sentiment": {"type": "label", "allowed": ["positive", "neutral", "negative"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "aspects": {"type": "list", "required": False},
        "confidence": {"type": "number", "required": False, "minimum": 0, "maximum": 1},
        "needs_reply": {"type": "boolean", "required": False},
        "details": {"type": "json", "required": False},
    },
}).outputs


def review_error(answer) -> DifyCallError:
    with pytest.raises(DifyCallError) as caught:
        parse_outputs(answer, REVIEW_OUTPUTS)
    return caught.value


def test_each_declared_type_is_read_and_typed():
    answer = {"sentiment": "Positive", "score": "4", "aspects": ["battery", " screen "], "confidence": 0.8,
              "needs_reply": "yes", "details": {"b": [1, 2], "a": None}}
    assert parse_outputs(json.dumps(answer), REVIEW_OUTPUTS) == {
        "sentiment": "positive", "score": 4, "aspects": ["battery", "screen"], "confidence": 0.8,
        "needs_reply": True, "details": '{"a": null, "b": [1, 2]}',
    }


def test_optional_outputs_may_be_missing_and_required_ones_may_not():
    assert parse_outputs({"sentiment": "neutral", "score": 3}, REVIEW_OUTPUTS) == {
        "sentiment": "neutral", "score": 3, "aspects": None, "confidence": None, "needs_reply": None,
        "details": None}
    error = review_error({"sentiment": "neutral"})
    assert error.code == "invalid_output" and "score" in error.message


@pytest.mark.parametrize("score, reason", [(0, "below the minimum 1"), (6, "above the maximum 5"),
                                           (3.5, "not a whole number"), ("three", "not a number"),
                                           (True, "not a number")])
def test_an_integer_out_of_range_or_of_another_type_is_invalid_output(score, reason):
    error = review_error({"sentiment": "neutral", "score": score})
    assert error.code == "invalid_output" and reason in error.message


def test_a_list_may_arrive_as_json_text_or_one_string_but_not_as_objects():
    assert parse_outputs({"sentiment": "neutral", "score": 3, "aspects": '["price"]'}, REVIEW_OUTPUTS)["aspects"] == [
        "price"]
    assert parse_outputs({"sentiment": "neutral", "score": 3, "aspects": "price"}, REVIEW_OUTPUTS)["aspects"] == [
        "price"]
    assert review_error({"sentiment": "neutral", "score": 3, "aspects": [{"x": 1}]}).code == "invalid_output"


def test_a_boolean_that_is_neither_true_nor_false_is_invalid_output():
    assert review_error({"sentiment": "neutral", "score": 3, "needs_reply": "maybe"}).code == "invalid_output"
