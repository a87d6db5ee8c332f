"""The Dify client against the Dify emulator over real HTTP: retries, throttling, modes, recovery, fatal errors,
chat apps, version pinning."""

from __future__ import annotations

import gc
import json
import time
from datetime import UTC

import pytest

from dify_pipeline.resources.dify import DifyFatalError, DifyRequest, DifyResource
from dify_pipeline_dev.emulators.dify import DifyApp, DifyEmulatorConfig, Fault, answer_for, reviews_app
from dify_pipeline_tests.integration.pipeline import DIFY_KEY

COMPLETION_KEY = "app-completion-test-key"


def configure(emulator, **config):
    apps = config.pop("apps", [DifyApp(api_key=DIFY_KEY), DifyApp(api_key=COMPLETION_KEY, mode="completion")])
    emulator.configure(DifyEmulatorConfig(apps=apps, **{"latency_ms": 5, **config}))
    emulator.reset()


def client(emulator, **settings) -> DifyResource:
    defaults = dict(base_url=emulator.base_url, api_key=DIFY_KEY, backoff_initial_seconds=0.05, backoff_max_seconds=0.5)
    return DifyResource(**{**defaults, **settings})


def requests_for(count: int, prefix: str = "ticket") -> list[DifyRequest]:
    return [DifyRequest(f"{prefix}-{i}", {"subject": f"{prefix} {i}: 快递 delayed", "body": f"body {i}"})
            for i in range(count)]


def run(resource: DifyResource, requests: list[DifyRequest]):
    results = {}
    counters = resource.run_all(requests, lambda r: results.__setitem__(r.record_key, r))
    return results, counters


def test_the_heap_held_before_a_batch_is_frozen_out_of_the_collector_while_it_runs(dify_emulator):
    """A full collection walks every object the process holds (Dagster's too): ~150 ms with the loop stopped and
    50 answers waiting, once every ~20 s of a day. Frozen for the batch, restored after."""
    configure(dify_emulator)
    gc.unfreeze()  # an emulator run in this process by an earlier test may have frozen its heap
    frozen_while_answered: list[int] = []
    client(dify_emulator).run_all(requests_for(10), lambda r: frozen_while_answered.append(gc.get_freeze_count()))
    assert len(frozen_while_answered) == 10 and min(frozen_while_answered) > 1000
    assert gc.get_freeze_count() == 0


def test_blocking_workflow_answers_every_record_once(dify_emulator):
    configure(dify_emulator)
    requests = requests_for(40)
    results, counters = run(client(dify_emulator, max_concurrency=8), requests)
    assert len(results) == 40 and all(r.succeeded for r in results.values())
    first = results["ticket-0"]
    assert first.outputs == answer_for(requests[0].inputs)
    assert first.run_id and first.workflow_id and first.attempts == 1 and first.total_tokens > 0
    assert dify_emulator.stats()["paid_runs"] == 40 == counters["http_attempts"]


def test_concurrency_never_exceeds_the_configured_limit(dify_emulator):
    configure(dify_emulator, latency_ms=40)
    run(client(dify_emulator, max_concurrency=5), requests_for(60))
    assert dify_emulator.stats()["max_active_runs"] <= 5


def test_dify_per_app_limit_as_http_400_is_throttling_and_the_client_adapts(dify_emulator):
    """Dify answers its APP_MAX_ACTIVE_REQUESTS limit with 400 invalid_param 'Too many requests.' — not 429."""
    configure(dify_emulator, latency_ms=30, apps=[DifyApp(api_key=DIFY_KEY, max_active_requests=4)])
    results, counters = run(client(dify_emulator, max_concurrency=16), requests_for(200))
    assert all(r.succeeded for r in results.values())
    stats = dify_emulator.stats()
    assert stats["rejected_concurrency"] > 0 and counters["throttled"] == stats["rejected_concurrency"]
    assert stats["max_active_runs"] <= 4
    assert counters["http_attempts"] <= 1.2 * 200  # adapted instead of hammering


def test_retry_after_pauses_every_new_request_not_just_the_throttled_one(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="http_429", first_n=1, retry_after=1.0)])
    started = time.monotonic()
    results, counters = run(client(dify_emulator, max_concurrency=4), requests_for(12))
    assert all(r.succeeded for r in results.values())
    assert counters["throttled"] == 1 and counters["retries"] == 1
    arrivals = sorted(dify_emulator.stats()["run_arrivals"])
    # The first wave of 4 met one 429: its 3 siblings were already under way, then nothing until the cool-down ended.
    assert sum(1 for t in arrivals if t - started < 0.95) == 3
    assert len(arrivals) == 12


def test_a_200_whose_body_was_cut_is_looked_up_not_paid_again(dify_emulator):
    """141 of 3,100 cut bodies were paid twice (issue 10): the run finished, so its answer is fetched."""
    configure(dify_emulator, faults=[Fault(kind="malformed_json", times_per_input=1)])
    requests = requests_for(6)
    results, counters = run(client(dify_emulator), requests)
    assert all(r.succeeded and r.recovered and r.attempts == 1 for r in results.values())
    assert results["ticket-0"].outputs == answer_for(requests[0].inputs)
    stats = dify_emulator.stats()
    assert counters["recovered_runs"] == 6 and stats["paid_runs"] == stats["distinct_inputs"] == 6


@pytest.mark.parametrize("kind", ["http_500", "http_502_html", "http_503", "drop"])
def test_transient_failures_are_retried_until_success(dify_emulator, kind):
    configure(dify_emulator, faults=[Fault(kind=kind, times_per_input=1)])
    results, counters = run(client(dify_emulator), requests_for(6))
    assert all(r.succeeded and r.attempts == 2 for r in results.values()), {
        k: (r.error_code, r.attempts) for k, r in results.items()}
    assert counters["retries"] == 6


def test_a_timeout_is_retried(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="timeout", times_per_input=1, hang_seconds=5)])
    results, _ = run(client(dify_emulator, request_timeout_seconds=0.5), requests_for(3))
    assert all(r.succeeded and r.attempts == 2 for r in results.values())


def test_retries_are_bounded_and_the_failure_is_kept_as_data(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="http_500", match="ticket 1:")])
    results, _ = run(client(dify_emulator, max_attempts=3), requests_for(3))
    failed = results["ticket-1"]
    assert not failed.succeeded and failed.attempts == 3 and failed.error_code == "internal_server_error"
    assert results["ticket-0"].succeeded and results["ticket-2"].succeeded


def test_a_failed_run_inside_a_200_is_a_failure_not_a_success(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="failed_run", match="ticket 0:")])
    results, _ = run(client(dify_emulator), requests_for(2))
    assert not results["ticket-0"].succeeded and results["ticket-0"].error_code == "run_failed"
    assert results["ticket-0"].attempts == 1  # a permanent failure is not retried blindly
    assert results["ticket-1"].succeeded


def test_a_revoked_key_stops_the_run_fast_with_a_clear_message_and_no_secret(dify_emulator):
    configure(dify_emulator)
    secret = "app-revoked-secret-value"
    with pytest.raises(DifyFatalError) as raised:
        run(client(dify_emulator, api_key=secret, max_concurrency=4), requests_for(200))
    message = str(raised.value)
    assert "DIFY_API_KEY" in message and "unauthorized" in message and secret not in message
    assert dify_emulator.stats()["requests_total"] <= 8  # stopped, instead of trying all 200


def test_quota_exceeded_stops_the_run(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="quota_exceeded")])
    with pytest.raises(DifyFatalError, match="provider_quota_exceeded"):
        run(client(dify_emulator, max_concurrency=2), requests_for(50))
    assert dify_emulator.stats()["requests_total"] <= 4


def test_requests_per_minute_paces_new_runs(dify_emulator):
    configure(dify_emulator)
    run(client(dify_emulator, max_concurrency=8, requests_per_minute=600), requests_for(15))
    arrivals = sorted(dify_emulator.stats()["run_arrivals"])
    # 600/min = one start every 0.1 s; arrivals jitter by a few ms on a loaded machine, the pace does not.
    assert arrivals[-1] - arrivals[0] >= 14 * 0.1 * 0.95
    assert max(sum(1 for t in arrivals if start <= t < start + 0.5) for start in arrivals) <= 6


@pytest.mark.parametrize("app_mode,key", [("workflow", DIFY_KEY), ("completion", COMPLETION_KEY)])
@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_both_app_kinds_in_both_modes_give_the_same_answer(dify_emulator, app_mode, key, response_mode):
    configure(dify_emulator, ping_interval=0.01, latency_ms=30)
    requests = requests_for(5)
    results, _ = run(client(dify_emulator, api_key=key, app_mode=app_mode, response_mode=response_mode), requests)
    for request in requests:
        result = results[request.record_key]
        assert result.succeeded and result.run_id and result.total_tokens
        answer = result.outputs if app_mode == "workflow" else json.loads(result.outputs)
        assert answer == answer_for(request.inputs)


def test_a_stream_dropped_after_the_run_started_is_recovered_without_paying_again(dify_emulator):
    configure(dify_emulator, latency_ms=200, faults=[Fault(kind="drop_mid_stream", match="ticket 1:")])
    results, counters = run(client(dify_emulator, response_mode="streaming"), requests_for(3))
    recovered = results["ticket-1"]
    assert recovered.succeeded and recovered.recovered and recovered.attempts == 1
    assert counters["recovered_runs"] == 1
    assert dify_emulator.stats()["paid_runs"] == 3  # one run per record: the dropped one was not sent again


def test_parameters_are_read_from_the_app(dify_emulator):
    configure(dify_emulator)
    form = client(dify_emulator).fetch_parameters()["user_input_form"]
    assert {next(iter(item.values()))["variable"] for item in form} == {"subject", "body"}


@pytest.mark.parametrize("kind", ["http_500", "http_502_html", "drop", "malformed_json"])
def test_streaming_faults_end_in_an_answer_paid_once_per_run(dify_emulator, kind):
    """Before the stream starts: retried. A stream whose last event is cut: the run is fetched, not re-sent."""
    configure(dify_emulator, ping_interval=0.01, latency_ms=20, faults=[Fault(kind=kind, times_per_input=1)])
    results, counters = run(client(dify_emulator, response_mode="streaming"), requests_for(4))
    assert all(r.succeeded for r in results.values()), {k: r.error_code for k, r in results.items()}
    if kind == "malformed_json":  # the run was created and paid: fetched with GET /workflows/run/{id}
        assert counters["recovered_runs"] == 4 and dify_emulator.stats()["paid_runs"] == 4
    else:
        assert counters["retries"] == 4


def test_a_stream_error_event_is_a_failure_with_its_code(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="quota_exceeded")])
    with pytest.raises(DifyFatalError, match="provider_quota_exceeded"):
        run(client(dify_emulator, response_mode="streaming", max_concurrency=1), requests_for(3))


def test_being_throttled_longer_than_the_error_budget_does_not_fail_the_record(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="http_429", times_per_input=6)])
    results, counters = run(client(dify_emulator, max_attempts=3, max_concurrency=2), requests_for(2))
    assert all(r.succeeded and r.attempts == 7 for r in results.values())
    assert counters["throttled"] == 12


@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_an_app_whose_every_run_fails_stops_the_day_after_few_paid_runs(dify_emulator, response_mode):
    """Every run ends 200 + status failed with the sandbox error of a real 1.11.4 run: 2,005 runs for 401 records."""
    configure(dify_emulator, faults=[Fault(kind="failed_run_sandbox")])
    received = {}
    with pytest.raises(DifyFatalError) as raised:
        client(dify_emulator, response_mode=response_mode).run_all(
            requests_for(400), lambda r: received.__setitem__(r.record_key, r))
    message = str(raised.value)
    assert "run_failed" in message and "Connection refused" in message and "ticket-" in message
    assert dify_emulator.stats()["paid_runs"] <= 50
    assert received and all(r.error_code == "run_failed" for r in received.values())  # what was paid is kept


def test_a_failed_run_blaming_the_sandbox_connection_is_retried_at_most_once(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="failed_run_sandbox", match="ticket 0:")])
    results, counters = run(client(dify_emulator), requests_for(3))
    assert results["ticket-0"].error_code == "run_failed" and results["ticket-0"].attempts <= 2
    assert dify_emulator.stats()["paid_runs"] <= 4
    assert counters["failed_runs"] == dify_emulator.stats()["failed_runs"]  # paid for: counted


def test_a_breaker_ignores_a_few_failures_among_many_successes(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="failed_run_sandbox", probability=0.1)])
    results, _ = run(client(dify_emulator), requests_for(200))
    assert len(results) == 200 and sum(r.succeeded for r in results.values()) >= 150


def test_a_rare_5xx_retries_that_record_alone_and_does_not_pause_everyone(dify_emulator):
    """2% of answers 500/502/503/504 without Retry-After: no global pause (it cost 97% of the rate, issue 10)."""
    kinds = ["http_500", "http_502_html", "http_503", "http_504_html"]
    configure(dify_emulator, latency_ms=20, seed=3, faults=[Fault(kind=k, probability=0.005) for k in kinds])
    resource = client(dify_emulator, max_concurrency=16, backoff_initial_seconds=2.0, backoff_max_seconds=60.0)
    results, counters = run(resource, requests_for(600))
    assert all(r.succeeded for r in results.values()) and counters["retries"] >= 2
    arrivals = sorted(dify_emulator.stats()["run_arrivals"])
    body = arrivals[: int(len(arrivals) * 0.9)]  # the retried records arrive last, after their own backoff
    # a pause of everyone waits at least half the initial backoff (1 s); a loaded CI machine stalls ~0.3 s
    assert max(b - a for a, b in zip(body, body[1:])) < 0.8


@pytest.mark.parametrize("kind", ["http_503", "http_429"])
def test_a_server_answering_nothing_but_errors_ends_the_step_after_the_outage_bound(dify_emulator, kind):
    configure(dify_emulator, faults=[Fault(kind=kind)])
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(DifyFatalError) as raised:
        client(dify_emulator, max_outage_seconds=1.5).run_all(requests_for(50), lambda r: None, log=lines.append)
    assert 1.5 <= time.monotonic() - started < 8
    assert "DIFY_MAX_OUTAGE_SECONDS" in str(raised.value)
    assert any("done in the last minute" in line for line in lines), lines


def test_the_outage_clock_restarts_when_the_server_answers_again(dify_emulator):
    configure(dify_emulator, faults=[Fault(kind="http_503", first_n=30)])
    results, _ = run(client(dify_emulator, max_outage_seconds=3, max_concurrency=4), requests_for(40))
    assert len(results) == 40 and all(r.succeeded for r in results.values())


@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_default_settings_against_a_server_capped_at_ten_connections_neither_starve_nor_pay_twice(
        dify_emulator, response_mode):
    """Dify's gevent worker serves 10 connections; 16 in flight kept 6 unaccepted behind reused ones (issue 10)."""
    configure(dify_emulator, latency_ms=100, server_worker_connections=10, server_keep_alive_seconds=2.0)
    results, counters = run(client(dify_emulator, response_mode=response_mode, request_timeout_seconds=3.0),
                            requests_for(250))
    assert all(r.succeeded for r in results.values()), {r.error_code for r in results.values()}
    stats = dify_emulator.stats()
    assert counters["http_attempts"] == 250 and stats["paid_runs"] == stats["distinct_inputs"] == 250


def test_a_fast_server_is_not_paid_a_connection_per_run(dify_emulator):
    """Answers within the reuse window come back on open connections: a connection per run cost the client more
    CPU than the rest of the request (benchmarks/enrichment_step.py)."""
    configure(dify_emulator, latency_ms=2, server_worker_connections=None)
    results, counters = run(client(dify_emulator, max_concurrency=8), requests_for(300))
    assert all(r.succeeded for r in results.values())
    assert counters["http_attempts"] == 300 and dify_emulator.stats()["connections_accepted"] <= 300 / 5


def test_a_connection_older_than_the_reuse_window_is_closed_after_its_answer(dify_emulator):
    """A slow server gets a connection per run, as with no reuse at all: the gevent worker's waiting
    connections get their turn at every answer."""
    configure(dify_emulator, latency_ms=150, server_worker_connections=None)
    _, counters = run(client(dify_emulator, max_concurrency=4, connection_reuse_seconds=0.1), requests_for(24))
    assert dify_emulator.stats()["connections_accepted"] == counters["http_attempts"] == 24


def test_connections_are_reused_only_within_the_window_so_none_waits_unaccepted_for_long(dify_emulator):
    """16 in flight against a 10-connection worker: reused connections close within the window, so the 6 waiting
    ones are accepted within about a window (with unlimited reuse they waited for the whole run)."""
    configure(dify_emulator, latency_ms=20, server_worker_connections=10, server_keep_alive_seconds=2.0)
    results, _ = run(client(dify_emulator, max_concurrency=16, connection_reuse_seconds=0.3,
                            adaptive_concurrency=False), requests_for(400))
    assert all(r.succeeded for r in results.values())
    assert max(r.latency_ms for r in results.values()) < 1500
    assert dify_emulator.stats()["connections_accepted"] < 400


@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_requests_that_time_out_in_the_servers_backlog_are_found_again_not_paid_twice(dify_emulator, response_mode):
    """A request the client gave up on while it waited unaccepted is still run: look it up, don't resend it."""
    configure(dify_emulator, latency_ms=400, server_worker_connections=2, ping_interval=0.1)
    resource = client(dify_emulator, response_mode=response_mode, max_concurrency=8, request_timeout_seconds=1.0,
                      stream_idle_timeout_seconds=1.0, adaptive_concurrency=False)
    results, counters = run(resource, requests_for(24))
    assert all(r.succeeded for r in results.values()), {r.error_code for r in results.values()}
    stats = dify_emulator.stats()
    assert counters["recovered_runs"] > 0  # some did time out in the backlog
    assert stats["paid_runs"] == stats["distinct_inputs"] == 24, stats["runs_by_input"]


# ---- chat apps ------------------------------------------------------------------------------------------

CHAT_KEY = "app-chat-test-key"
SUBJECT_ONLY_FORM = [{"text-input": {"label": "Subject", "variable": "subject", "required": True, "max_length": 200,
                                     "default": ""}}]


def chat_requests(count: int) -> list[DifyRequest]:
    return [DifyRequest(f"chat-{i}", {"subject": f"chat {i}: 快递"}, query=f"my delivery {i} is late, thanks")
            for i in range(count)]


@pytest.mark.parametrize("dify_mode,response_mode", [("advanced-chat", "blocking"), ("advanced-chat", "streaming"),
                                                     ("chat", "blocking"), ("chat", "streaming"),
                                                     ("agent-chat", "streaming")])
def test_a_chat_app_answers_each_record_as_a_conversation_of_its_own(dify_emulator, dify_mode, response_mode):
    configure(dify_emulator, ping_interval=0.01,
              apps=[DifyApp(api_key=CHAT_KEY, mode=dify_mode, user_input_form=SUBJECT_ONLY_FORM)])
    requests = chat_requests(6)
    results, counters = run(client(dify_emulator, api_key=CHAT_KEY, app_mode="chat", response_mode=response_mode),
                            requests)
    for request in requests:
        result = results[request.record_key]
        assert result.succeeded and result.run_id and result.total_price and result.prompt_tokens
        assert json.loads(result.outputs) == answer_for({**request.inputs, "query": request.query})
    if dify_mode == "advanced-chat" and response_mode == "streaming":  # the version is in its workflow events
        assert results["chat-0"].workflow_id == dify_emulator.config.apps[0].workflow_id
    bodies = [record["body"] for record in dify_emulator.requests()]
    assert {record["path"] for record in dify_emulator.requests()} == {"/v1/chat-messages"}
    assert all("conversation_id" not in body and body["auto_generate_name"] is False for body in bodies)
    assert sorted(body["query"] for body in bodies) == sorted(request.query for request in requests)
    assert dify_emulator.stats()["paid_runs"] == 6 == counters["http_attempts"]


@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_a_failed_chatflow_run_is_a_paid_failed_run_not_a_refused_input(dify_emulator, response_mode):
    """A chatflow's failed run comes back as 400 invalid_param "Run failed: ..." (blocking) or an error event."""
    configure(dify_emulator, ping_interval=0.01, faults=[Fault(kind="failed_run_sandbox", match="chat 0:")],
              apps=[DifyApp(api_key=CHAT_KEY, mode="advanced-chat", user_input_form=SUBJECT_ONLY_FORM)])
    results, counters = run(client(dify_emulator, api_key=CHAT_KEY, app_mode="chat", response_mode=response_mode),
                            chat_requests(3))
    failed = results["chat-0"]
    assert not failed.succeeded and failed.error_code == "run_failed" and "Connection refused" in failed.error_message
    assert counters["failed_runs"] == dify_emulator.stats()["failed_runs"] == 1  # not retried: it would fail again
    assert results["chat-1"].succeeded and results["chat-2"].succeeded


def test_a_chat_request_without_its_query_fails_alone_unsent_and_the_others_are_answered(dify_emulator):
    configure(dify_emulator, apps=[DifyApp(api_key=CHAT_KEY, mode="advanced-chat", user_input_form=SUBJECT_ONLY_FORM)])
    # Requests are taken lazily: the one without a query comes after others are already in flight.
    mixed = [*chat_requests(3), *requests_for(1), *chat_requests(6)[3:]]
    results, counters = run(client(dify_emulator, api_key=CHAT_KEY, app_mode="chat", max_concurrency=2), mixed)
    refused = results["ticket-0"]
    assert not refused.succeeded and refused.error_code == "invalid_input" and "query" in refused.error_message
    assert refused.attempts == 0
    assert all(results[f"chat-{i}"].succeeded for i in range(6))  # answered and handed over, none lost
    assert dify_emulator.stats()["requests_total"] == counters["http_attempts"] == 6


def test_a_workflow_key_used_as_a_chat_app_stops_the_run(dify_emulator):
    configure(dify_emulator)
    with pytest.raises(DifyFatalError, match="not_chat_app"):
        run(client(dify_emulator, app_mode="chat", max_concurrency=1), chat_requests(20))
    assert dify_emulator.stats()["requests_total"] <= 2


# ---- a second example: product reviews on a completion app -----------------------------------------------

REVIEWS_KEY = "app-reviews-test-key"


@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_a_reviews_completion_app_beside_the_tickets_app_answers_by_its_own_key(dify_emulator, response_mode):
    configure(dify_emulator, ping_interval=0.01, apps=[DifyApp(api_key=DIFY_KEY), reviews_app(REVIEWS_KEY)])
    reviews = [DifyRequest("r-1", {"title": "Great value",
                                   "review": "Love it, the battery lasts and the price is low"}),
               DifyRequest("r-2", {"title": "Broke", "review": "Terrible quality, it broke, I want to return it"}),
               DifyRequest("r-3", {"title": "OK", "review": "It is a phone case"})]
    results, _ = run(client(dify_emulator, api_key=REVIEWS_KEY, app_mode="completion", response_mode=response_mode),
                     reviews)
    answers = {key: json.loads(result.outputs) for key, result in results.items()}
    assert answers["r-1"] == {"sentiment": "positive", "score": 5, "aspects": ["price", "battery"]}
    assert answers["r-2"]["sentiment"] == "negative" and answers["r-2"]["score"] <= 2
    assert answers["r-2"]["aspects"] == ["quality"]
    assert answers["r-3"] == {"sentiment": "neutral", "score": 3, "aspects": []}
    assert all(result.total_price and result.total_tokens for result in results.values())
    tickets, _ = run(client(dify_emulator), requests_for(2))  # the tickets app answers its own key as before
    assert tickets["ticket-0"].outputs == answer_for(requests_for(1)[0].inputs)


# ---- version pinning ------------------------------------------------------------------------------------


def test_a_pinned_run_asks_that_version_by_its_id_and_every_answer_names_it(dify_emulator):
    old = dify_emulator.config.apps[0].workflow_id
    new = dify_emulator.publish(DIFY_KEY)
    results, _ = run_pinned(client(dify_emulator), requests_for(10), workflow_id=old)
    assert {result.workflow_id for result in results.values()} == {old}
    assert {record["path"] for record in dify_emulator.requests()} == {f"/v1/workflows/{old}/run"}
    assert dify_emulator.stats()["runs_by_workflow_id"] == {old: 10} and new != old


def run_pinned(resource: DifyResource, requests: list[DifyRequest], **pinning):
    results = {}
    counters = resource.run_all(requests, lambda r: results.__setitem__(r.record_key, r), **pinning)
    return results, counters


@pytest.mark.parametrize("response_mode", ["blocking", "streaming"])
def test_a_republish_mid_run_with_pinning_on_leaves_every_answer_on_the_first_version(dify_emulator, response_mode):
    configure(dify_emulator, latency_ms=20, ping_interval=0.01)
    first = dify_emulator.config.apps[0].workflow_id
    pins: list[str] = []
    published: list[str] = []

    def on_result(result):
        if len(results) == 5:  # a few answers in: someone publishes the app again
            published.append(dify_emulator.publish(DIFY_KEY))
        results[result.record_key] = result

    def pin(workflow_id: str) -> str:
        pins.append(workflow_id)
        return workflow_id

    results: dict = {}
    client(dify_emulator, max_concurrency=4, response_mode=response_mode).run_all(requests_for(40), on_result,
                                                                                  pin=pin)
    assert published and pins == [first]
    assert len(results) == 40 and {result.workflow_id for result in results.values()} == {first}
    stats = dify_emulator.stats()
    assert stats["runs_by_workflow_id"] == {first: 40} and stats["paid_runs"] == 40
    paths = [record["path"] for record in dify_emulator.requests()]
    assert paths[0] == "/v1/workflows/run" and set(paths[1:]) == {f"/v1/workflows/{first}/run"}


def test_a_republish_mid_run_without_pinning_mixes_versions(dify_emulator):
    configure(dify_emulator, latency_ms=20)
    first = dify_emulator.config.apps[0].workflow_id
    results: dict = {}
    published: list[str] = []

    def on_result(result):
        if len(results) == 5:
            published.append(dify_emulator.publish(DIFY_KEY))
        results[result.record_key] = result

    client(dify_emulator, max_concurrency=4).run_all(requests_for(40), on_result)
    versions = dify_emulator.stats()["runs_by_workflow_id"]
    assert set(versions) == {first, published[0]} and sum(versions.values()) == 40
    assert {result.workflow_id for result in results.values()} == {first, published[0]}


def test_a_day_pinned_by_another_run_first_runs_that_version_and_asks_the_first_record_again(dify_emulator):
    old = dify_emulator.config.apps[0].workflow_id
    new = dify_emulator.publish(DIFY_KEY)  # this run's first record is answered by `new`; the day holds `old`
    results, _ = run_pinned(client(dify_emulator), requests_for(6), pin=lambda workflow_id: old)
    assert {result.workflow_id for result in results.values()} == {old}
    assert dify_emulator.stats()["runs_by_workflow_id"] == {new: 1, old: 6}  # one record paid twice, once per version


def test_a_pinned_version_that_is_gone_stops_the_run_with_difys_error(dify_emulator):
    old = dify_emulator.config.apps[0].workflow_id
    dify_emulator.publish(DIFY_KEY)
    dify_emulator.delete_version(DIFY_KEY, old)
    with pytest.raises(DifyFatalError) as raised:
        run_pinned(client(dify_emulator, max_concurrency=2), requests_for(30), workflow_id=old)
    assert raised.value.code == "workflow_version_unavailable"
    assert f"Workflow not found with id: {old}" in str(raised.value) and DIFY_KEY not in str(raised.value)
    stats = dify_emulator.stats()
    assert stats["requests_by_status"] == {"404": stats["requests_total"]} and stats["requests_total"] <= 3
    assert stats["paid_runs"] == 0


def test_pinning_is_for_workflow_apps_only(dify_emulator):
    with pytest.raises(ValueError, match="workflow"):
        client(dify_emulator, app_mode="completion").run_all(requests_for(1), lambda r: None, workflow_id="x")


@pytest.mark.parametrize("pinned_to", ["the run's version", "a newer version"])
def test_a_resumed_record_uses_its_earlier_run_only_when_the_pinned_version_ran_it(dify_emulator, pinned_to):
    from datetime import datetime

    import httpx

    from dify_pipeline.resources.run_journal import Attempt

    old = dify_emulator.config.apps[0].workflow_id
    request = requests_for(1)[0]
    user = f"dify-pipeline:{request.record_key}"  # the client's user for this record: the earlier run sent it
    earlier = httpx.post(f"{dify_emulator.base_url}/workflows/run", headers={"Authorization": f"Bearer {DIFY_KEY}"},
                         json={"inputs": request.inputs, "user": user, "response_mode": "blocking"}).json()
    new = dify_emulator.publish(DIFY_KEY)
    pinned = old if pinned_to == "the run's version" else new
    resumed = DifyRequest(request.record_key, request.inputs,
                          Attempt(user, datetime.now(UTC), earlier["workflow_run_id"]))
    results, counters = run_pinned(client(dify_emulator), [resumed], workflow_id=pinned)
    assert results[request.record_key].workflow_id == pinned
    if pinned == old:
        assert counters["resumed_runs"] == 1 and dify_emulator.stats()["paid_runs"] == 1
    else:
        assert counters["resumed_runs"] == 0 and dify_emulator.stats()["runs_by_workflow_id"] == {old: 1, new: 1}
