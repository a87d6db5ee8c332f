"""The Dify emulator over real loopback HTTP: shapes as the captured server, limits, faults and the control API."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx
import pytest

from dify_pipeline.contract import DEFAULT_CATEGORIES, SENTIMENTS
from dify_pipeline_dev.emulators.dify import (
    DifyApp,
    DifyEmulator,
    DifyEmulatorConfig,
    Fault,
    answer_for,
    max_runs_in_window,
    review_answer,
    reviews_app,
)
from dify_pipeline_dev.emulators.dify_answers import CATEGORY_RULES, INVALID_CATEGORY
from dify_pipeline_dev.emulators.server import serve_in_thread

SAMPLES = Path("/work/shared/dify-samples")
KEY = "app-emulator-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TICKET = {"subject": "快递还没到", "body": "包裹一周了还没到，太慢了，很失望"}

Serve = Callable[..., tuple[DifyEmulator, str]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start emulators on loopback (fast runs unless told otherwise); each returns (emulator, base URL .../v1)."""
    servers = []

    def start(**config) -> tuple[DifyEmulator, str]:
        emulator = DifyEmulator(DifyEmulatorConfig(**{"latency_ms": 20, **config}))
        servers.append(serve_in_thread(emulator.app))
        return emulator, servers[-1].url + "/v1"

    yield start
    for server in servers:
        server.stop()


def run_body(mode: str = "blocking", inputs: dict | None = None, **extra) -> dict:
    return {"inputs": TICKET if inputs is None else inputs, "response_mode": mode, "user": "tester", **extra}


def frames_of(text: str) -> list[str]:
    """SSE frames: whatever sits between blank lines."""
    return [frame for frame in text.split("\n\n") if frame]


def events_of(text: str) -> list[dict]:
    return [json.loads(frame.removeprefix("data: ")) for frame in frames_of(text) if frame.startswith("data: ")]


def error_body(response: httpx.Response) -> dict:
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    return response.json()


# ---- shapes ---------------------------------------------------------------------------------------------


def test_blocking_workflow_run_matches_the_captured_response_and_lasts_its_latency(serve: Serve) -> None:
    emulator, url = serve(latency_ms=200)
    started = time.monotonic()
    response = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH)
    assert time.monotonic() - started >= 0.2
    assert 0.2 <= emulator.stats()["mean_run_seconds"] <= time.monotonic() - started  # as the server timed the run
    captured = json.loads((SAMPLES / "blocking.json").read_text())
    body = response.json()
    assert response.status_code == 200
    assert list(body) == list(captured)
    assert list(body["data"]) == list(captured["data"])
    assert body["data"]["id"] == body["workflow_run_id"] != body["task_id"]
    assert body["data"]["status"] == "succeeded" and body["data"]["total_tokens"] > 0
    assert body["data"]["outputs"] == answer_for(TICKET)
    for header in ("Content-Type", "X-Version", "X-Env", "Access-Control-Expose-Headers"):
        assert header + ": " + response.headers[header] in (SAMPLES / "blocking.headers").read_text()


def test_streaming_workflow_run_sends_one_line_events_pings_and_workflow_finished(serve: Serve) -> None:
    _, url = serve(latency_ms=300, ping_interval=0.05)
    response = httpx.post(f"{url}/workflows/run", json=run_body("streaming"), headers=AUTH)
    assert "Content-Type: " + response.headers["content-type"] in (SAMPLES / "streaming.headers").read_text()
    frames = frames_of(response.text)
    assert all(frame == "event: ping" or (frame.startswith("data: {") and "\n" not in frame) for frame in frames)
    assert frames.count("event: ping") >= 3
    events = events_of(response.text)
    assert [event["event"] for event in events] == ["workflow_started", "node_started", "node_finished",
                                                    "node_started", "node_finished", "node_started",
                                                    "node_finished", "workflow_finished"]
    run_id = events[0]["workflow_run_id"]
    assert all(event["workflow_run_id"] == run_id for event in events)
    finished = events[-1]["data"]
    assert finished["status"] == "succeeded" and finished["outputs"] == answer_for(TICKET)
    captured_finished = events_of((SAMPLES / "slow_streaming.sse").read_text())[-1]["data"]
    assert set(captured_finished) <= set(finished)


def test_json_string_app_returns_its_answer_as_result_text(serve: Serve) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY, output_style="json_string")])
    outputs = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["data"]["outputs"]
    assert list(outputs) == ["result"] and json.loads(outputs["result"]) == answer_for(TICKET)


def test_completion_blocking_answers_json_text_with_usage(serve: Serve) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY, mode="completion")])
    body = httpx.post(f"{url}/completion-messages", json=run_body(), headers=AUTH).json()
    assert list(body) == ["event", "task_id", "id", "message_id", "mode", "answer", "metadata", "created_at"]
    assert body["event"] == "message" and body["mode"] == "completion"
    assert json.loads(body["answer"]) == answer_for(TICKET)
    usage = body["metadata"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert isinstance(usage["total_price"], str) and usage["currency"] == "USD"


def test_completion_streaming_sends_message_chunks_then_message_end(serve: Serve) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY, mode="completion")], latency_ms=200, ping_interval=0.05)
    response = httpx.post(f"{url}/completion-messages", json=run_body("streaming"), headers=AUTH)
    assert "event: ping" in frames_of(response.text)
    events = events_of(response.text)
    assert {event["event"] for event in events[:-1]} == {"message"} and events[-1]["event"] == "message_end"
    assert json.loads("".join(event["answer"] for event in events[:-1])) == answer_for(TICKET)
    assert events[-1]["metadata"]["usage"]["total_tokens"] > 0


def test_parameters_and_info_describe_the_app(serve: Serve) -> None:
    _, url = serve()
    parameters = httpx.get(f"{url}/parameters", headers=AUTH).json()
    assert [next(iter(item.values()))["variable"] for item in parameters["user_input_form"]] == ["subject", "body"]
    assert parameters["user_input_form"][0]["text-input"]["max_length"] == 200
    assert httpx.get(f"{url}/info", headers=AUTH).json()["mode"] == "workflow"


# ---- auth and validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "Authorization header must be provided and start with 'Bearer'"),
    ({"Authorization": "Bearer"}, "Authorization header must be provided and start with 'Bearer'"),
    ({"Authorization": f"Basic {KEY}"}, "Authorization scheme must be 'Bearer'"),
    ({"Authorization": "Bearer app-wrong"}, "Access token is invalid"),
])
def test_bad_credentials_answer_401_with_difys_bodies(serve: Serve, headers: dict, message: str) -> None:
    emulator, url = serve()
    response = httpx.post(f"{url}/workflows/run", json=run_body(), headers=headers)
    assert response.status_code == 401
    assert error_body(response) == {"code": "unauthorized", "message": message, "status": 401}
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    assert emulator.stats()["paid_runs"] == 0


@pytest.mark.parametrize(("body", "code", "message"), [
    (run_body(user=None), "invalid_param", "Arg user must be provided."),
    (run_body(inputs={"subject": "hi"}), "invalid_param", "body is required in input form"),
    (run_body(inputs={"subject": "x" * 201, "body": "b"}), "invalid_param",
     "subject in input form must be less than 200 characters"),
    (run_body(inputs={"subject": 7, "body": "b"}), "invalid_param",
     "(type 'text-input') subject in input form must be a string"),
])
def test_invalid_requests_answer_400_invalid_param(serve: Serve, body: dict, code: str, message: str) -> None:
    emulator, url = serve()
    response = httpx.post(f"{url}/workflows/run", json=body, headers=AUTH)
    assert (response.status_code, error_body(response)) == (400, {"code": code, "message": message, "status": 400})
    assert emulator.stats()["paid_runs"] == 0


def test_a_null_required_input_is_missing_but_an_empty_string_passes(serve: Serve) -> None:
    emulator, url = serve()
    null = httpx.post(f"{url}/workflows/run", json=run_body(inputs={"subject": None, "body": "b"}), headers=AUTH)
    assert (null.status_code, null.json()["message"]) == (400, "subject is required in input form")
    empty = httpx.post(f"{url}/workflows/run", json=run_body(inputs={"subject": "", "body": "b"}), headers=AUTH)
    assert (empty.status_code, empty.json()["data"]["status"]) == (200, "succeeded")
    assert emulator.stats()["paid_runs"] == 1


def test_max_length_counts_characters_not_bytes(serve: Serve) -> None:
    _, url = serve()
    exactly = httpx.post(f"{url}/workflows/run", json=run_body(inputs={"subject": "s", "body": "退" * 4000}),
                         headers=AUTH)
    assert exactly.status_code == 200  # 12,000 bytes of UTF-8, 4,000 characters
    over = httpx.post(f"{url}/workflows/run", json=run_body(inputs={"subject": "s", "body": "退" * 4001}),
                      headers=AUTH)
    assert (over.status_code, over.json()["message"]) == (400, "body in input form must be less than 4000 characters")


def test_an_input_the_form_does_not_declare_is_dropped_silently(serve: Serve) -> None:
    _, url = serve()
    body = run_body(inputs={**TICKET, "priority": "high"})
    run_id = httpx.post(f"{url}/workflows/run", json=body, headers=AUTH).json()["workflow_run_id"]
    stored = json.loads(httpx.get(f"{url}/workflows/run/{run_id}", headers=AUTH).json()["inputs"])
    assert "priority" not in stored and stored["subject"] == TICKET["subject"]


def test_select_value_outside_options_is_refused(serve: Serve) -> None:
    form = [{"select": {"label": "Lang", "variable": "lang", "required": True, "options": ["zh", "en"]}}]
    _, url = serve(apps=[DifyApp(api_key=KEY, user_input_form=form)])
    response = httpx.post(f"{url}/workflows/run", json=run_body(inputs={"lang": "fr"}), headers=AUTH)
    assert response.json()["message"] == "lang in input form must be one of the following: ['zh', 'en']"


def test_bad_json_and_wrong_app_mode_are_refused(serve: Serve) -> None:
    completion = DifyApp(api_key="app-completion", mode="completion")
    _, url = serve(apps=[DifyApp(api_key=KEY), completion])
    bad_json = httpx.post(f"{url}/workflows/run", content=b"{not json", headers=AUTH)
    assert (bad_json.status_code, bad_json.json()["code"]) == (400, "invalid_param")
    as_completion = httpx.post(f"{url}/completion-messages", json=run_body(), headers=AUTH)
    assert (as_completion.status_code, as_completion.json()["code"]) == (400, "app_unavailable")
    as_workflow = httpx.post(f"{url}/workflows/run", json=run_body(),
                             headers={"Authorization": "Bearer app-completion"})
    assert (as_workflow.status_code, as_workflow.json()["code"]) == (400, "not_workflow_app")


# ---- limits ---------------------------------------------------------------------------------------------


async def _concurrent_runs(url: str, count: int, mode: str = "blocking") -> list[tuple[httpx.Response, float]]:
    async with httpx.AsyncClient(timeout=10) as client:
        async def one() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = await client.post(f"{url}/workflows/run", json=run_body(mode), headers=AUTH)
            return response, time.monotonic() - started

        return await asyncio.gather(*(one() for _ in range(count)))


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_max_active_requests_refuses_extra_calls_at_once_with_400_and_no_retry_after(serve: Serve, mode: str) -> None:
    app = DifyApp(api_key=KEY, max_active_requests=2)
    emulator, url = serve(apps=[app], latency_ms=400)
    results = asyncio.run(_concurrent_runs(url, 6, mode))
    refused = [(response, took) for response, took in results if response.status_code == 400]
    assert sum(response.status_code == 200 for response, _ in results) == 2 and len(refused) == 4
    for response, took in refused:
        assert took < 0.3 and "retry-after" not in response.headers
        assert error_body(response) == {"code": "invalid_param", "status": 400, "message": (
            "Too many requests. Please try again later. The current maximum concurrent requests allowed for "
            f"{app.app_id} is 2.")}
    stats = emulator.stats()
    assert (stats["paid_runs"], stats["max_active_runs"], stats["rejected_concurrency"]) == (2, 2, 4)


def test_concurrency_limit_can_answer_the_documented_429(serve: Serve) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY, max_active_requests=1)], latency_ms=300, concurrency_limit_status=429)
    statuses = sorted(response.status_code for response, _ in asyncio.run(_concurrent_runs(url, 3)))
    assert statuses == [200, 429, 429]


def test_rate_limit_per_minute_refuses_runs_beyond_it_with_retry_after(serve: Serve) -> None:
    emulator, url = serve(rate_limit_per_minute=3, rate_limit_retry_after=7)
    responses = [httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH) for _ in range(5)]
    assert [response.status_code for response in responses] == [200, 200, 200, 429, 429]
    assert responses[3].json()["code"] == "too_many_requests" and responses[3].headers["retry-after"] == "7"
    stats = emulator.stats()
    assert stats["rejected_rate_limit"] == 2 and max_runs_in_window(stats["run_arrivals"]) == 3


# ---- connections: the gevent worker's cap, the backlog, keep-alive --------------------------------------


def raw_run_request(url: str, mode: str = "blocking", user: str = "tester") -> bytes:
    """A keep-alive HTTP/1.1 run request as bytes, for clients on bare sockets."""
    body = json.dumps(run_body(mode, user=user)).encode()
    host = url.split("//", 1)[1].split("/", 1)[0]
    return (f"POST /v1/workflows/run HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def connect(url: str) -> socket.socket:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One Content-Length response from a keep-alive connection: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    length = int(next(line.split(":", 1)[1] for line in lines if line.lower().startswith("content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def answered(sockets: list[socket.socket], wait: float) -> list[socket.socket]:
    """The sockets with an answer to read, waiting up to `wait` seconds for all of them."""
    deadline, readable = time.monotonic() + wait, []
    while len(readable) < len(sockets) and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(sockets, [], [], left)
        if readable and len(readable) < len(sockets):
            time.sleep(0.02)
            readable, _, _ = select.select(sockets, [], [], 0)
    return readable


def test_connections_beyond_the_worker_cap_wait_unaccepted_while_served_ones_stay_alive(serve: Serve) -> None:
    emulator, url = serve(server_worker_connections=10, server_keep_alive_seconds=2.0)
    clients = [connect(url) for _ in range(16)]  # every connect succeeds: the kernel does the handshake
    for client in clients:
        client.sendall(raw_run_request(url))
    time.sleep(0.5)
    served = answered(clients, 0.5)
    waiting = [client for client in clients if client not in served]
    assert (len(served), len(waiting)) == (10, 6)
    stats = emulator.stats()
    assert (stats["open_connections"], stats["accept_queue"], stats["paid_runs"]) == (10, 6, 10)
    for _ in range(3):  # a pooling client reuses its served connections: the waiting six starve
        for client in served:
            assert read_response(client)[0] == 200
            client.sendall(raw_run_request(url))
        assert answered(waiting, 0.3) == []
    for client in served:
        read_response(client)
    for client in served[:6]:
        client.close()  # ... until served connections close
    assert sorted(map(id, answered(waiting, 2.0))) == sorted(map(id, waiting))
    assert all(read_response(client)[0] == 200 for client in waiting)
    stats = emulator.stats()
    assert (stats["max_open_connections"], stats["max_accept_queue"], stats["paid_runs"]) == (10, 6, 46)
    for client in clients:
        client.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_time(serve: Serve) -> None:
    emulator, url = serve(server_worker_connections=1, server_keep_alive_seconds=0.5)
    first, second = connect(url), connect(url)
    first.sendall(raw_run_request(url))
    assert read_response(first)[0] == 200
    second.sendall(raw_run_request(url))
    assert answered([second], 0.3) == []  # first still holds the only slot
    started = time.monotonic()
    assert answered([second], 2.0) == [second] and read_response(second)[0] == 200
    assert 0.1 < time.monotonic() - started < 1.0
    assert first.recv(1) == b""  # the server closed the idle one
    assert emulator.stats()["connections_accepted"] == 2


def read_stream_until(sock: socket.socket, end: bytes) -> bytes:
    received = b""
    while end not in received and (chunk := sock.recv(65536)):
        received += chunk
    return received


def test_a_stream_read_to_its_end_keeps_its_connection_like_any_keep_alive_answer(serve: Serve) -> None:
    _, url = serve(server_worker_connections=1, server_keep_alive_seconds=1.0)
    streaming, waiting = connect(url), connect(url)
    streaming.sendall(raw_run_request(url, "streaming"))
    waiting.sendall(raw_run_request(url))
    assert b'"event":"workflow_finished"' in read_stream_until(streaming, b"\r\n0\r\n\r\n")  # the chunked end
    assert answered([waiting], 0.5) == []  # gunicorn keeps the connection: the waiting one still waits
    assert answered([waiting], 2.0) == [waiting] and read_response(waiting)[0] == 200  # ... until keep-alive ends


@pytest.mark.parametrize("closes", [False, True])
def test_a_stream_left_at_its_final_event_frees_the_connection_slot(serve: Serve, closes: bool) -> None:
    _, url = serve(server_worker_connections=1, server_keep_alive_seconds=5.0, close_connection_after_stream=closes)
    streaming, waiting = connect(url), connect(url)
    streaming.sendall(raw_run_request(url, "streaming"))
    waiting.sendall(raw_run_request(url))
    assert b'"event":"workflow_finished"' in read_stream_until(streaming, b'"event":"workflow_finished"')
    if closes:  # the server closes after the last event
        streaming.settimeout(1.0)
        read_stream_until(streaming, b"never")  # returns at the end of the connection, raises at a timeout
    else:  # the client leaves the rest unread and closes, as aiohttp does with a body it did not read to the end
        streaming.close()
    assert answered([waiting], 1.0) == [waiting] and read_response(waiting)[0] == 200


async def _pooled_runs(url: str, mode: str, count: int, in_flight: int) -> tuple[list[float], float]:
    """`count` runs through one aiohttp pool of `in_flight` connections, each worker returning at the final
    event as the pipeline's client does: (latencies, wall time)."""
    latencies: list[float] = []
    pending = list(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight), headers=AUTH) as session:
        async def worker() -> None:
            while pending:
                body, started = run_body(mode, user=f"record-{pending.pop()}"), time.monotonic()
                async with session.post(f"{url}/workflows/run", json=body) as response:
                    if mode == "blocking":
                        await response.read()
                    else:
                        async for line in response.content:
                            if b'"event":"workflow_finished"' in line:
                                break
                latencies.append(time.monotonic() - started)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return latencies, time.monotonic() - started


def test_a_pooling_client_starves_its_extra_blocking_calls_but_streams_free_their_connections(serve: Serve) -> None:
    emulator, url = serve(latency_ms=100, server_worker_connections=10)
    latencies, wall = asyncio.run(_pooled_runs(url, "blocking", 96, 16))
    assert max(latencies) > 0.8 * wall  # six calls waited in the backlog for the whole batch
    assert emulator.stats()["connections_accepted"] == 16 and emulator.stats()["max_accept_queue"] == 6
    emulator.reset()
    latencies, wall = asyncio.run(_pooled_runs(url, "streaming", 96, 16))
    assert max(latencies) < 0.5 * wall  # each stream's client left the chunked end unread and closed
    assert emulator.stats()["connections_accepted"] > 16


# ---- requests whose client has gone ---------------------------------------------------------------------


def test_a_request_abandoned_in_the_backlog_is_still_run_and_paid(serve: Serve) -> None:
    emulator, url = serve(server_worker_connections=1)
    holder = connect(url)
    holder.sendall(raw_run_request(url))
    assert read_response(holder)[0] == 200
    gone = connect(url)
    gone.sendall(raw_run_request(url, user="gone"))
    time.sleep(0.2)
    gone.close()  # the client gives up (a timeout, a kill -9) while its request waits unaccepted
    assert emulator.stats()["paid_runs"] == 1
    holder.close()
    time.sleep(0.5)
    stats = emulator.stats()
    assert (stats["paid_runs"], stats["abandoned_runs"], stats["end_users"]) == (2, 1, 2)
    (late,) = [record for record in emulator.requests() if record["body"]["user"] == "gone"]
    assert late["workflow_run_id"] is not None


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_a_client_that_hangs_up_mid_run_still_gets_a_finished_paid_run(serve: Serve, mode: str) -> None:
    emulator, url = serve(latency_ms=300)
    client = connect(url)
    client.sendall(raw_run_request(url, mode))
    time.sleep(0.1)
    client.close()
    time.sleep(0.4)
    (record,) = emulator.requests()
    detail = httpx.get(f"{url}/workflows/run/{record['workflow_run_id']}", headers=AUTH).json()
    assert detail["status"] == "succeeded"
    stats = emulator.stats()
    assert (stats["paid_runs"], stats["abandoned_runs"], stats["runs_by_input"]) == (
        1, 1, {json.dumps(dict(sorted(TICKET.items())), ensure_ascii=False, separators=(",", ":")): 1})


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_an_exhausted_database_pool_answers_500_after_its_timeout_without_a_run(serve: Serve, mode: str) -> None:
    emulator, url = serve(latency_ms=600, database_pool_size=2, database_pool_timeout=0.2)
    results = asyncio.run(_concurrent_runs(url, 4, mode))
    failed = [(response, took) for response, took in results if response.status_code == 500]
    assert sum(response.status_code == 200 for response, _ in results) == 2 and len(failed) == 2
    for response, took in failed:
        assert 0.2 <= took < 0.5
        assert error_body(response) == {"message": "Internal Server Error", "code": "unknown", "status": 500}
    stats = emulator.stats()
    assert (stats["paid_runs"], stats["rejected_database"]) == (2, 2)
    assert httpx.post(f"{url}/workflows/run", json=run_body(mode), headers=AUTH).status_code == 200  # returned


# ---- faults ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status", "content_type", "code"), [
    (Fault(kind="http_429", retry_after=2), 429, "application/json", "too_many_requests"),
    (Fault(kind="http_500"), 500, "application/json", "internal_server_error"),
    (Fault(kind="http_502_html"), 502, "text/html", None),
    (Fault(kind="http_503"), 503, "application/json", "service_unavailable"),
    (Fault(kind="http_504_html"), 504, "text/html", None),
    (Fault(kind="unauthorized"), 401, "application/json", "unauthorized"),
    (Fault(kind="quota_exceeded"), 400, "application/json", "provider_quota_exceeded"),
])
def test_http_faults_answer_instead_of_a_run(serve: Serve, fault: Fault, status: int, content_type: str,
                                             code: str | None) -> None:
    emulator, url = serve(faults=[fault])
    response = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH)
    assert response.status_code == status and response.headers["content-type"].startswith(content_type)
    assert response.json()["code"] == code if code else "<html>" in response.text
    assert response.headers.get("retry-after") == ("2" if fault.retry_after else None)
    assert emulator.stats()["paid_runs"] == 0 and emulator.stats()["faults_injected"] == {fault.kind: 1}


def test_quota_exceeded_in_a_stream_is_an_error_event(serve: Serve) -> None:
    _, url = serve(faults=[Fault(kind="quota_exceeded")])
    response = httpx.post(f"{url}/workflows/run", json=run_body("streaming"), headers=AUTH)
    (event,) = events_of(response.text)
    assert response.status_code == 200
    assert (event["event"], event["status"], event["code"]) == ("error", 400, "provider_quota_exceeded")


def test_timeout_holds_the_request_then_answers_504(serve: Serve) -> None:
    _, url = serve(faults=[Fault(kind="timeout", hang_seconds=0.4, first_n=1)])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH, timeout=0.1)
    _, url = serve(faults=[Fault(kind="timeout", hang_seconds=0.4)])
    started = time.monotonic()
    response = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH)
    assert response.status_code == 504 and time.monotonic() - started >= 0.4


def test_drop_closes_the_connection_without_a_response(serve: Serve) -> None:
    emulator, url = serve(faults=[Fault(kind="drop")])
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH)
    assert emulator.requests()[0]["status"] is None and emulator.stats()["requests_by_status"] == {"dropped": 1}


def test_drop_mid_stream_cuts_after_workflow_started_and_the_run_still_succeeds(serve: Serve) -> None:
    emulator, url = serve(faults=[Fault(kind="drop_mid_stream")], latency_ms=300)
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{url}/workflows/run", json=run_body("streaming"), headers=AUTH) as response:
            received.extend(line for line in response.iter_lines() if line)
    (started,) = [json.loads(line.removeprefix("data: ")) for line in received]
    assert started["event"] == "workflow_started"
    run_url = f"{url}/workflows/run/{started['workflow_run_id']}"
    assert httpx.get(run_url, headers=AUTH).json()["status"] == "running"
    time.sleep(0.4)
    detail = httpx.get(run_url, headers=AUTH).json()
    assert detail["status"] == "succeeded" and json.loads(detail["outputs"]) == answer_for(TICKET)
    assert json.loads(detail["inputs"])["subject"] == TICKET["subject"]
    assert emulator.stats()["paid_runs"] == 1


def test_drop_mid_stream_leaves_blocking_calls_alone(serve: Serve) -> None:
    _, url = serve(faults=[Fault(kind="drop_mid_stream")])
    assert httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).status_code == 200


def test_malformed_json_truncates_the_body_of_a_paid_run(serve: Serve) -> None:
    emulator, url = serve(faults=[Fault(kind="malformed_json")])
    blocking = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH)
    with pytest.raises(json.JSONDecodeError):
        json.loads(blocking.text)
    streaming = httpx.post(f"{url}/workflows/run", json=run_body("streaming"), headers=AUTH)
    with pytest.raises(json.JSONDecodeError):
        events_of(streaming.text)
    assert blocking.status_code == streaming.status_code == 200 and emulator.stats()["paid_runs"] == 2


def test_failed_run_reports_status_failed_with_empty_outputs(serve: Serve) -> None:
    _, url = serve(faults=[Fault(kind="failed_run")])
    data = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["data"]
    assert (data["status"], data["outputs"]) == ("failed", {}) and data["error"]
    assert httpx.get(f"{url}/workflows/run/{data['id']}", headers=AUTH).json()["status"] == "failed"
    finished = events_of(httpx.post(f"{url}/workflows/run", json=run_body("streaming"), headers=AUTH).text)[-1]
    assert (finished["event"], finished["data"]["status"]) == ("workflow_finished", "failed")


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_a_run_whose_sandbox_is_unreachable_fails_inside_a_200_and_is_paid(serve: Serve, mode: str) -> None:
    emulator, url = serve(faults=[Fault(kind="failed_run_sandbox")])
    response = httpx.post(f"{url}/workflows/run", json=run_body(mode), headers=AUTH)
    assert response.status_code == 200
    if mode == "blocking":
        data = response.json()["data"]
    else:
        events = events_of(response.text)
        assert "error" not in [event["event"] for event in events]  # no error event: the run ended, failed
        data = events[-1]["data"]
        assert events[-1]["event"] == "workflow_finished"
    assert (data["status"], data["outputs"], data["error"]) == ("failed", {}, (
        "Failed to execute code, which is likely a network issue, please check if the sandbox service is running. "
        "( Error: [Errno 111] Connection refused )"))
    stats = emulator.stats()
    assert (stats["paid_runs"], stats["failed_runs"]) == (1, 1)


def test_a_failed_run_can_carry_any_error_text(serve: Serve) -> None:
    _, url = serve(faults=[Fault(kind="failed_run", error="Node LLM run failed: Request timed out.")])
    data = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["data"]
    assert (data["status"], data["error"]) == ("failed", "Node LLM run failed: Request timed out.")


def test_failed_completion_is_a_400_or_an_error_event(serve: Serve) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY, mode="completion")], faults=[Fault(kind="failed_run")])
    blocking = httpx.post(f"{url}/completion-messages", json=run_body(), headers=AUTH)
    assert (blocking.status_code, blocking.json()["code"]) == (400, "completion_request_error")
    (event,) = events_of(httpx.post(f"{url}/completion-messages", json=run_body("streaming"), headers=AUTH).text)
    assert (event["event"], event["code"]) == ("error", "completion_request_error")


@pytest.mark.parametrize("output_style", ["object", "json_string"])
def test_bad_output_breaks_the_answer_contract(serve: Serve, output_style: str) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY, output_style=output_style)], faults=[Fault(kind="bad_output")])
    outputs = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["data"]["outputs"]
    assert "category" not in outputs
    with pytest.raises(json.JSONDecodeError):
        json.loads(next(iter(outputs.values())))


def test_invalid_category_answers_a_label_outside_the_contract(serve: Serve) -> None:
    _, url = serve(faults=[Fault(kind="invalid_category")])
    outputs = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["data"]["outputs"]
    assert outputs["category"] == INVALID_CATEGORY not in DEFAULT_CATEGORIES
    assert outputs["sentiment"] in SENTIMENTS


def test_faults_apply_only_to_matching_inputs_and_limited_times(serve: Serve) -> None:
    emulator, url = serve(faults=[Fault(kind="http_500", match="flaky", times_per_input=2),
                                  Fault(kind="http_503", match="calm", first_n=1)])

    def status(subject: str) -> int:
        body = run_body(inputs={"subject": subject, "body": "b"})
        return httpx.post(f"{url}/workflows/run", json=body, headers=AUTH).status_code

    assert [status("flaky one") for _ in range(3)] == [500, 500, 200]
    assert [status("flaky two"), status("flaky two")] == [500, 500]
    assert [status("calm"), status("calm")] == [503, 200]
    assert emulator.stats()["faults_injected"] == {"http_500": 4, "http_503": 1}


def test_fault_probability_is_seeded(serve: Serve) -> None:
    def pattern(seed: int) -> list[int]:
        _, url = serve(faults=[Fault(kind="http_500", probability=0.5)], seed=seed, latency_ms=1)
        return [httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).status_code for _ in range(12)]

    first = pattern(3)
    assert first == pattern(3) and {200, 500} == set(first)


# ---- runs, answers, control -----------------------------------------------------------------------------


def test_run_detail_of_an_unknown_run_is_a_200_of_nulls_and_a_500_for_a_non_uuid(serve: Serve) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY), DifyApp(api_key="app-completion", mode="completion")])
    missing = httpx.get(f"{url}/workflows/run/{uuid.uuid4()}", headers=AUTH)  # Dify marshals the None it found
    assert missing.status_code == 200 and set(missing.json().values()) == {None}
    assert list(missing.json()) == ["id", "workflow_id", "status", "inputs", "outputs", "error", "total_steps",
                                    "total_tokens", "created_at", "finished_at", "elapsed_time"]
    not_a_uuid = httpx.get(f"{url}/workflows/run/nope", headers=AUTH)
    assert (not_a_uuid.status_code, not_a_uuid.json()) == (
        500, {"code": "unknown", "message": "Internal Server Error", "status": 500})
    wrong_app = httpx.get(f"{url}/workflows/run/nope", headers={"Authorization": "Bearer app-completion"})
    assert wrong_app.json()["code"] == "not_workflow_app"


def test_run_detail_gives_inputs_and_outputs_as_ascii_escaped_json_text(serve: Serve) -> None:
    _, url = serve(latency_ms=200)
    run_id = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["workflow_run_id"]
    detail = httpx.get(f"{url}/workflows/run/{run_id}", headers=AUTH).json()
    assert list(detail) == ["id", "workflow_id", "status", "inputs", "outputs", "error", "total_steps",
                            "total_tokens", "created_at", "finished_at", "elapsed_time"]
    assert detail["inputs"].isascii() and "\\u5feb\\u9012" in detail["inputs"]  # 快递, as stored
    assert json.loads(detail["inputs"])["subject"] == TICKET["subject"]
    assert detail["outputs"].isascii() and json.loads(detail["outputs"]) == answer_for(TICKET)
    assert detail["status"] == "succeeded" and detail["total_tokens"] > 0 and detail["elapsed_time"] >= 0.19
    assert detail["finished_at"] >= detail["created_at"] and detail["error"] is None


def test_workflow_logs_list_runs_newest_first_from_their_start_with_difys_filters(serve: Serve) -> None:
    emulator, url = serve(faults=[Fault(kind="failed_run_sandbox", match="broken")])
    for index in range(5):
        httpx.post(f"{url}/workflows/run", json=run_body(user=f"record-{index % 2}", inputs={
            "subject": f"ticket {index}", "body": "broken" if index == 4 else "fine"}), headers=AUTH)
    logs = httpx.get(f"{url}/workflows/logs", headers=AUTH).json()
    assert (logs["page"], logs["limit"], logs["total"], logs["has_more"]) == (1, 20, 5, False)
    assert [item["workflow_run"]["status"] for item in logs["data"]] == ["failed"] + ["succeeded"] * 4
    runs = [record["workflow_run_id"] for record in emulator.requests() if record["method"] == "POST"]
    assert [item["workflow_run"]["id"] for item in logs["data"]] == runs[::-1]  # newest first
    item = logs["data"][0]
    assert set(item) == {"id", "workflow_run", "details", "created_from", "created_by_role", "created_by_account",
                         "created_by_end_user", "created_at"}
    assert item["created_by_end_user"]["session_id"] == "record-0" and item["created_from"] == "service-api"
    assert set(item["workflow_run"]) == {"id", "version", "status", "triggered_from", "error", "elapsed_time",
                                         "total_tokens", "total_steps", "created_at", "finished_at",
                                         "exceptions_count"}

    def query(**params) -> dict:
        return httpx.get(f"{url}/workflows/logs", params=params, headers=AUTH).json()

    assert query(created_by_end_user_session_id="record-1")["total"] == 2
    assert query(created_by_end_user_session_id="record-0", status="succeeded")["total"] == 2
    assert query(status="failed")["data"][0]["workflow_run"]["error"].startswith("Failed to execute code")
    assert query(keyword="ticket 3")["total"] == 1 and query(keyword=runs[2])["total"] == 1
    assert query(keyword="快递")["total"] == 0  # inputs are stored \u-escaped: a CJK keyword never matches them
    page_two = query(limit=2, page=2)
    assert (page_two["has_more"], [item["workflow_run"]["id"] for item in page_two["data"]]) == (True, runs[2:0:-1])
    now = datetime.now(UTC)
    assert query(created_at__after=(now - timedelta(minutes=1)).isoformat())["total"] == 5
    assert query(created_at__before=(now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S"))["total"] == 0
    for bad in ({"limit": 101}, {"limit": 0}, {"page": 0}, {"status": "running"}, {"created_at__after": "soon"}):
        response = httpx.get(f"{url}/workflows/logs", params=bad, headers=AUTH)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_param")


def test_a_running_run_is_already_in_the_logs(serve: Serve) -> None:
    emulator, url = serve(latency_ms=600)

    async def run_and_look() -> tuple[dict, httpx.Response]:
        async with httpx.AsyncClient(timeout=5) as client:
            run = asyncio.create_task(client.post(f"{url}/workflows/run", json=run_body(user="r-1"), headers=AUTH))
            await asyncio.sleep(0.2)
            logs = (await client.get(f"{url}/workflows/logs", params={
                "created_by_end_user_session_id": "r-1"}, headers=AUTH)).json()
            return logs, await run

    logs, answer = asyncio.run(run_and_look())
    (item,) = logs["data"]
    assert item["workflow_run"]["status"] == "running" and item["workflow_run"]["finished_at"] is None
    assert item["workflow_run"]["id"] == answer.json()["workflow_run_id"]
    assert emulator.stats()["end_users"] == 1


def test_republishing_changes_the_workflow_id_of_new_runs(serve: Serve) -> None:
    emulator, url = serve(apps=[DifyApp(api_key=KEY, workflow_id="v1")])
    assert httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["data"]["workflow_id"] == "v1"
    emulator.configure(DifyEmulatorConfig(apps=[DifyApp(api_key=KEY, workflow_id="v2")], latency_ms=1))
    assert httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["data"]["workflow_id"] == "v2"


def test_a_published_version_runs_by_its_id_and_each_answer_names_the_version(serve: Serve) -> None:
    old, current = str(uuid.uuid4()), str(uuid.uuid4())
    _, url = serve(apps=[DifyApp(api_key=KEY, workflow_id=current, published_workflow_ids=[old])])
    blocking = httpx.post(f"{url}/workflows/{old}/run", json=run_body(), headers=AUTH).json()
    assert (blocking["data"]["workflow_id"], blocking["data"]["status"]) == (old, "succeeded")
    events = events_of(httpx.post(f"{url}/workflows/{old}/run", json=run_body("streaming"), headers=AUTH).text)
    assert events[0]["data"]["workflow_id"] == events[-1]["data"]["workflow_id"] == old
    detail = httpx.get(f"{url}/workflows/run/{blocking['workflow_run_id']}", headers=AUTH).json()
    assert detail["workflow_id"] == old
    default = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()
    assert default["data"]["workflow_id"] == current
    unknown = httpx.post(f"{url}/workflows/{uuid.uuid4()}/run", json=run_body(), headers=AUTH)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert unknown.json()["message"].startswith("Workflow not found with id: ")
    malformed = httpx.post(f"{url}/workflows/v1/run", json=run_body(), headers=AUTH)
    assert (malformed.status_code, malformed.json()) == (
        400, {"code": "bad_request", "message": "Invalid workflow_id format: 'v1'. ", "status": 400})


@pytest.mark.parametrize(("subject", "body", "category"), [
    ("Where is my delivery?", "The courier never came.", "物流问题"),
    ("我要退款", "商品不想要了", "退款申请"),
    ("Feature request", "I suggest a dark mode", "功能建议"),
    ("登录不了", "忘记密码了", "账户问题"),
    ("Charged twice", "My payment went through twice", "支付问题"),
    ("Arrived broken", "The handle is broken", "产品质量"),
    ("Warranty", "Can you repair it?", "售后维修"),
    ("修改订单", "想换个颜色", "订单修改"),
    ("App crash", "It shows an error on start", "技术故障"),
    ("Hello", "Just saying hi", "其他"),
])
def test_answer_for_picks_the_category_by_keywords(subject: str, body: str, category: str) -> None:
    answer = answer_for({"subject": subject, "body": body})
    assert answer["category"] == category
    assert answer == answer_for({"body": body, "subject": subject})  # same inputs, same answer


def test_answer_for_reads_sentiment_and_summarises_in_60_characters() -> None:
    assert answer_for({"subject": "Thanks", "body": "great service"})["sentiment"] == "positive"
    assert answer_for({"subject": "Terrible", "body": "I am disappointed"})["sentiment"] == "negative"
    assert answer_for({"subject": "Order", "body": "status?"})["sentiment"] == "neutral"
    assert answer_for({"subject": "s", "body": "x" * 500})["summary"] == ("s " + "x" * 500)[:60]
    assert {label for label, _ in CATEGORY_RULES} <= set(DEFAULT_CATEGORIES)


def test_control_api_reports_counters_records_and_replaces_config(serve: Serve) -> None:
    emulator, url = serve()
    control = url.removesuffix("/v1") + "/_emulator"
    httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH)
    httpx.post(f"{url}/workflows/run", json=run_body(user=None), headers=AUTH)
    stats = httpx.get(f"{control}/stats").json()
    assert stats["requests_by_path"] == {"/v1/workflows/run": 2}
    assert stats["requests_by_status"] == {"200": 1, "400": 1}
    assert (stats["paid_runs"], stats["active_runs"], len(stats["run_arrivals"])) == (1, 0, 1)
    records = httpx.get(f"{control}/requests").json()
    assert [(record["status"], record["body"]["inputs"]) for record in records] == [(200, TICKET), (400, TICKET)]
    new_config = DifyEmulatorConfig(faults=[Fault(kind="http_500")]).model_dump_json()
    assert httpx.post(f"{control}/config", content=new_config).status_code == 200
    assert httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).status_code == 500
    assert emulator.stats()["requests_total"] == 3  # configuring kept the counters
    assert httpx.post(f"{control}/config", json={"latency_ms": "slow"}).status_code == 422
    assert httpx.post(f"{control}/reset").json()["requests_total"] == 0 and emulator.requests() == []


def test_module_runs_as_a_subprocess_and_prints_its_url() -> None:
    config = DifyEmulatorConfig(apps=[DifyApp(api_key=KEY)], latency_ms=1).model_dump_json()
    process = subprocess.Popen([sys.executable, "-m", "dify_pipeline_dev.emulators.dify", "--config", config],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("DIFY_EMULATOR_URL=http://127.0.0.1:") and line.endswith("/v1")
        url = line.split("=", 1)[1]
        assert httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---- chat apps ------------------------------------------------------------------------------------------

CHAT_KEY = "app-chat-key"
CHAT_FORM = [{"text-input": {"label": "Subject", "variable": "subject", "required": True, "max_length": 200,
                             "default": ""}}]
CHAT_AUTH = {"Authorization": f"Bearer {CHAT_KEY}"}


def chat_body(mode: str = "blocking", **extra) -> dict:
    return {"inputs": {"subject": "快递还没到"}, "query": "包裹一周了还没到，太慢了，很失望", "response_mode": mode,
            "user": "tester", **extra}


def chat_answer() -> dict:
    return answer_for({"subject": "快递还没到", "query": "包裹一周了还没到，太慢了，很失望"})


@pytest.mark.parametrize("app_mode", ["chat", "advanced-chat"])
def test_a_chat_app_answers_a_blocking_message_in_a_new_conversation(serve: Serve, app_mode: str) -> None:
    emulator, url = serve(apps=[DifyApp(api_key=CHAT_KEY, mode=app_mode, user_input_form=CHAT_FORM)])
    first = httpx.post(f"{url}/chat-messages", json=chat_body(), headers=CHAT_AUTH).json()
    second = httpx.post(f"{url}/chat-messages", json=chat_body(), headers=CHAT_AUTH).json()
    assert (first["event"], first["mode"], first["id"]) == ("message", app_mode, first["message_id"])
    assert json.loads(first["answer"]) == chat_answer()
    assert first["metadata"]["usage"]["total_price"] and first["conversation_id"] != second["conversation_id"]
    assert emulator.stats()["paid_runs"] == 2


def test_a_chatflow_streams_workflow_events_around_its_message_chunks(serve: Serve) -> None:
    emulator, url = serve(ping_interval=0.005, latency_ms=40,
                          apps=[DifyApp(api_key=CHAT_KEY, mode="advanced-chat", user_input_form=CHAT_FORM)])
    text = httpx.post(f"{url}/chat-messages", json=chat_body("streaming"), headers=CHAT_AUTH).text
    events = events_of(text)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "workflow_started" and kinds[-2:] == ["workflow_finished", "message_end"]
    assert "event: ping" in text and kinds.count("message") >= 2
    assert events[0]["data"]["workflow_id"] == emulator.config.apps[0].workflow_id
    assert len({event["conversation_id"] for event in events}) == 1
    assert json.loads("".join(e["answer"] for e in events if e["event"] == "message")) == chat_answer()
    assert events[-1]["metadata"]["usage"]["total_tokens"] > 0


def test_an_agent_streams_agent_messages_and_refuses_blocking_mode(serve: Serve) -> None:
    emulator, url = serve(apps=[DifyApp(api_key=CHAT_KEY, mode="agent-chat", user_input_form=CHAT_FORM)])
    events = events_of(httpx.post(f"{url}/chat-messages", json=chat_body("streaming"), headers=CHAT_AUTH).text)
    assert {"agent_thought", "agent_message", "message_end"} <= {event["event"] for event in events}
    assert json.loads("".join(e["answer"] for e in events if e["event"] == "agent_message")) == chat_answer()
    blocking = httpx.post(f"{url}/chat-messages", json=chat_body(), headers=CHAT_AUTH)
    assert (blocking.status_code, error_body(blocking)) == (
        400, {"code": "invalid_param", "message": "Agent Chat App does not support blocking mode", "status": 400})
    assert emulator.stats()["paid_runs"] == 1


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_a_failed_chatflow_run_answers_run_failed_and_is_paid(serve: Serve, mode: str) -> None:
    emulator, url = serve(ping_interval=0.005, faults=[Fault(kind="failed_run_sandbox")],
                          apps=[DifyApp(api_key=CHAT_KEY, mode="advanced-chat", user_input_form=CHAT_FORM)])
    response = httpx.post(f"{url}/chat-messages", json=chat_body(mode), headers=CHAT_AUTH)
    if mode == "blocking":
        assert response.status_code == 400 and error_body(response)["code"] == "invalid_param"
        assert error_body(response)["message"].startswith("Run failed: Failed to execute code")
    else:
        events = events_of(response.text)
        assert [event["event"] for event in events][-2:] == ["workflow_finished", "error"]
        assert events[-2]["data"]["status"] == "failed" and events[-1]["message"].startswith("Run failed: ")
    assert emulator.stats()["paid_runs"] == emulator.stats()["failed_runs"] == 1


@pytest.mark.parametrize(("body", "message"), [
    ({"inputs": {"subject": "s"}, "user": "u"}, "1 validation error for ChatRequestPayload\nquery\n  Field required"),
    ({"inputs": {"subject": "s"}, "user": "u", "query": ""}, "query is required"),
])
def test_a_chat_message_needs_a_query(serve: Serve, body: dict, message: str) -> None:
    emulator, url = serve(apps=[DifyApp(api_key=CHAT_KEY, mode="advanced-chat", user_input_form=CHAT_FORM)])
    response = httpx.post(f"{url}/chat-messages", json=body, headers=CHAT_AUTH)
    assert response.status_code == 400 and error_body(response)["code"] == "invalid_param"
    assert error_body(response)["message"].startswith(message)
    assert emulator.stats()["paid_runs"] == 0


def test_chat_messages_refuse_other_apps_and_other_routes_refuse_chat_apps(serve: Serve) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY), DifyApp(api_key=CHAT_KEY, mode="chat", user_input_form=CHAT_FORM)])
    wrong = httpx.post(f"{url}/chat-messages", json=chat_body(), headers=AUTH)
    assert (wrong.status_code, error_body(wrong)["code"]) == (400, "not_chat_app")
    workflow = httpx.post(f"{url}/workflows/run", json=chat_body(), headers=CHAT_AUTH)
    assert (workflow.status_code, error_body(workflow)["code"]) == (400, "not_workflow_app")


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
def test_a_chat_message_under_the_app_limit_is_refused_like_any_run(serve: Serve, mode: str) -> None:
    emulator, url = serve(latency_ms=300, apps=[DifyApp(api_key=CHAT_KEY, mode="advanced-chat", max_active_requests=1,
                                                        user_input_form=CHAT_FORM)])

    async def two_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=5) as client:
            return await asyncio.gather(*(client.post(f"{url}/chat-messages", json=chat_body(mode), headers=CHAT_AUTH)
                                          for _ in range(2)))

    statuses = sorted(response.status_code for response in asyncio.run(two_at_once()))
    assert statuses == [200, 400] and emulator.stats()["rejected_concurrency"] == 1


def test_a_chat_message_whose_client_left_in_the_backlog_is_still_run_and_paid(serve: Serve) -> None:
    emulator, url = serve(latency_ms=300, server_worker_connections=1,
                          apps=[DifyApp(api_key=CHAT_KEY, mode="advanced-chat", user_input_form=CHAT_FORM)])

    async def one_waits_and_leaves() -> None:
        async with httpx.AsyncClient(timeout=5) as patient, httpx.AsyncClient(timeout=0.1) as hasty:
            served = asyncio.create_task(patient.post(f"{url}/chat-messages", json=chat_body(), headers=CHAT_AUTH))
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.TimeoutException):
                await hasty.post(f"{url}/chat-messages", json=chat_body(), headers=CHAT_AUTH)
            await served

    asyncio.run(one_waits_and_leaves())
    deadline = time.monotonic() + 5
    while emulator.stats()["abandoned_runs"] < 1 and time.monotonic() < deadline:  # run out its latency first
        time.sleep(0.05)
    stats = emulator.stats()
    assert stats["paid_runs"] == 2 and stats["abandoned_runs"] == 1


# ---- republishing ---------------------------------------------------------------------------------------


def test_publish_changes_the_version_new_runs_use_and_keeps_the_old_one_runnable(serve: Serve) -> None:
    emulator, url = serve()
    old = emulator.config.apps[0].workflow_id
    control = url.removesuffix("/v1") + "/_emulator"
    new = httpx.post(f"{control}/publish", json={"api_key": KEY}).json()["workflow_id"]
    assert new != old and emulator.config.apps[0].published_workflow_ids == [old]
    assert httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()["data"]["workflow_id"] == new
    pinned = httpx.post(f"{url}/workflows/{old}/run", json=run_body(), headers=AUTH).json()
    assert pinned["data"]["workflow_id"] == old
    assert emulator.stats()["runs_by_workflow_id"] == {new: 1, old: 1}
    assert httpx.post(f"{control}/publish", json={"api_key": "nobody"}).status_code == 404


def test_a_run_under_way_finishes_on_the_version_it_started_with(serve: Serve) -> None:
    emulator, url = serve(latency_ms=300)
    old = emulator.config.apps[0].workflow_id

    async def publish_mid_run() -> dict:
        async with httpx.AsyncClient(timeout=5) as client:
            run = asyncio.create_task(client.post(f"{url}/workflows/run", json=run_body(), headers=AUTH))
            await asyncio.sleep(0.1)
            emulator.publish(KEY)
            return (await run).json()

    assert asyncio.run(publish_mid_run())["data"]["workflow_id"] == old


def test_a_deleted_version_answers_difys_404_and_the_current_one_cannot_be_deleted(serve: Serve) -> None:
    emulator, url = serve()
    old = emulator.config.apps[0].workflow_id
    new = emulator.publish(KEY)
    control = url.removesuffix("/v1") + "/_emulator"
    assert httpx.post(f"{control}/delete-version", json={"api_key": KEY, "workflow_id": old}).status_code == 200
    gone = httpx.post(f"{url}/workflows/{old}/run", json=run_body(), headers=AUTH)
    assert (gone.status_code, error_body(gone)) == (
        404, {"code": "not_found", "message": f"Workflow not found with id: {old}", "status": 404})
    with pytest.raises(ValueError):
        emulator.delete_version(KEY, new)
    assert emulator.stats()["paid_runs"] == 0


# ---- a second app: product reviews ----------------------------------------------------------------------


def test_each_key_reaches_its_own_app_and_the_reviews_app_answers_review_json(serve: Serve) -> None:
    _, url = serve(apps=[DifyApp(api_key=KEY), reviews_app("app-reviews-key")])
    reviews_auth = {"Authorization": "Bearer app-reviews-key"}
    review = {"title": "Too expensive", "review": "Poor quality and the delivery was late, I will return it"}
    body = httpx.post(f"{url}/completion-messages", json=run_body(inputs=review), headers=reviews_auth).json()
    assert json.loads(body["answer"]) == review_answer(review) == {
        "sentiment": "negative", "score": 1, "aspects": ["price", "quality", "delivery"]}
    form = httpx.get(f"{url}/parameters", headers=reviews_auth).json()["user_input_form"]
    assert [next(iter(item.values()))["variable"] for item in form] == ["title", "review"]
    assert httpx.get(f"{url}/info", headers=reviews_auth).json()["mode"] == "completion"
    missing = httpx.post(f"{url}/completion-messages", json=run_body(), headers=reviews_auth)
    assert error_body(missing)["message"] == "title is required in input form"
    ticket = httpx.post(f"{url}/workflows/run", json=run_body(), headers=AUTH).json()
    assert ticket["data"]["outputs"] == answer_for(TICKET)


@pytest.mark.parametrize(("title", "review", "sentiment", "score"), [
    ("Perfect", "Great quality, I love it and recommend it", "positive", 5),
    ("Fine", "Good", "positive", 4),
    ("Meh", "It is a case", "neutral", 3),
    ("Size", "Poor fit", "negative", 2),
])
def test_review_answer_scores_follow_the_sentiment(title: str, review: str, sentiment: str, score: int) -> None:
    answer = review_answer({"title": title, "review": review})
    assert (answer["sentiment"], answer["score"]) == (sentiment, score)
    assert answer == review_answer({"review": review, "title": title})
