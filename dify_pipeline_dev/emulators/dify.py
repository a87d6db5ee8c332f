"""An HTTP emulator of Dify's Service API (workflow, completion and chat apps) for tests, benchmarks and the demo.

Shapes, headers and error bodies follow Dify's OpenAPI spec (v1.16.0) and responses captured from a real
Dify 1.11.4 server. Each accepted request starts a run that lasts a sampled latency on the event loop, so
thousands can be in flight; runs are kept so `GET /v1/workflows/run/{id}` can report them, also after the
client lost the stream. Faults are injected per request. Each API key reaches its own app (`DifyApp`: its mode,
what it answers, its input form); an app can be republished mid-run (`publish`), its earlier versions still run
by their id. Drive it in-process through `DifyEmulator`, or over HTTP through `/_emulator/...` (for
`python -m dify_pipeline_dev.emulators.dify`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import math
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dify_pipeline_dev.emulators.dify_answers import (
    answer_for,
    answer_json,
    app_text,
    faulty_answer,
    review_answer,
    usage_for,
    workflow_outputs,
)
from dify_pipeline_dev.emulators.server import AcceptGate, check_loopback, serve_in_thread

__all__ = ["DifyApp", "DifyEmulator", "DifyEmulatorConfig", "Fault", "answer_for", "main", "max_runs_in_window",
           "review_answer", "reviews_app"]

FaultKind = Literal["http_429", "http_500", "http_502_html", "http_503", "http_504_html", "timeout", "drop",
                    "drop_mid_stream", "malformed_json", "failed_run", "failed_run_sandbox", "unauthorized",
                    "quota_exceeded", "bad_output", "invalid_category"]
# Faults answered instead of a run: nothing is created, nothing is paid.
PRE_RUN_FAULTS = frozenset({"http_429", "http_500", "http_502_html", "http_503", "http_504_html", "timeout",
                            "drop", "unauthorized", "quota_exceeded"})


def _default_input_form() -> list[dict]:
    return [
        {"text-input": {"label": "Subject", "variable": "subject", "required": True, "max_length": 200,
                        "default": ""}},
        {"paragraph": {"label": "Body", "variable": "body", "required": True, "max_length": 4000,
                       "default": ""}},
    ]


def _review_input_form() -> list[dict]:
    return [
        {"text-input": {"label": "Title", "variable": "title", "required": True, "max_length": 200, "default": ""}},
        {"paragraph": {"label": "Review", "variable": "review", "required": True, "max_length": 4000,
                       "default": ""}},
    ]


# Dify's app modes. chat: a chatbot; advanced-chat: a chatflow; agent-chat: an agent (streaming only).
AppMode = Literal["workflow", "completion", "chat", "advanced-chat", "agent-chat"]
CHAT_MODES = frozenset({"chat", "advanced-chat", "agent-chat"})


class DifyApp(BaseModel):
    """One published app served by the emulator, reached with its own API key."""

    model_config = ConfigDict(extra="forbid")

    api_key: str
    mode: AppMode = "workflow"
    # What the app does: enrich a support ticket ({"category","summary","sentiment"}) or judge a product review
    # ({"sentiment","score","aspects"}, inputs title and review).
    answers: Literal["tickets", "reviews"] = "tickets"
    app_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    workflow_id: str = Field(default_factory=lambda: str(uuid.uuid4()))  # change it to "republish" the app
    # Versions published before the current one: POST /workflows/{workflow_id}/run still runs them.
    published_workflow_ids: list[str] = Field(default_factory=list)
    name: str = "Support ticket enrichment"
    user_input_form: list[dict] = Field(default_factory=_default_input_form)  # as GET /parameters shows it
    # object: outputs {"category","summary","sentiment"}; json_string: outputs {"result": "<their JSON>"}.
    # Completion apps always answer with that JSON text.
    output_style: Literal["object", "json_string"] = "object"
    max_active_requests: int | None = None  # Dify's APP_MAX_ACTIVE_REQUESTS for this app


def reviews_app(api_key: str, **fields) -> DifyApp:
    """A completion app that answers a product review (inputs title, review) with its sentiment JSON."""
    return DifyApp(api_key=api_key, **{"mode": "completion", "answers": "reviews", "name": "Product review sentiment",
                                       "user_input_form": _review_input_form(), **fields})


class ChatRequestPayload(BaseModel):
    """The body of POST /chat-messages as Dify 1.11.4 validates it (so a missing `query` reads as Dify's)."""

    inputs: dict[str, Any]
    query: str
    files: list[dict[str, Any]] | None = None
    response_mode: Literal["blocking", "streaming"] | None = None
    conversation_id: str | None = None
    retriever_from: str = "dev"
    auto_generate_name: bool = True
    workflow_id: str | None = None


class Fault(BaseModel):
    """A failure to inject into run requests (POST /workflows/run, /completion-messages)."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    match: str | None = None  # only requests with an input value containing this text
    probability: float = Field(default=1.0, ge=0.0, le=1.0)  # drawn from the emulator's seeded RNG
    first_n: int | None = None  # only the first N matching requests overall
    times_per_input: int | None = None  # each distinct inputs fails only its first K attempts
    retry_after: float | None = None  # http_429 / http_503: send Retry-After (seconds)
    hang_seconds: float = 30.0  # timeout: hold the request this long, then answer 504
    error: str | None = None  # failed_run*: the run's error text instead of the kind's own


class DifyEmulatorConfig(BaseModel):
    """Everything the emulator does; replaceable at any time through `configure` or POST /_emulator/config."""

    model_config = ConfigDict(extra="forbid")

    apps: list[DifyApp] = Field(default_factory=lambda: [DifyApp(api_key="app-emulator-key")])
    latency_ms: float = 50.0  # median duration of a run
    latency_sigma: float = 0.0  # lognormal spread around the median; 0 gives every run the median
    ping_interval: float = 10.0  # seconds between `event: ping` frames while a streaming run works
    rate_limit_per_minute: int | None = None  # gateway-style: runs accepted in any sliding 60 s, beyond it 429
    rate_limit_retry_after: float | None = None
    concurrency_limit_status: Literal[400, 429] = 400  # real Dify answers 400; its spec documents 429
    # gunicorn's gevent worker `--worker-connections` (the official image: 10): connections accepted at a time;
    # the rest wait unaccepted in the listen backlog. None accepts every connection (no real server does).
    server_worker_connections: int | None = Field(default=10, ge=1)
    server_keep_alive_seconds: float = Field(default=2.0, gt=0)  # gunicorn's `--keep-alive` default
    # gunicorn keeps a streamed (chunked, "Connection: keep-alive") answer's connection open like any other.
    # Seen from Dify, streams did free their connection: the chunked end follows the final event in a later
    # write (STREAM_END_GAP), so a client that stops at the final event leaves it unread and its HTTP library
    # (aiohttp) closes the connection. True makes the emulator close it whatever the client does.
    close_connection_after_stream: bool = False
    # Dify's SQLAlchemy pool: each request holds a connection until its answer ends (a stream: its last event).
    # Beyond SQLALCHEMY_POOL_SIZE + SQLALCHEMY_MAX_OVERFLOW (30 + 10 in the image) a request waits up to
    # SQLALCHEMY_POOL_TIMEOUT (30 s) for one, then answers 500 without a run. None: a pool that never runs out.
    database_pool_size: int | None = Field(default=None, ge=1)
    database_pool_timeout: float = Field(default=30.0, ge=0)
    faults: list[Fault] = Field(default_factory=list)  # checked in order, the first that applies wins
    seed: int = 0

    @model_validator(mode="after")
    def _api_keys_are_unique(self) -> DifyEmulatorConfig:
        keys = [app.api_key for app in self.apps]
        if len(keys) != len(set(keys)):
            raise ValueError("each app needs its own api_key")
        return self


# Headers of every Dify answer, as captured from the real server.
DIFY_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "X-Env, X-Trace-Id, X-Version",
    "X-Version": "1.11.4",
    "X-Env": "PRODUCTION",
}
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
PING_FRAME = "event: ping\n\n"
QUOTA_MESSAGE = ("Your quota for Dify Hosted OpenAI has been exhausted. Please go to Settings -> Model Provider "
                 "to complete your own provider credentials.")
FAILED_RUN_ERROR = "[emulator] Error: the model provider failed to answer (injected failed_run)"
# A code node that cannot reach Dify's sandbox, word for word from a real 1.11.4 run.
SANDBOX_ERROR = ("Failed to execute code, which is likely a network issue, please check if the sandbox service is "
                 "running. ( Error: [Errno 111] Connection refused )")
FAILED_RUN_ERRORS = {"failed_run": FAILED_RUN_ERROR, "failed_run_sandbox": SANDBOX_ERROR}
GATEWAY_PAGES = {
    502: "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
         "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    504: "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway "
         "Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
}
# The emulated app's graph: node id -> (node type, title). The LLM node is where a run spends its latency.
WORKFLOW_NODES = {"start": ("start", "Start"), "llm": ("llm", "Enrich ticket"), "end": ("end", "End")}
PUBLISHED_VERSION = "2026-01-01 00:00:00.000000"  # a published workflow's `version`: when it was published
# After a stream's final event, Dify's generator waits on its queue for the end marker, then gunicorn writes the
# chunked end: a separate, later write. A client returning at the final event has not read it yet.
STREAM_END_GAP = 0.005
_TRANSPORT = "dify_emulator.transport"  # scope key: the connection's transport, for faults that cut it
_EXCHANGE = "dify_emulator.exchange"  # scope key: the run a request started, for the connection layer


class DifyError(Exception):
    """A failure answered in Dify's envelope `{"code", "message", "status"}`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> Response:
        body = {"code": self.code, "message": self.message, "status": self.status}
        return _json_response(_compact(body), self.status, self.headers)

    def event(self, **ids: str) -> dict:
        """The same error as an in-stream `error` event."""
        return {"event": "error", **ids, "status": self.status, "code": self.code, "message": self.message}


def _compact(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _json_response(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, {**DIFY_HEADERS, **(headers or {}), "Content-Type": JSON_CONTENT_TYPE})


def _event_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(frames, headers=DIFY_HEADERS, media_type="text/event-stream")


def _sse(event: dict) -> str:
    return f"data: {_compact(event)}\n\n"


def _truncated_sse(event: dict) -> str:
    text = _compact(event)
    return f"data: {text[: len(text) // 2]}\n\n"


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": f"{seconds:g}"}


def _unix_now() -> int:
    return int(time.time())


def max_runs_in_window(arrivals: Sequence[float], window_seconds: float = 60.0) -> int:
    """The most run arrivals (seconds, e.g. stats()["run_arrivals"]) that fall in any window of this length."""
    times, most, start = sorted(arrivals), 0, 0
    for end, arrived in enumerate(times):
        while arrived - times[start] >= window_seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


def validate_inputs(form: list[dict], inputs: dict) -> dict:
    """Check inputs against the app's user_input_form as Dify does; return the form's variables only."""
    accepted: dict[str, Any] = {}
    for item in form:
        ((kind, spec),) = item.items()
        name, value = spec["variable"], inputs.get(spec["variable"])
        if value is None:  # Dify lets an empty string through, only a missing value is "required"
            if spec.get("required"):
                raise DifyError(400, "invalid_param", f"{name} is required in input form")
            accepted[name] = None
            continue
        if kind in ("text-input", "paragraph", "select") and not isinstance(value, str):
            raise DifyError(400, "invalid_param", f"(type '{kind}') {name} in input form must be a string")
        if kind == "select" and value not in spec.get("options", []):
            options = spec.get("options", [])
            raise DifyError(400, "invalid_param", f"{name} in input form must be one of the following: {options}")
        max_length = spec.get("max_length")
        if kind in ("text-input", "paragraph") and max_length and len(value) > max_length:
            raise DifyError(400, "invalid_param", f"{name} in input form must be less than {max_length} characters")
        accepted[name] = value.replace("\x00", "") if isinstance(value, str) else value
    return accepted


class WorkflowLogQuery(BaseModel):
    """The query of GET /workflows/logs, as Dify 1.11.4 validates it (so its error texts are Dify's)."""

    keyword: str | None = None
    status: Literal["succeeded", "failed", "stopped"] | None = None
    created_at__before: str | None = None
    created_at__after: str | None = None
    created_by_end_user_session_id: str | None = None
    created_by_account: str | None = None
    page: int = Field(default=1, ge=1, le=99999)
    limit: int = Field(default=20, ge=1, le=100)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _parse_iso(text: str | None) -> float | None:
    """An ISO 8601 time as Unix seconds; without an offset it is UTC, as Dify's database stores it."""
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _log_matches(run: _Run, query: WorkflowLogQuery, before: float | None, after: float | None) -> bool:
    if query.status is not None and run.status != query.status:
        return False
    if query.keyword:  # ILIKE on the stored (ASCII-escaped) JSON, the end user's session id, or the run id
        needle = query.keyword[:30].lower()
        haystacks = [json.dumps(run.variable_pool), json.dumps(run.outputs) if run.outputs else "", run.user]
        if not any(needle in text.lower() for text in haystacks) and query.keyword != run.id:
            return False
    if before is not None and run.logged_at > before:
        return False
    if after is not None and run.logged_at < after:
        return False
    if query.created_by_end_user_session_id and run.user != query.created_by_end_user_session_id:
        return False
    return query.created_by_account is None  # runs through the API key are an end user's, never an account's


def _end_user(user: str) -> dict:
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_OID, user)), "type": "service_api", "is_anonymous": False,
            "session_id": user}


def _log_item(run: _Run) -> dict:
    """One workflow_app_logs row with its run, as the logs endpoint marshals it (no inputs nor outputs)."""
    return {"id": run.log_id, "workflow_run": {
        "id": run.id, "version": run.workflow_version, "status": run.status, "triggered_from": "app-run",
        "error": run.error, "elapsed_time": run.elapsed_time, "total_tokens": run.usage.get("total_tokens", 0),
        "total_steps": run.total_steps, "created_at": run.created_at, "finished_at": run.finished_at,
        "exceptions_count": 0},
        "details": None, "created_from": "service-api", "created_by_role": "end_user", "created_by_account": None,
        "created_by_end_user": _end_user(run.user), "created_at": int(run.logged_at)}


@dataclass
class _Run:
    """One workflow run or completion message, from acceptance to its end."""

    app: DifyApp
    inputs: dict
    user: str
    fault: str | None
    latency: float
    fault_error: str | None = None  # a failed run's error text, when the fault names one
    workflow_id: str = ""  # the published version that runs it; the app's current one unless asked otherwise
    query: str | None = None  # a chat message's text
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    conversation_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # each chat message starts its own
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: int = field(default_factory=_unix_now)
    logged_at: float = field(default_factory=time.time)  # its workflow_app_logs row, written as the run starts
    log_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)
    status: str = "running"
    outputs: dict = field(default_factory=dict)
    answer: str = ""
    error: str | None = None
    elapsed_time: float = 0.0
    finished_at: int | None = None
    usage: dict = field(default_factory=dict)
    task: asyncio.Task | None = None
    workflow_version: str = PUBLISHED_VERSION

    def __post_init__(self) -> None:
        self.workflow_id = self.workflow_id or self.app.workflow_id

    @property
    def answer_inputs(self) -> dict:
        """What the app's answer is drawn from: its inputs, and a chat message's `query`."""
        return self.inputs if self.query is None else {**self.inputs, "query": self.query}

    @property
    def ids(self) -> dict[str, str]:
        return {"workflow_run_id": self.id, "task_id": self.task_id}

    @property
    def variable_pool(self) -> dict:
        """Inputs as Dify shows them in events: the user's plus the system variables."""
        return {**self.inputs, "sys.files": [], "sys.user_id": self.user, "sys.app_id": self.app.app_id,
                "sys.workflow_id": self.workflow_id, "sys.workflow_run_id": self.id}

    @property
    def total_steps(self) -> int:
        """Nodes run so far: Start while the LLM works; a failed run stops at the LLM node."""
        return {"running": 1, "failed": 2}.get(self.status, len(WORKFLOW_NODES))

    def finished_data(self) -> dict:
        """The `data` of a blocking response (keys as in the captured blocking.json)."""
        return {"id": self.id, "workflow_id": self.workflow_id, "status": self.status, "outputs": self.outputs,
                "error": self.error, "elapsed_time": self.elapsed_time,
                "total_tokens": self.usage.get("total_tokens", 0), "total_steps": self.total_steps,
                "created_at": self.created_at, "finished_at": self.finished_at}


class _ConnectionAwareStarlette(Starlette):
    """Starlette that behaves on the connection as Dify's gunicorn worker does.

    It keeps each connection's transport in the scope (so a fault can cut it), closes the connection after a
    streamed answer when `closes_streams()` says so, and reports each run's answer as delivered or abandoned
    to `on_exchange_done`. A request
    whose client left while it waited in the backlog is read and run like any other: uvicorn parses the bytes
    that arrived before it sees the end of the connection, as gevent does.
    """

    def __init__(self, *args, accept_gate: AcceptGate, on_exchange_done: Callable[[dict, bool], None],
                 closes_streams: Callable[[], bool], **kwargs):
        super().__init__(*args, **kwargs)
        self.accept_gate, self._on_exchange_done, self._closes_streams = accept_gate, on_exchange_done, closes_streams

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        cycle = getattr(send, "__self__", None)  # uvicorn's `send` is a method of the cycle owning the transport
        transport = scope[_TRANSPORT] = getattr(cycle, "transport", None)
        exchange = scope[_EXCHANGE] = {"run": None}
        streamed = False

        async def noting_send(message: dict) -> None:
            nonlocal streamed
            if message["type"] == "http.response.start":
                streamed = any(name == b"content-type" and value.startswith(b"text/event-stream")
                               for name, value in message.get("headers", []))
            await send(message)

        await super().__call__(scope, receive, noting_send)
        if cycle is not None and hasattr(cycle, "response_complete"):
            self._on_exchange_done(exchange, cycle.response_complete and not cycle.disconnected)
        if streamed and self._closes_streams() and transport is not None and not transport.is_closing():
            transport.close()


async def _cut_connection(request: Request) -> None:
    """Close the connection without another byte, as a crashed proxy or a reset would."""
    transport = request.scope.get(_TRANSPORT)
    if transport is None:
        raise ConnectionAbortedError("emulated dropped connection")  # not under uvicorn: fail the request
    for _ in range(100):  # let what was already sent (e.g. workflow_started) leave the buffer first
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.01)
    transport.abort()
    await asyncio.sleep(0.01)  # the server notices the lost connection and ignores the rest of the answer


async def _hold(request: Request, seconds: float) -> None:
    """Wait `seconds`, or less if the client hangs up first."""

    async def until_disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(until_disconnected(), seconds)
    except TimeoutError:
        pass


class DifyEmulator:
    """Dify's Service API on an ASGI app (`app`); serve it with `serve_in_thread(DifyEmulator(config).app)`.

    The Python methods and the HTTP control API under `/_emulator` do the same things.
    """

    def __init__(self, config: DifyEmulatorConfig | None = None):
        # In a process of its own (`main`): every this many settled runs, the heap is frozen out of the collector's
        # scans, else a full collection walks every stored run while every answer waits (runs of 200 ms took 206).
        self.freeze_every: int | None = None
        self._settled_since_freeze = 0
        self._lock = threading.Lock()  # control calls may come from another thread than the event loop's
        self._config = config or DifyEmulatorConfig()
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task] = set()  # running runs; a reference keeps them from being collected
        self._active_by_app: collections.Counter[str] = collections.Counter()
        self._database_in_use = 0
        self._gate = AcceptGate(lambda: self._config.server_worker_connections,
                                lambda: self._config.server_keep_alive_seconds)
        self._clear_records()
        self._restart_randomness()
        routes = [
            self._dify_route("/v1/workflows/run", self._workflow_run, "POST"),
            self._dify_route("/v1/workflows/run/{workflow_run_id}", self._workflow_run_detail, "GET"),
            self._dify_route("/v1/workflows/logs", self._workflow_logs, "GET"),
            self._dify_route("/v1/workflows/{workflow_id}/run", self._workflow_version_run, "POST"),
            self._dify_route("/v1/completion-messages", self._completion_message, "POST"),
            self._dify_route("/v1/chat-messages", self._chat_message, "POST"),
            self._dify_route("/v1/parameters", self._parameters, "GET"),
            self._dify_route("/v1/info", self._info, "GET"),
            Route("/_emulator/stats", self._get_stats, methods=["GET"]),
            Route("/_emulator/requests", self._get_requests, methods=["GET"]),
            Route("/_emulator/config", self._get_config, methods=["GET"]),
            Route("/_emulator/config", self._post_config, methods=["POST"]),
            Route("/_emulator/reset", self._post_reset, methods=["POST"]),
            Route("/_emulator/publish", self._post_publish, methods=["POST"]),
            Route("/_emulator/delete-version", self._post_delete_version, methods=["POST"]),
        ]
        self.app: Starlette = _ConnectionAwareStarlette(
            routes=routes, exception_handlers={404: self._not_found, 405: self._method_not_allowed},
            accept_gate=self._gate, on_exchange_done=self._exchange_done,
            closes_streams=lambda: self._config.close_connection_after_stream,
        )

    # ---- control -------------------------------------------------------------------------------------

    @property
    def config(self) -> DifyEmulatorConfig:
        return self._config

    def configure(self, config: DifyEmulatorConfig | dict) -> None:
        """Replace the configuration; counters, records and runs stay, fault bookkeeping and RNGs restart."""
        config = config if isinstance(config, DifyEmulatorConfig) else DifyEmulatorConfig.model_validate(config)
        with self._lock:
            self._config = config
            self._restart_randomness()

    def publish(self, api_key: str, workflow_id: str | None = None) -> str:
        """Publish a new version of the key's app (as "Publish" in Dify's studio); returns its workflow_id.

        New runs of POST /workflows/run use it; runs under way finish on their version, and every earlier
        version still runs by its id (POST /workflows/{workflow_id}/run)."""
        new_id = workflow_id or str(uuid.uuid4())
        with self._lock:
            app = self._app_with_key(api_key)
            app.published_workflow_ids.append(app.workflow_id)
            app.workflow_id = new_id
        return new_id

    def delete_version(self, api_key: str, workflow_id: str) -> None:
        """Delete an earlier published version: running it by its id then answers 404, as for an unknown id."""
        with self._lock:
            app = self._app_with_key(api_key)
            if workflow_id == app.workflow_id:
                raise ValueError("the version published now cannot be deleted")
            app.published_workflow_ids.remove(workflow_id)

    def _app_with_key(self, api_key: str) -> DifyApp:
        app = next((app for app in self._config.apps if app.api_key == api_key), None)
        if app is None:
            raise KeyError("no app has this api_key")
        return app

    def reset(self) -> None:
        """Forget counters, recorded requests and finished runs (runs still working finish normally)."""
        with self._lock:
            self._clear_records()
            self._restart_randomness()
            self._runs = {run_id: run for run_id, run in self._runs.items() if run.status == "running"}

    def stats(self) -> dict:
        """Counters since the last reset. `run_arrivals` are time.monotonic() seconds of accepted runs.

        Every run created is paid (`paid_runs`), failed ones too (`failed_runs`); `mean_run_seconds` is how long
        the settled runs took by this server's clock (its timers wake a little late: ~202 ms for 200), the app's
        latency a client is measured against; `abandoned_runs` are those whose answer never reached its client
        (it left while the request waited in the backlog or the run worked, or the connection was cut).
        `runs_by_input` counts runs per distinct inputs (compact JSON), `runs_by_workflow_id` the runs of each
        published version (workflow apps and chatflows), `end_users` the distinct `user` values seen (each one an
        end-user row in Dify). The connection figures come from the accept gate: `accept_queue` is how many
        connections wait unaccepted right now.
        """
        connections = self._gate.stats()
        with self._lock:
            return {
                **connections,
                "requests_total": sum(self._by_path.values()),
                "requests_by_path": dict(self._by_path),
                "requests_by_status": dict(self._by_status),
                "paid_runs": self._paid_runs,
                "failed_runs": self._failed_runs,
                "mean_run_seconds": self._run_seconds / self._settled_runs if self._settled_runs else None,
                "abandoned_runs": self._abandoned_runs,
                "distinct_inputs": len(self._runs_by_input),
                "runs_by_input": dict(self._runs_by_input),
                "runs_by_workflow_id": {key: count for key, count in self._runs_by_workflow.items() if key},
                "end_users": len(self._end_users),
                "active_runs": sum(self._active_by_app.values()),
                "max_active_runs": self._max_active,
                "rejected_concurrency": self._rejected_concurrency,
                "rejected_rate_limit": self._rejected_rate_limit,
                "rejected_database": self._rejected_database,
                "faults_injected": dict(self._faults_injected),
                "run_arrivals": list(self._run_arrivals),
            }

    def requests(self) -> list[dict]:
        """Every Dify request received: time, method, path, body, fault, workflow_run_id, and its answer's
        status and answered_at (status None with answered_at set: the connection was cut without an answer)."""
        with self._lock:
            return [dict(record) for record in self._records]

    def _clear_records(self) -> None:
        self._records: list[dict] = []
        self._by_path: collections.Counter[str] = collections.Counter()
        self._by_status: collections.Counter[str] = collections.Counter()
        self._faults_injected: collections.Counter[str] = collections.Counter()
        self._paid_runs = self._rejected_concurrency = self._rejected_rate_limit = 0
        self._failed_runs = self._abandoned_runs = self._rejected_database = 0
        self._settled_runs, self._run_seconds = 0, 0.0  # the runs' own durations, as this server timed them
        self._runs_by_input: collections.Counter[str] = collections.Counter()
        self._runs_by_workflow: collections.Counter[str] = collections.Counter()
        self._end_users: set[str] = set()
        self._gate.reset()
        self._max_active = sum(self._active_by_app.values())
        self._run_arrivals: list[float] = []
        self._rate_window: collections.deque[float] = collections.deque()

    def _restart_randomness(self) -> None:
        seed = self._config.seed
        self._latency_rng = random.Random(f"latency-{seed}")  # separate streams: adding faults keeps latencies
        self._fault_rng = random.Random(f"faults-{seed}")
        self._fault_matches: collections.Counter[int] = collections.Counter()
        self._fault_attempts: collections.defaultdict[int, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def _exchange_done(self, exchange: dict, delivered: bool) -> None:
        """The connection layer's word on a finished exchange: did the run's answer reach its client?"""
        run = exchange["run"]
        if run is not None and not delivered:
            with self._lock:
                self._abandoned_runs += 1

    async def _get_stats(self, _: Request) -> Response:
        return JSONResponse(self.stats())

    async def _get_requests(self, _: Request) -> Response:
        return JSONResponse(self.requests())

    async def _get_config(self, _: Request) -> Response:
        return JSONResponse(self.config.model_dump())

    async def _post_config(self, request: Request) -> Response:
        try:
            self.configure(DifyEmulatorConfig.model_validate_json(await request.body()))
        except ValidationError as error:
            return JSONResponse({"detail": json.loads(error.json())}, 422)
        return JSONResponse(self.config.model_dump())

    async def _post_publish(self, request: Request) -> Response:
        """{"api_key", "workflow_id"?} → {"workflow_id": the version published now}."""
        body = json.loads(await request.body() or b"{}")
        try:
            return JSONResponse({"workflow_id": self.publish(body["api_key"], body.get("workflow_id"))})
        except KeyError:
            return JSONResponse({"detail": "no app has this api_key"}, 404)

    async def _post_delete_version(self, request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        try:
            self.delete_version(body["api_key"], body["workflow_id"])
        except (KeyError, ValueError) as error:
            return JSONResponse({"detail": str(error)}, 404)
        return JSONResponse({"deleted": body["workflow_id"]})

    async def _post_reset(self, _: Request) -> Response:
        self.reset()
        return JSONResponse(self.stats())

    # ---- request plumbing ----------------------------------------------------------------------------

    def _dify_route(self, path: str, handler: Callable[[Request, dict], Awaitable[Response]], method: str) -> Route:
        """A Dify endpoint whose requests are recorded and counted, and whose DifyErrors become answers."""

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            record = {"time": time.time(), "method": method, "path": request.url.path, "body": body,
                      "status": None, "answered_at": None, "fault": None, "workflow_run_id": None}
            with self._lock:
                self._records.append(record)
                self._by_path[path] += 1
            streamed = False
            try:
                await self._check_out_database_connection()
            except DifyError as error:
                self._close_record(record, error.status)
                return error.response()
            try:
                response = await handler(request, record)
                if isinstance(response, StreamingResponse):  # the request keeps its connection while it streams
                    response.body_iterator, streamed = self._returning_connection(response.body_iterator), True
            except DifyError as error:
                response = error.response()
            finally:
                if not streamed:
                    self._return_database_connection()
            if record["answered_at"] is None:
                self._close_record(record, response.status_code)
            return response

        return Route(path, endpoint, methods=[method])

    async def _check_out_database_connection(self) -> None:
        """Take a connection from the emulated database pool, waiting up to its timeout, else a 500."""
        deadline = time.monotonic() + self._config.database_pool_timeout
        while True:
            with self._lock:
                size = self._config.database_pool_size
                if size is None or self._database_in_use < size:
                    self._database_in_use += 1
                    return
                if time.monotonic() >= deadline:
                    self._rejected_database += 1
                    raise DifyError(500, "unknown", "Internal Server Error")
            await asyncio.sleep(0.01)

    def _return_database_connection(self) -> None:
        with self._lock:
            self._database_in_use -= 1

    async def _returning_connection(self, frames: AsyncIterator) -> AsyncIterator:
        try:
            async for frame in frames:
                yield frame
        finally:
            self._return_database_connection()

    def _close_record(self, record: dict, status: int | None) -> None:
        """Note the answer to a request; None means the connection was cut without one."""
        with self._lock:
            record["status"], record["answered_at"] = status, time.time()
            self._by_status["dropped" if status is None else str(status)] += 1

    async def _not_found(self, request: Request, _: HTTPException) -> Response:
        return DifyError(404, "not_found", "The requested URL was not found on the server. If you entered the URL "
                                           "manually please check your spelling and try again.").response()

    async def _method_not_allowed(self, request: Request, _: HTTPException) -> Response:
        return DifyError(405, "method_not_allowed", "The method is not allowed for the requested URL.").response()

    def _authenticate(self, request: Request) -> DifyApp:
        try:
            return self._app_of_key(request)
        except DifyError as error:  # Dify's handler adds the challenge to every 401
            error.headers["WWW-Authenticate"] = 'Bearer realm="api"'
            raise

    def _app_of_key(self, request: Request) -> DifyApp:
        header = request.headers.get("Authorization")
        if header is None or " " not in header.strip():
            raise DifyError(401, "unauthorized", "Authorization header must be provided and start with 'Bearer'")
        scheme, token = header.strip().split(None, 1)
        if scheme.lower() != "bearer":
            raise DifyError(401, "unauthorized", "Authorization scheme must be 'Bearer'")
        app = next((app for app in self._config.apps if app.api_key == token.strip()), None)
        if app is None:
            raise DifyError(401, "unauthorized", "Access token is invalid")
        return app

    # ---- runs ----------------------------------------------------------------------------------------

    async def _workflow_run(self, request: Request, record: dict) -> Response:
        return await self._run_request(request, record, "workflow")

    async def _workflow_version_run(self, request: Request, record: dict) -> Response:
        return await self._run_request(request, record, "workflow", request.path_params["workflow_id"])

    async def _completion_message(self, request: Request, record: dict) -> Response:
        return await self._run_request(request, record, "completion")

    async def _chat_message(self, request: Request, record: dict) -> Response:
        return await self._run_request(request, record, "chat")

    async def _run_request(self, request: Request, record: dict, endpoint_mode: str,
                           workflow_id: str | None = None) -> Response:
        """Dify's order: key, `user`, app mode, concurrency and rate limits, the asked workflow version, inputs;
        then faults, then the run."""
        app = self._authenticate(request)
        try:
            payload = json.loads(await request.body())
        except ValueError as error:
            raise DifyError(400, "invalid_param", f"Failed to decode JSON object: {error}") from None
        if not isinstance(payload, dict):
            raise DifyError(400, "invalid_param", "Request body must be a JSON object.")
        user = payload.get("user")
        if not user:
            raise DifyError(400, "invalid_param", "Arg user must be provided.")
        with self._lock:  # Dify creates the end user while checking the key, before anything else can fail
            self._end_users.add(str(user))
        if endpoint_mode == "chat":
            if app.mode not in CHAT_MODES:
                raise DifyError(400, "not_chat_app", "Please check if your app mode matches the right API route.")
        elif app.mode != endpoint_mode:
            if endpoint_mode == "workflow":
                raise DifyError(400, "not_workflow_app", "Please check if your app mode matches the right API route.")
            raise DifyError(400, "app_unavailable", "App unavailable, please check your app configurations.")
        query = None
        if endpoint_mode == "chat":
            try:
                chat = ChatRequestPayload.model_validate(payload)
            except ValidationError as error:  # a pydantic error is a ValueError: Dify answers it as invalid_param
                raise DifyError(400, "invalid_param", str(error)) from None
            query = chat.query
            if app.mode == "advanced-chat" and workflow_id is None:  # a chatflow runs a version named in the body
                workflow_id = chat.workflow_id
        raw_inputs = payload.get("inputs") or {}
        if not isinstance(raw_inputs, dict):
            raise DifyError(400, "invalid_param", "inputs must be a JSON object.")
        streaming = payload.get("response_mode") == "streaming"  # anything else is blocking, as in Dify
        self._check_limits(app)
        if workflow_id is not None:
            if not _is_uuid(workflow_id):
                raise DifyError(400, "bad_request", f"Invalid workflow_id format: '{workflow_id}'. ")
            if workflow_id not in (app.workflow_id, *app.published_workflow_ids):
                raise DifyError(404, "not_found", f"Workflow not found with id: {workflow_id}")
        if app.mode == "agent-chat" and not streaming:
            raise DifyError(400, "invalid_param", "Agent Chat App does not support blocking mode")
        if endpoint_mode == "chat" and not query:
            raise DifyError(400, "invalid_param", "query is required")
        inputs = validate_inputs(app.user_input_form, raw_inputs)
        fault = self._pick_fault(raw_inputs if query is None else {**raw_inputs, "query": query}, streaming)
        record["fault"] = fault.kind if fault else None
        if fault and fault.kind in PRE_RUN_FAULTS:
            return await self._answer_fault(request, record, fault, streaming)
        run = self._start_run(app, inputs, str(user), fault, workflow_id, query)
        record["workflow_run_id"] = run.id
        request.scope[_EXCHANGE]["run"] = run
        frames, blocking = {"workflow": (self._workflow_frames, self._workflow_blocking),
                            "completion": (self._completion_frames, self._completion_blocking),
                            "chat": (self._chat_frames, self._chat_blocking)}[endpoint_mode]
        return _event_stream(frames(run, request)) if streaming else await blocking(run)

    def _check_limits(self, app: DifyApp) -> None:
        """Refuse at once, before any stream starts, when the app or the gateway is saturated."""
        with self._lock:
            limit = app.max_active_requests
            if limit is not None and self._active_by_app[app.app_id] >= limit:
                self._rejected_concurrency += 1
                message = ("Too many requests. Please try again later. The current maximum concurrent requests "
                           f"allowed for {app.app_id} is {limit}.")
                if self._config.concurrency_limit_status == 429:
                    raise DifyError(429, "too_many_requests", message)
                raise DifyError(400, "invalid_param", message)  # what real Dify answers, without Retry-After
            per_minute, now = self._config.rate_limit_per_minute, time.monotonic()
            while self._rate_window and now - self._rate_window[0] >= 60.0:
                self._rate_window.popleft()
            if per_minute is not None and len(self._rate_window) >= per_minute:
                self._rejected_rate_limit += 1
                raise DifyError(429, "too_many_requests", "Too many requests. Please try again later.",
                                _retry_after(self._config.rate_limit_retry_after))

    def _pick_fault(self, inputs: dict, streaming: bool) -> Fault | None:
        values = [str(value) for value in inputs.values()]
        input_key = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str)
        with self._lock:
            for index, fault in enumerate(self._config.faults):
                if fault.kind == "drop_mid_stream" and not streaming:
                    continue
                if fault.match is not None and not any(fault.match in value for value in values):
                    continue
                self._fault_matches[index] += 1
                if fault.first_n is not None and self._fault_matches[index] > fault.first_n:
                    continue
                if fault.times_per_input is not None:
                    self._fault_attempts[index][input_key] += 1
                    if self._fault_attempts[index][input_key] > fault.times_per_input:
                        continue
                if self._fault_rng.random() >= fault.probability:
                    continue
                self._faults_injected[fault.kind] += 1
                return fault
        return None

    async def _answer_fault(self, request: Request, record: dict, fault: Fault, streaming: bool) -> Response:
        """What a gateway, the network or the model provider answers instead of a run."""
        match fault.kind:
            case "http_429":
                raise DifyError(429, "too_many_requests", "Too many requests. Please try again later.",
                                _retry_after(fault.retry_after))
            case "http_500":
                raise DifyError(500, "internal_server_error", "Internal Server Error.")
            case "http_503":
                raise DifyError(503, "service_unavailable", "Service Unavailable", _retry_after(fault.retry_after))
            case "unauthorized":
                raise DifyError(401, "unauthorized", "Access token is invalid")
            case "quota_exceeded":
                error = DifyError(400, "provider_quota_exceeded", QUOTA_MESSAGE)
                if not streaming:
                    raise error
                frames = [_sse(error.event(task_id=str(uuid.uuid4())))]  # the model fails inside the stream
                return _event_stream(_iterate(frames))
            case "http_502_html" | "http_504_html":
                status = 502 if fault.kind == "http_502_html" else 504
                return Response(GATEWAY_PAGES[status], status, media_type="text/html")
            case "timeout":
                await _hold(request, fault.hang_seconds)
                return Response(GATEWAY_PAGES[504], 504, media_type="text/html")
            case _:  # drop
                self._close_record(record, None)
                await _cut_connection(request)
                return Response(status_code=204)  # never sent: the connection is gone

    def _start_run(self, app: DifyApp, inputs: dict, user: str, fault: Fault | None,
                   workflow_id: str | None = None, query: str | None = None) -> _Run:
        with self._lock:
            median = self._config.latency_ms / 1000.0
            latency = median * math.exp(self._config.latency_sigma * self._latency_rng.gauss(0.0, 1.0))
            run = _Run(app=app.model_copy(), inputs=inputs, user=user, fault=fault.kind if fault else None,
                       latency=latency, fault_error=fault.error if fault else None, workflow_id=workflow_id or "",
                       query=query)
            self._runs[run.id] = run
            self._paid_runs += 1
            self._runs_by_input[_compact(dict(sorted(inputs.items())))] += 1
            self._runs_by_workflow[run.workflow_id if app.mode in ("workflow", "advanced-chat") else ""] += 1
            self._run_arrivals.append(run.started)
            self._rate_window.append(run.started)
            self._active_by_app[app.app_id] += 1
            self._max_active = max(self._max_active, sum(self._active_by_app.values()))
        run.task = asyncio.create_task(self._execute(run))
        self._tasks.add(run.task)
        run.task.add_done_callback(self._tasks.discard)
        return run

    async def _execute(self, run: _Run) -> None:
        """The run works for its latency, then settles; it goes on even when its client has gone."""
        try:
            await asyncio.sleep(run.latency)
        finally:
            answer = faulty_answer(run.answer_inputs, run.fault, run.app.answers)
            with self._lock:
                run.answer = answer if isinstance(answer, str) else answer_json(answer)
                run.usage = usage_for(app_text(run.app.answers, run.answer_inputs), run.answer, round(run.latency, 6))
                run.elapsed_time = round(time.monotonic() - run.started, 6)
                self._settled_runs += 1
                self._run_seconds += run.elapsed_time
                self._settled_since_freeze += 1
                if self.freeze_every and self._settled_since_freeze >= self.freeze_every:
                    gc.freeze()
                    self._settled_since_freeze = 0
                run.finished_at = _unix_now()
                if run.fault in FAILED_RUN_ERRORS:
                    run.status, run.error = "failed", run.fault_error or FAILED_RUN_ERRORS[run.fault]
                    self._failed_runs += 1
                elif run.app.mode in CHAT_MODES:
                    run.status, run.outputs = "succeeded", {"answer": run.answer}
                else:
                    run.status, run.outputs = "succeeded", workflow_outputs(answer, run.app.output_style)
                self._active_by_app[run.app.app_id] -= 1

    async def _until_finished(self, run: _Run) -> AsyncIterator[str]:
        """Ping frames every ping_interval until the run ends."""
        assert run.task is not None
        while not run.task.done():
            done, _ = await asyncio.wait({run.task}, timeout=self._config.ping_interval)
            if not done:
                yield PING_FRAME

    # ---- workflow answers ----------------------------------------------------------------------------

    async def _workflow_blocking(self, run: _Run) -> Response:
        await asyncio.shield(run.task)  # a client that hangs up does not cancel the run
        payload = {"task_id": run.task_id, "workflow_run_id": run.id, "data": run.finished_data()}
        body = json.dumps(payload, ensure_ascii=False)
        return _json_response(body[: len(body) // 2] if run.fault == "malformed_json" else body)

    async def _workflow_frames(self, run: _Run, request: Request) -> AsyncIterator[str]:
        yield _sse({"event": "workflow_started", **run.ids, "data": {
            "id": run.id, "workflow_id": run.workflow_id, "inputs": run.variable_pool,
            "created_at": run.created_at, "reason": "initial"}})
        if run.fault == "drop_mid_stream":
            await _cut_connection(request)
            return
        pool = {**run.variable_pool, "sys.timestamp": run.created_at}
        yield self._node_started(run, "start")
        yield self._node_finished(run, "start", pool, pool)
        yield self._node_started(run, "llm")
        async for ping in self._until_finished(run):
            yield ping
        yield self._node_finished(run, "llm", {}, {"text": run.answer})
        if run.status == "succeeded":
            yield self._node_started(run, "end")
            yield self._node_finished(run, "end", run.outputs, run.outputs)
        end_user = {"id": str(uuid.uuid5(uuid.NAMESPACE_OID, run.user)), "user": run.user}
        finished = {"event": "workflow_finished", **run.ids, "data": {
            **run.finished_data(), "created_by": end_user, "exceptions_count": 0, "files": []}}
        yield _truncated_sse(finished) if run.fault == "malformed_json" else _sse(finished)
        await asyncio.sleep(STREAM_END_GAP)

    @staticmethod
    def _node(run: _Run, node_id: str) -> dict:
        node_type, title = WORKFLOW_NODES[node_id]
        return {"id": str(uuid.uuid5(uuid.UUID(run.id), node_id)), "node_id": node_id, "node_type": node_type,
                "title": title, "index": 1, "predecessor_node_id": None, "iteration_id": None, "loop_id": None}

    def _node_started(self, run: _Run, node_id: str, **ids: Any) -> str:
        """node_started; a chatflow's events also carry its conversation and message (`ids`)."""
        data = {**self._node(run, node_id), "inputs": None, "inputs_truncated": False,
                "created_at": run.created_at, "extras": {}, "agent_strategy": None}
        return _sse({"event": "node_started", **ids, **run.ids, "data": data})

    def _node_finished(self, run: _Run, node_id: str, inputs: dict, outputs: dict) -> str:
        """node_finished as in the captured stream; the LLM node carries the failure and the token cost."""
        failed, is_llm = run.status == "failed" and node_id == "llm", node_id == "llm"
        data = {**self._node(run, node_id), "inputs": inputs, "inputs_truncated": False, "process_data": {},
                "process_data_truncated": False, "outputs": None if failed else outputs, "outputs_truncated": False,
                "status": "failed" if failed else "succeeded", "error": run.error if failed else None,
                "elapsed_time": run.elapsed_time if is_llm else 0.001,
                "execution_metadata": {"total_tokens": run.usage.get("total_tokens"), "total_price":
                                       run.usage.get("total_price"), "currency": "USD"} if is_llm else None,
                "created_at": run.created_at, "finished_at": run.finished_at or run.created_at, "files": []}
        return _sse({"event": "node_finished", **run.ids, "data": data})

    async def _workflow_run_detail(self, request: Request, record: dict) -> Response:
        app = self._authenticate(request)
        if app.mode != "workflow":
            raise DifyError(400, "not_workflow_app", "Please check if your app mode matches the right API route.")
        run_id = request.path_params["workflow_run_id"]
        if not _is_uuid(run_id):  # PostgreSQL refuses to compare a uuid column with it
            raise DifyError(500, "unknown", "Internal Server Error")
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.app.app_id != app.app_id:  # Dify marshals the missing row: every field null
                detail = dict.fromkeys(("id", "workflow_id", "status", "inputs", "outputs", "error", "total_steps",
                                        "total_tokens", "created_at", "finished_at", "elapsed_time"))
            else:  # as stored: inputs and outputs are JSON text with non-ASCII \u-escaped, null when empty
                detail = {"id": run.id, "workflow_id": run.workflow_id, "status": run.status,
                          "inputs": json.dumps(run.variable_pool), "outputs": json.dumps(run.outputs) if run.outputs
                          else None, "error": run.error, "total_steps": run.total_steps,
                          "total_tokens": run.usage.get("total_tokens", 0), "created_at": run.created_at,
                          "finished_at": run.finished_at, "elapsed_time": run.elapsed_time}
        return _json_response(json.dumps(detail, ensure_ascii=False))

    async def _workflow_logs(self, request: Request, record: dict) -> Response:
        """GET /workflows/logs as Dify 1.11.4's WorkflowAppService: the app's log rows, newest first.

        A run has its row from its start (written when its workflow_started event is handled), so a running
        run is listed with status "running"; the `status` filter only takes succeeded, failed or stopped.
        """
        app = self._authenticate(request)
        try:
            query = WorkflowLogQuery.model_validate(dict(request.query_params))
            before = _parse_iso(query.created_at__before)
            after = _parse_iso(query.created_at__after)
        except ValueError as error:  # pydantic's ValidationError too: Dify answers every ValueError this way
            raise DifyError(400, "invalid_param", str(error)) from None
        with self._lock:
            runs = [run for run in self._runs.values() if run.app.app_id == app.app_id and run.app.mode == "workflow"]
            runs = [run for run in runs if _log_matches(run, query, before, after)]
            runs.sort(key=lambda run: run.logged_at, reverse=True)
            page = runs[(query.page - 1) * query.limit: query.page * query.limit]
            items = [_log_item(run) for run in page]
        body = {"page": query.page, "limit": query.limit, "total": len(runs),
                "has_more": len(runs) > query.page * query.limit, "data": items}
        return _json_response(json.dumps(body, ensure_ascii=False))

    # ---- completion answers --------------------------------------------------------------------------

    async def _completion_blocking(self, run: _Run) -> Response:
        await asyncio.shield(run.task)
        if run.status == "failed":
            raise DifyError(400, "completion_request_error", run.error or "Completion request failed.")
        body = json.dumps({"event": "message", "task_id": run.task_id, "id": run.message_id,
                           "message_id": run.message_id, "mode": "completion", "answer": run.answer,
                           "metadata": {"usage": run.usage}, "created_at": run.created_at}, ensure_ascii=False)
        return _json_response(body[: len(body) // 2] if run.fault == "malformed_json" else body)

    async def _completion_frames(self, run: _Run, request: Request) -> AsyncIterator[str]:
        ids = {"task_id": run.task_id, "message_id": run.message_id, "created_at": run.created_at}
        async for ping in self._until_finished(run):
            yield ping
        if run.status == "failed":
            yield _sse(DifyError(400, "completion_request_error", run.error or "").event(**ids))
            return
        step = max(1, math.ceil(len(run.answer) / 4))
        for index, start in enumerate(range(0, len(run.answer), step)):
            yield _sse({"event": "message", **ids, "id": run.message_id, "answer": run.answer[start:start + step]})
            if index == 0 and run.fault == "drop_mid_stream":
                await _cut_connection(request)
                return
        end = {"event": "message_end", **ids, "id": run.message_id, "metadata": {"usage": run.usage}}
        yield _truncated_sse(end) if run.fault == "malformed_json" else _sse(end)
        await asyncio.sleep(STREAM_END_GAP)

    # ---- chat answers --------------------------------------------------------------------------------

    @staticmethod
    def _chat_failure(run: _Run) -> DifyError:
        """A chatflow's failed run is Dify's ValueError "Run failed: ..."; a chatbot's, its model's error."""
        if run.app.mode == "advanced-chat":
            return DifyError(400, "invalid_param", f"Run failed: {run.error}")
        return DifyError(400, "completion_request_error", run.error or "Completion request failed.")

    async def _chat_blocking(self, run: _Run) -> Response:
        await asyncio.shield(run.task)
        if run.status == "failed":
            raise self._chat_failure(run)
        body = json.dumps({"event": "message", "task_id": run.task_id, "id": run.message_id,
                           "message_id": run.message_id, "conversation_id": run.conversation_id,
                           "mode": run.app.mode, "answer": run.answer,
                           "metadata": {"annotation_reply": None, "retriever_resources": [], "usage": run.usage},
                           "created_at": run.created_at}, ensure_ascii=False)
        return _json_response(body[: len(body) // 2] if run.fault == "malformed_json" else body)

    async def _chat_frames(self, run: _Run, request: Request) -> AsyncIterator[str]:
        """A chatbot streams `message` chunks; an agent `agent_thought` and `agent_message`; a chatflow wraps its
        chunks in workflow events, workflow_finished before message_end (or, failed, before an error event)."""
        ids = {"conversation_id": run.conversation_id, "message_id": run.message_id, "created_at": run.created_at,
               "task_id": run.task_id}
        chatflow, agent = run.app.mode == "advanced-chat", run.app.mode == "agent-chat"
        if chatflow:
            yield _sse({"event": "workflow_started", **ids, "workflow_run_id": run.id, "data": {
                "id": run.id, "workflow_id": run.workflow_id, "inputs": run.variable_pool,
                "created_at": run.created_at, "reason": "initial"}})
            yield self._node_started(run, "start", **ids)
        if agent:
            thought = {"event": "agent_thought", **ids, "id": str(uuid.uuid5(uuid.UUID(run.id), "thought")),
                       "position": 1, "thought": "", "observation": "", "tool": "", "tool_input": "",
                       "message_files": []}
            yield _sse(thought)
        async for ping in self._until_finished(run):
            yield ping
        if run.status == "failed":
            if chatflow:
                yield _sse({"event": "workflow_finished", **ids, "workflow_run_id": run.id,
                            "data": {**run.finished_data(), "outputs": None, "exceptions_count": 0, "files": []}})
            yield _sse(self._chat_failure(run).event(**ids))
            return
        step = max(1, math.ceil(len(run.answer) / 4))
        for index, start in enumerate(range(0, len(run.answer), step)):
            kind = "agent_message" if agent else "message"
            yield _sse({"event": kind, **ids, "id": run.message_id, "answer": run.answer[start:start + step]})
            if index == 0 and run.fault == "drop_mid_stream":
                await _cut_connection(request)
                return
        if agent:
            yield _sse({**thought, "thought": run.answer})
        if chatflow:
            yield _sse({"event": "workflow_finished", **ids, "workflow_run_id": run.id,
                        "data": {**run.finished_data(), "exceptions_count": 0, "files": []}})
        end = {"event": "message_end", **ids, "id": run.message_id, "files": [],
               "metadata": {"annotation_reply": None, "retriever_resources": [], "usage": run.usage}}
        yield _truncated_sse(end) if run.fault == "malformed_json" else _sse(end)
        await asyncio.sleep(STREAM_END_GAP)

    # ---- app description -----------------------------------------------------------------------------

    async def _parameters(self, request: Request, record: dict) -> Response:
        app = self._authenticate(request)
        disabled = {"enabled": False}
        return _json_response(json.dumps({
            "opening_statement": "", "suggested_questions": [], "suggested_questions_after_answer": disabled,
            "speech_to_text": disabled, "text_to_speech": {"enabled": False, "voice": "", "language": "",
                                                           "autoPlay": "disabled"},
            "retriever_resource": disabled, "annotation_reply": disabled, "more_like_this": disabled,
            "user_input_form": app.user_input_form, "sensitive_word_avoidance": disabled,
            "file_upload": {"image": {"enabled": False, "number_limits": 3, "detail": "high",
                                      "transfer_methods": ["remote_url", "local_file"]}},
            "system_parameters": {"file_size_limit": 15, "image_file_size_limit": 10, "audio_file_size_limit": 50,
                                  "video_file_size_limit": 100, "workflow_file_upload_limit": 10},
        }, ensure_ascii=False))

    async def _info(self, request: Request, record: dict) -> Response:
        app = self._authenticate(request)
        return _json_response(json.dumps({"name": app.name, "description": "", "tags": [], "mode": app.mode,
                                          "author_name": "dify_pipeline emulator"}, ensure_ascii=False))


async def _iterate(frames: list[str]) -> AsyncIterator[str]:
    for frame in frames:
        yield frame


def main(argv: list[str] | None = None) -> None:
    """`python -m dify_pipeline_dev.emulators.dify [--host H] [--port P] [--config JSON]`.

    Prints `DIFY_EMULATOR_URL=http://H:P/v1` once the server accepts connections, then serves until killed.
    """
    parser = argparse.ArgumentParser(prog="python -m dify_pipeline_dev.emulators.dify", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", default=None, help="a DifyEmulatorConfig as JSON")
    args = parser.parse_args(argv)
    check_loopback(args.host)
    config = DifyEmulatorConfig.model_validate_json(args.config) if args.config else DifyEmulatorConfig()
    # serve_in_thread reports the port it bound, so port 0 needs no guess and the URL is printed only when live.
    emulator = DifyEmulator(config)
    emulator.freeze_every = 5_000  # alone in its process: the freeze touches no one else's heap
    running = serve_in_thread(emulator.app, args.host, args.port)
    print(f"DIFY_EMULATOR_URL={running.url}/v1", flush=True)
    try:
        while running.thread.is_alive():
            running.thread.join(0.5)
    except KeyboardInterrupt:
        running.stop()


if __name__ == "__main__":
    main()
