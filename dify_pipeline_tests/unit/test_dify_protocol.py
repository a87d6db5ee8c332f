"""Reading Dify's answers without a server: streamed events of each app mode folded into one result."""

from __future__ import annotations

import asyncio

import pytest

from dify_pipeline.resources.dify import DifyCallError, DifyRequest
from dify_pipeline.resources.dify.protocol import AnswerStream, blocking_result, endpoint, payload, sse_events

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "total_price": "0.0003", "currency": "USD"}


def fold(mode: str, events: list[dict]):
    stream = AnswerStream(mode, "r-1")
    for event in events:
        result = stream.feed(event)
        if result is not None:
            return result
    return None


def test_a_chat_request_sends_its_query_in_a_new_unnamed_conversation():
    request = DifyRequest("r-1", {"subject": "s"}, query="where is it?")
    assert endpoint("chat") == "/chat-messages"
    assert payload("chat", request, "blocking", "u") == {"inputs": {"subject": "s"}, "response_mode": "blocking",
                                                          "user": "u", "query": "where is it?",
                                                          "auto_generate_name": False}
    assert "query" not in payload("workflow", request, "blocking", "u")


def test_a_pinned_workflow_request_goes_to_its_versions_path():
    assert endpoint("workflow") == "/workflows/run"
    assert endpoint("workflow", "0b5c") == "/workflows/0b5c/run"
    assert endpoint("completion", None) == "/completion-messages"


def test_a_chatflow_stream_ends_at_message_end_not_at_workflow_finished():
    events = [
        {"event": "workflow_started", "workflow_run_id": "run-1", "data": {"id": "run-1", "workflow_id": "v1"}},
        {"event": "message", "answer": '{"a": '},
        {"event": "workflow_finished", "workflow_run_id": "run-1",
         "data": {"status": "succeeded", "workflow_id": "v1"}},
        {"event": "message", "answer": "1}"},
        {"event": "message_end", "message_id": "m-1", "metadata": {"usage": USAGE}},
    ]
    result = fold("chat", events)
    assert (result.outputs, result.run_id, result.workflow_id) == ('{"a": 1}', "m-1", "v1")
    assert (result.total_price, result.prompt_tokens, result.completion_tokens) == (0.0003, 10, 5)


def test_an_agent_streams_agent_message_chunks_and_moderation_can_replace_the_answer():
    assert fold("chat", [{"event": "agent_thought", "thought": ""}, {"event": "agent_message", "answer": "he"},
                         {"event": "agent_message", "answer": "llo"},
                         {"event": "message_end", "id": "m-2", "metadata": {"usage": USAGE}}]).outputs == "hello"
    assert fold("chat", [{"event": "message", "answer": "bad words"},
                         {"event": "message_replace", "answer": "[moderated]"},
                         {"event": "message_end", "id": "m-3", "metadata": {}}]).outputs == "[moderated]"


def test_a_failed_chatflow_run_is_a_failed_run_with_its_own_error():
    events = [{"event": "workflow_started", "workflow_run_id": "run-1", "data": {"workflow_id": "v1"}},
              {"event": "workflow_finished", "data": {"status": "failed", "error": "sandbox: Connection refused"}},
              {"event": "error", "status": 400, "code": "invalid_param",
               "message": "Run failed: sandbox: Connection refused"}]
    with pytest.raises(DifyCallError) as raised:
        fold("chat", events)
    assert (raised.value.code, raised.value.retryable) == ("run_failed", False)
    assert raised.value.message == "sandbox: Connection refused"


def test_a_workflow_stream_ends_at_workflow_finished_with_its_nodes_price():
    events = [{"event": "workflow_started", "workflow_run_id": "run-1", "data": {"workflow_id": "v1"}},
              {"event": "node_finished", "data": {"execution_metadata": {"total_price": "0.25", "currency": "USD"}}},
              {"event": "workflow_finished", "workflow_run_id": "run-1",
               "data": {"status": "succeeded", "outputs": {"x": 1}, "workflow_id": "v1", "total_tokens": 7}}]
    result = fold("workflow", events)
    assert (result.outputs, result.workflow_id, result.total_price, result.currency) == ({"x": 1}, "v1", 0.25, "USD")


def test_a_blocking_chat_answer_reads_like_a_completion():
    body = {"event": "message", "message_id": "m-1", "conversation_id": "c-1", "mode": "advanced-chat",
            "answer": "hi", "metadata": {"usage": USAGE}}
    result = blocking_result("chat", "r-1", body)
    assert (result.outputs, result.run_id, result.total_tokens, result.workflow_id) == ("hi", "m-1", 15, None)


def test_sse_frames_larger_than_a_read_and_pings_are_handled():
    async def chunks():
        yield b'event: ping\n\ndata: {"event": "message", "answer": "' + b"x" * 70000
        yield b'"}\n\n'

    async def collect():
        return [event async for event in sse_events(chunks())]

    assert [len(event["answer"]) for event in asyncio.run(collect())] == [70000]
