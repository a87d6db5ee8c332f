import pytest

from dify_pipeline.infer.app_form import (
    InputMappingError,
    InputVariable,
    check_input_mapping,
    fit_inputs,
    input_variables,
)

# As GET /parameters returns it (other keys of the body trimmed to the ones that matter here).
PARAMETERS = {
    "opening_statement": "",
    "user_input_form": [
        {"text-input": {"label": "Subject", "variable": "subject", "required": True, "max_length": 20, "default": ""}},
        {"paragraph": {"label": "Body", "variable": "body", "required": True, "default": ""}},
        {"select": {"label": "Channel", "variable": "channel", "required": False, "options": ["email", "phone"],
                    "default": ""}},
    ],
    "file_upload": {"image": {"enabled": False}},
    "system_parameters": {"file_size_limit": 15},
}


def test_every_form_control_becomes_a_variable():
    variables = input_variables(PARAMETERS)
    assert variables == {
        "subject": InputVariable(name="subject", required=True, max_length=20, options=()),
        "body": InputVariable(name="body", required=True, max_length=None, options=()),
        "channel": InputVariable(name="channel", required=False, max_length=None, options=("email", "phone")),
    }


def test_an_app_without_a_form_declares_nothing():
    assert input_variables({"user_input_form": []}) == {}
    assert input_variables({}) == {}
    assert input_variables({"user_input_form": None}) == {}


def test_form_items_without_a_variable_name_are_skipped():
    parameters = {"user_input_form": [{"text-input": {"label": "broken"}}, {"paragraph": {"variable": "body"}}]}
    assert list(input_variables(parameters)) == ["body"]


def test_a_mapping_that_covers_the_required_variables_passes():
    variables = input_variables(PARAMETERS)
    check_input_mapping(variables, {"subject": "subject", "body": "body"})
    check_input_mapping(variables, {"subject": "title", "body": "content", "channel": "source"})


def test_mapping_a_variable_the_app_does_not_declare_is_an_error_listing_what_it_declares():
    with pytest.raises(InputMappingError) as caught:
        check_input_mapping(input_variables(PARAMETERS), {"subject": "subject", "body": "body", "priority": "priority"})
    message = str(caught.value)
    assert "priority" in message
    assert "does not declare" in message
    assert "The app declares: body, channel, subject" in message


def test_leaving_a_required_variable_unmapped_is_an_error_naming_it():
    with pytest.raises(InputMappingError) as caught:
        check_input_mapping(input_variables(PARAMETERS), {"subject": "subject"})
    message = str(caught.value)
    assert "required" in message and "body" in message
    assert "channel" not in message.split("The app declares")[0]  # optional: not reported missing


def test_unknown_and_missing_are_reported_together():
    with pytest.raises(InputMappingError) as caught:
        check_input_mapping(input_variables(PARAMETERS), {"title": "subject"})
    message = str(caught.value)
    assert "title" in message
    assert "body, subject" in message


def test_input_mapping_error_is_a_value_error():
    with pytest.raises(ValueError):
        check_input_mapping({}, {"subject": "subject"})


def test_an_app_that_declares_nothing_says_so():
    with pytest.raises(InputMappingError, match="The app declares: nothing"):
        check_input_mapping({}, {"subject": "subject"})


def test_text_longer_than_max_length_is_cut_and_flagged():
    fitted = fit_inputs({"subject": "包裹" * 15, "body": "short"}, input_variables(PARAMETERS))
    assert fitted.inputs == {"subject": ("包裹" * 15)[:20], "body": "short"}
    assert len(fitted.inputs["subject"]) == 20
    assert fitted.truncated


def test_text_within_max_length_is_sent_unchanged():
    subject = "x" * 20
    fitted = fit_inputs({"subject": subject, "body": "y" * 10_000}, input_variables(PARAMETERS))
    assert fitted.inputs == {"subject": subject, "body": "y" * 10_000}  # body declares no max_length
    assert not fitted.truncated


def test_missing_values_are_sent_as_empty_strings():
    fitted = fit_inputs({"subject": None, "body": "b"}, input_variables(PARAMETERS))
    assert fitted.inputs == {"subject": "", "body": "b"}
    assert not fitted.truncated


def test_values_for_undeclared_variables_and_non_text_values_pass_through():
    fitted = fit_inputs({"extra": "z" * 100, "subject": 12345}, input_variables(PARAMETERS))
    assert fitted.inputs == {"extra": "z" * 100, "subject": 12345}
    assert not fitted.truncated


def test_a_select_value_outside_the_options_is_a_problem_not_a_paid_call():
    variables = {"priority": InputVariable("priority", required=True, max_length=None, options=("low", "high"))}
    assert fit_inputs({"priority": "high"}, variables).problem is None
    problem = fit_inputs({"priority": "urgent"}, variables).problem
    assert problem and "priority" in problem and "'urgent'" in problem and "low" in problem


def test_an_empty_optional_select_is_no_problem_but_an_empty_required_one_is():
    optional = {"tag": InputVariable("tag", required=False, max_length=None, options=("a", "b"))}
    required = {"tag": InputVariable("tag", required=True, max_length=None, options=("a", "b"))}
    assert fit_inputs({"tag": None}, optional).problem is None
    assert fit_inputs({"tag": None}, required).problem is not None
