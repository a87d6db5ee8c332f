"""Dify's Service API on the wire: the request of each app mode, and its answers (blocking JSON or SSE) read into
one `DifyResult`. Pure functions and a small stream reader, tested without a server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from dify_pipeline.resources.dify.errors import DifyCallError, classify_failed_run, classify_stream_error
from dify_pipeline.resources.run_journal import Attempt

AppMode = Literal["workflow", "completion", "chat"]
ResponseMode = Literal["blocking", "streaming"]


@dataclass(frozen=True)
class DifyRequest:
    record_key: str
    inputs: dict[str, Any]
    earlier: Attempt | None = None  # an attempt of an interrupted earlier run: look its run up before paying again
    query: str | None = None  # chat apps: the message itself (Dify's `query`)


@dataclass
class DifyResult:
    record_key: str
    succeeded: bool
    attempts: int
    latency_ms: float | None = None
    outputs: Any = None  # workflow `outputs` object, or a completion/chat app's `answer` text
    run_id: str | None = None  # workflow_run_id or message_id
    workflow_id: str | None = None  # the published version that answered (workflow apps; chatflows when streamed)
    total_tokens: int | None = None
    total_price: float | None = None
    currency: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    recovered: bool = False  # fetched with GET /workflows/run/{id} after a stream broke
    prompt_tokens: int | None = None  # completion and chat apps report the split; workflow runs only the total
    completion_tokens: int | None = None


def endpoint(app_mode: AppMode, workflow_id: str | None = None) -> str:
    """The path that runs a request: a workflow app's published version, or a specific one by its id."""
    if app_mode == "workflow":
        return f"/workflows/{workflow_id}/run" if workflow_id else "/workflows/run"
    return "/chat-messages" if app_mode == "chat" else "/completion-messages"


def payload(app_mode: AppMode, request: DifyRequest, response_mode: ResponseMode, user: str) -> dict:
    """The JSON body. A chat message starts a conversation of its own (no conversation_id) and asks Dify not to
    name it: naming is one more model call per record."""
    body: dict[str, Any] = {"inputs": request.inputs, "response_mode": response_mode, "user": user}
    if app_mode == "chat":
        body["query"] = request.query
        body["auto_generate_name"] = False
    return body


def json_or_error(text: str) -> dict:
    try:
        body = json.loads(text)
    except ValueError:
        raise DifyCallError("malformed_response", f"response is not JSON: {text[:80]!r}", True) from None
    if not isinstance(body, dict):
        raise DifyCallError("malformed_response", "response JSON is not an object", True)
    return body


def blocking_result(app_mode: AppMode, record_key: str, body: dict) -> DifyResult:
    """The result of a blocking answer: a workflow run object, or a completion/chat message."""
    if app_mode == "workflow":
        return workflow_result(record_key, body.get("data") or {}, body.get("workflow_run_id"))
    usage = (body.get("metadata") or {}).get("usage") or {}
    return message_result(record_key, body.get("message_id") or body.get("id"), body.get("answer"), usage)


def workflow_result(record_key: str, data: dict, run_id: str | None) -> DifyResult:
    """A finished workflow run (blocking `data`, workflow_finished, or GET /workflows/run/{id})."""
    status = data.get("status")
    if status != "succeeded":
        raise classify_failed_run(data.get("error"), status or "unknown")
    outputs = data.get("outputs")
    if isinstance(outputs, str):  # the run-detail endpoint may hand outputs back as JSON text
        try:
            outputs = json.loads(outputs)
        except ValueError:
            pass
    return DifyResult(
        record_key=record_key, succeeded=True, attempts=0, outputs=outputs,
        run_id=run_id or data.get("id"), workflow_id=data.get("workflow_id"),
        total_tokens=int_or_none(data.get("total_tokens")),
    )


def message_result(record_key: str, message_id: str | None, answer: str | None, usage: dict) -> DifyResult:
    """A completion or chat message with its `Usage` (tokens and price)."""
    price = usage.get("total_price")
    return DifyResult(
        record_key=record_key, succeeded=True, attempts=0, outputs=answer, run_id=message_id,
        total_tokens=int_or_none(usage.get("total_tokens")),
        total_price=float(price) if price not in (None, "") else None, currency=usage.get("currency"),
        prompt_tokens=int_or_none(usage.get("prompt_tokens")),
        completion_tokens=int_or_none(usage.get("completion_tokens")),
    )


def node_price(metadata: dict | None) -> tuple[float, str | None] | None:
    """A node's price from its node_finished execution_metadata (LLM nodes carry total_price and currency)."""
    price = (metadata or {}).get("total_price")
    if price in (None, ""):
        return None
    try:
        return float(price), metadata.get("currency")
    except (TypeError, ValueError):
        return None


def int_or_none(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class AnswerStream:
    """Folds the events of one streamed answer into its result: `feed` each event, a result at the terminal one.

    Workflow apps end at `workflow_finished`. Completion and chat apps send the answer in `message` chunks
    (`agent_message` for agents, `message_replace` when moderation rewrites it) and end at `message_end`; a
    chatflow also sends workflow events, whose `workflow_finished` comes before `message_end`.
    """

    def __init__(self, app_mode: AppMode, record_key: str) -> None:
        self.app_mode, self.record_key = app_mode, record_key
        self.run_id: str | None = None  # workflow_run_id, once the run announced itself (workflow_started)
        self.workflow_id: str | None = None
        self._answer: list[str] = []
        self._node_prices: list[tuple[float, str | None]] = []  # a workflow run's price is only in its nodes' events
        self._failed_run: DifyCallError | None = None

    def feed(self, event: dict) -> DifyResult | None:
        kind = event.get("event")
        data = event.get("data") or {}
        if kind == "workflow_started":
            self.run_id = event.get("workflow_run_id") or data.get("id")
            self.workflow_id = data.get("workflow_id")
        elif kind == "node_finished":
            price = node_price(data.get("execution_metadata"))
            if price is not None:
                self._node_prices.append(price)
        elif kind == "workflow_finished":
            self.workflow_id = data.get("workflow_id") or self.workflow_id
            if self.app_mode == "workflow":
                result = workflow_result(self.record_key, data, event.get("workflow_run_id"))
                if self._node_prices:
                    result.total_price = sum(price for price, _ in self._node_prices)
                    result.currency = next((currency for _, currency in self._node_prices if currency), None)
                return result
            if data.get("status") != "succeeded":  # a chatflow's failure: its error event follows, this is clearer
                self._failed_run = classify_failed_run(data.get("error"), data.get("status") or "unknown")
        elif kind in ("message", "agent_message"):
            self._answer.append(event.get("answer") or "")
        elif kind == "message_replace":
            self._answer = [event.get("answer") or ""]
        elif kind == "message_end":
            usage = (event.get("metadata") or {}).get("usage") or {}
            result = message_result(self.record_key, event.get("message_id") or event.get("id"),
                                    "".join(self._answer), usage)
            result.workflow_id = self.workflow_id
            return result
        elif kind == "error":
            raise self._failed_run or classify_stream_error(event)
        return None


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict]:
    """Dify's SSE: `data: {json}` frames separated by blank lines; bare `event: ping` keep-alives.

    Lines are split by hand: aiohttp's readline refuses lines over 64 KiB, and an event can be larger.
    """
    buffer = b""
    data_lines: list[str] = []
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if line.startswith("data:"):
                data_lines.append(line[5:].lstrip())
            elif line == "" and data_lines:
                text = "\n".join(data_lines)
                data_lines = []
                try:
                    event = json.loads(text)
                except ValueError:
                    raise DifyCallError("malformed_response", f"stream event is not JSON: {text[:80]!r}",
                                        True) from None
                if isinstance(event, dict) and event.get("event") != "ping":
                    yield event
            # `event: ping` lines and comments carry nothing for us
