import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from dify_pipeline.resources.dify.errors import (
    FailureBreaker,
    classify_failed_run,
    classify_http_error,
    classify_stream_error,
    parse_retry_after,
)

DIFY_CONCURRENCY_LIMIT = (
    "Too many requests. Please try again later. The current maximum concurrent requests allowed for app-1 is 2."
)
GATEWAY_HTML = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"


def dify_body(code: str, message: str, status: int = 400) -> str:
    return json.dumps({"code": code, "message": message, "status": status})


# -- Retry-After -----------------------------------------------------------------------------------


def test_retry_after_in_seconds_is_read_as_seconds():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5


def test_retry_after_as_http_date_is_the_time_left_until_that_date():
    now = datetime(2026, 3, 8, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(header, now=now) == 90.0


def test_retry_after_in_the_past_or_negative_means_no_wait():
    now = datetime(2026, 3, 8, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now - timedelta(minutes=5), usegmt=True), now=now) == 0.0
    assert parse_retry_after("-3") == 0.0


@pytest.mark.parametrize("header", [None, "", "soon", "Mon, 99 Foo 2026"])
def test_retry_after_absent_or_unreadable_is_none(header):
    assert parse_retry_after(header) is None


# -- HTTP errors -----------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_is_a_throttle_carrying_the_wait():
    error = classify_http_error(429, "", "30")
    assert (error.retryable, error.throttled, error.fatal) == (True, True, False)
    assert error.retry_after == 30.0
    assert error.http_status == 429
    assert error.code == "too_many_requests"


def test_429_with_retry_after_http_date_waits_until_that_date():
    header = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    error = classify_http_error(429, "", header)
    assert error.throttled
    assert 55.0 <= error.retry_after <= 60.0


def test_429_without_retry_after_is_a_throttle_with_no_server_wait():
    error = classify_http_error(429, GATEWAY_HTML)
    assert error.throttled and error.retryable
    assert error.retry_after is None


def test_429_keeps_difys_own_error_code():
    error = classify_http_error(429, dify_body("rate_limit_error", "Rate Limit Error", 429))
    assert error.code == "rate_limit_error"
    assert error.throttled


def test_difys_per_app_limit_sent_as_400_invalid_param_is_a_throttle():
    error = classify_http_error(400, dify_body("invalid_param", DIFY_CONCURRENCY_LIMIT))
    assert error.code == "too_many_requests"
    assert (error.retryable, error.throttled, error.fatal) == (True, True, False)
    assert error.http_status == 400
    assert error.message == DIFY_CONCURRENCY_LIMIT


def test_other_invalid_param_is_a_permanent_error_for_that_record_only():
    error = classify_http_error(400, dify_body("invalid_param", "body in input form must be less than 2000 characters"))
    assert error.code == "invalid_param"
    assert (error.retryable, error.throttled, error.fatal) == (False, False, False)
    assert "2000 characters" in error.message


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_html_bodies_are_retryable_gateway_errors(status):
    error = classify_http_error(status, GATEWAY_HTML)
    assert error.code == "gateway_error"
    assert error.retryable and not error.fatal
    assert str(status) in error.message


def test_500_with_an_html_body_is_a_retryable_server_error():
    error = classify_http_error(500, "<html>Internal Server Error</html>")
    assert error.code == "server_error"
    assert error.retryable and not error.fatal


def test_500_keeps_difys_own_error_code_and_message():
    error = classify_http_error(500, dify_body("internal_server_error", "The server encountered an internal error.",
                                               500))
    assert error.code == "internal_server_error"
    assert error.message == "The server encountered an internal error."
    assert error.retryable


def test_only_503_with_a_retry_after_among_server_errors_asks_us_to_slow_down():
    """A rare 503 is one record's trouble; pausing everyone for it cost 97% of the rate (issue 10)."""
    assert classify_http_error(503, GATEWAY_HTML, "3").throttled
    assert not classify_http_error(503, GATEWAY_HTML).throttled
    assert not classify_http_error(502, GATEWAY_HTML).throttled
    assert not classify_http_error(500, GATEWAY_HTML).throttled


def test_503_honours_its_retry_after():
    assert classify_http_error(503, GATEWAY_HTML, "7").retry_after == 7.0


def test_request_timeout_408_is_retryable():
    assert classify_http_error(408, "").retryable


@pytest.mark.parametrize(("status", "code"), [(401, "unauthorized"), (403, "forbidden")])
def test_401_and_403_stop_the_run_and_name_the_key_and_url_to_check(status, code):
    error = classify_http_error(status, dify_body(code, "Access token is invalid", status))
    assert error.code == code
    assert error.fatal and not error.retryable
    assert "DIFY_API_KEY" in error.message and "DIFY_BASE_URL" in error.message
    assert "Access token is invalid" in error.message


def test_401_with_an_empty_body_still_gets_the_hint():
    error = classify_http_error(401, "")
    assert error.fatal
    assert "DIFY_API_KEY" in error.message


def test_404_stops_the_run_and_points_at_the_base_url():
    error = classify_http_error(404, GATEWAY_HTML)
    assert error.code == "not_found"
    assert error.fatal and not error.retryable
    assert "DIFY_BASE_URL" in error.message


@pytest.mark.parametrize(
    "code", ["app_unavailable", "provider_quota_exceeded", "provider_not_initialize", "not_workflow_app"]
)
def test_app_and_quota_errors_stop_the_run(code):
    error = classify_http_error(400, dify_body(code, "whatever Dify says"))
    assert error.code == code
    assert error.fatal and not error.retryable


def test_unknown_client_error_without_a_body_is_permanent_and_named_by_status():
    error = classify_http_error(413, GATEWAY_HTML)
    assert error.code == "http_413"
    assert (error.retryable, error.fatal) == (False, False)


def test_error_message_from_the_body_is_bounded():
    error = classify_http_error(400, dify_body("invalid_param", "x" * 5000))
    assert 0 < len(error.message) <= 500


def test_error_string_shows_code_and_message():
    error = classify_http_error(400, dify_body("invalid_param", "subject is required"))
    assert str(error) == "invalid_param: subject is required"


# -- failed runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Request timed out.",
        "[openai] Rate limit reached for gpt-4o in organization org-x",
        "Error code: 503 - {'error': 'model overloaded'}",
        "Connection error.",
        "Service temporarily unavailable, please try again",
    ],
)
def test_failed_run_with_passing_provider_trouble_is_retried(message):
    error = classify_failed_run(message)
    assert error.code == "run_failed"
    assert error.retryable and not error.fatal
    assert error.message == message


@pytest.mark.parametrize(
    "message", ["Variable #body# is required", "Invalid JSON in LLM output", "Model gpt-x does not exist"]
)
def test_failed_run_with_a_problem_in_the_record_or_app_is_not_retried(message):
    error = classify_failed_run(message)
    assert not error.retryable and not error.fatal


SANDBOX_DOWN = ("Failed to execute code, which is likely a network issue, please check if the sandbox service is "
                "running. ( Error: [Errno 111] Connection refused )")


def test_a_node_that_cannot_reach_its_sandbox_is_not_our_network_and_is_not_retried():
    """Seen on a real Dify 1.11.4: every record was paid five times because 'Connection refused' looked transient."""
    error = classify_failed_run(SANDBOX_DOWN)
    assert not error.retryable and not error.server_trouble


@pytest.mark.parametrize("message", ["Request timed out.", "Connection error.", "Service temporarily unavailable"])
def test_a_failed_run_that_may_have_been_a_hiccup_is_retried_once_only(message):
    error = classify_failed_run(message)
    assert error.retryable and error.attempts_cap == 2 and not error.server_trouble


@pytest.mark.parametrize("message", ["[openai] Rate limit reached for gpt-4o", "Error code: 503 - model overloaded"])
def test_a_failed_run_throttled_at_the_model_provider_keeps_the_full_budget(message):
    error = classify_failed_run(message)
    assert error.retryable and error.attempts_cap is None


def test_failed_run_without_an_error_text_says_which_status_it_ended_in():
    error = classify_failed_run(None, status="stopped")
    assert error.code == "run_stopped"
    assert "stopped" in error.message
    assert not error.retryable


def test_failed_run_status_with_a_dash_becomes_a_valid_code():
    assert classify_failed_run("x", status="partial-succeeded").code == "run_partial_succeeded"


# -- the breaker ----------------------------------------------------------------------------------


def test_the_breaker_trips_when_half_of_the_last_twenty_answers_fail_the_same_way():
    breaker = FailureBreaker(window=20, threshold=10)
    sandbox = classify_failed_run(SANDBOX_DOWN)
    tripped = [breaker.record(f"r{i}", sandbox if i % 2 else None) for i in range(19)]
    assert not any(tripped)
    assert breaker.record("r19", sandbox)
    message = breaker.message()
    assert "10 of the last 20" in message and "Connection refused" in message and "r1" in message


def test_the_breaker_ignores_different_failures_and_server_trouble():
    breaker = FailureBreaker(window=20, threshold=10)
    for i in range(40):
        assert not breaker.record(f"r{i}", classify_failed_run(f"Variable #{i}# is required"))
        assert not breaker.record(f"s{i}", classify_http_error(502, GATEWAY_HTML))
    assert breaker.tripped is None


def test_successes_dilute_the_breakers_window():
    breaker = FailureBreaker(window=20, threshold=10)
    refused = classify_http_error(400, dify_body("invalid_param", "body in input form must be less than 4000"))
    for i in range(200):
        assert not breaker.record(f"r{i}", refused if i % 3 == 0 else None)


# -- stream error events ---------------------------------------------------------------------------


def test_stream_error_event_with_difys_concurrency_limit_is_a_throttle():
    event = {"event": "error", "task_id": "t", "status": 400, "code": "invalid_param",
             "message": DIFY_CONCURRENCY_LIMIT}
    error = classify_stream_error(event)
    assert error.code == "too_many_requests"
    assert error.throttled and error.retryable


def test_stream_error_event_with_a_quota_error_stops_the_run():
    event = {"event": "error", "status": 400, "code": "provider_quota_exceeded", "message": "quota exceeded"}
    assert classify_stream_error(event).fatal


def test_stream_error_event_with_a_record_problem_is_permanent():
    error = classify_stream_error({"event": "error", "status": 400, "code": "completion_request_error",
                                   "message": "bad"})
    assert error.code == "completion_request_error"
    assert not error.retryable and not error.fatal


def test_stream_error_event_without_a_status_is_a_retryable_server_error():
    error = classify_stream_error({"event": "error", "message": "Internal Server Error"})
    assert error.retryable and not error.fatal
    assert error.http_status == 500


# -- chat apps and pinned versions ---------------------------------------------------------------------


def test_a_chatflow_run_that_failed_is_judged_as_a_failed_run_not_as_a_refused_input():
    sandbox = "Failed to execute code ( Error: [Errno 111] Connection refused )"
    error = classify_http_error(400, dify_body("invalid_param", f"Run failed: {sandbox}"))
    assert (error.code, error.message, error.retryable, error.fatal) == ("run_failed", sandbox, False, False)
    throttled = classify_stream_error({"event": "error", "status": 400, "code": "invalid_param",
                                       "message": "Run failed: Rate limit reached for requests"})
    assert throttled.code == "run_failed" and throttled.retryable


@pytest.mark.parametrize(("status", "code", "message"), [
    (404, "not_found", "Workflow not found with id: 0b5c8a34-4e0b-4a3f-8f0e-0d1e2f3a4b5c"),
    (400, "bad_request", "Invalid workflow_id format: 'v1'. "),
    (400, "bad_request", "Cannot use draft workflow version. Workflow ID: 0b5c. Please use a published workflow "
                         "version or leave workflow_id empty."),
])
def test_a_pinned_version_dify_refuses_stops_the_run_with_its_own_code(status, code, message):
    error = classify_http_error(status, dify_body(code, message, status))
    assert (error.code, error.fatal, error.retryable) == ("workflow_version_unavailable", True, False)
    assert error.message.startswith(message) and "DIFY_API_KEY" in error.message


def test_another_404_still_points_at_the_base_url():
    error = classify_http_error(404, dify_body("not_found", "The requested URL was not found on the server.", 404))
    assert error.code == "not_found" and "DIFY_BASE_URL" in error.message


def test_a_key_of_another_kind_of_app_stops_a_chat_run():
    error = classify_http_error(400, dify_body("not_chat_app", "Please check if your app mode matches the right API "
                                                               "route."))
    assert error.fatal
