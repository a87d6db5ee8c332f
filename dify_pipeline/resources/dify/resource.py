"""The Dify client resource: one configured HTTP client, admission control and bounded retries.

aiohttp rather than httpx here: at the same rate its connection pool costs a fraction of httpx's CPU
(benchmarks/inference_throughput.py), and the client's CPU is what stands between us and the server's rate.

Assets hand it (record_key, inputs) pairs and get one `DifyResult` per record back through a callback,
so results can be persisted the moment they exist. Only a fatal error (bad key, app gone, quota) stops
the run; every other failure becomes a result with its error code.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import random
import ssl
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
import dagster as dg
from pydantic import Field, PrivateAttr

from dify_pipeline.heap import frozen_heap
from dify_pipeline.resources.dify.backoff import Backoff
from dify_pipeline.resources.dify.errors import DifyCallError, FailureBreaker, classify_failed_run, classify_http_error
from dify_pipeline.resources.dify.gate import RequestGate
from dify_pipeline.resources.dify.protocol import (
    AnswerStream,
    AppMode,
    DifyRequest,
    DifyResult,
    ResponseMode,
    blocking_result,
    endpoint,
    json_or_error,
    payload,
    sse_events,
    workflow_result,
)
from dify_pipeline.resources.run_journal import RunJournal

THROTTLED_ATTEMPTS_FACTOR = 4
# How long a run that may exist is looked for before the record is sent again. A request that timed out may
# still wait unaccepted in the server's backlog: at least 5 s, or twice as long as it waited. Any other unknown
# outcome (cut body, dropped connection, gateway 502/504) was read by the server, so its run, if any, is
# listed within moments.
LOOKUP_PATIENCE_SECONDS = 5.0
LOOKUP_PATIENCE_AFTER_AN_ANSWER = 1.5
SUSTAINED_TROUBLE = 5  # answers in a row that are 429/5xx/timeouts: the server is in trouble, pause everyone


class _ShortLivedConnector(aiohttp.TCPConnector):
    """A pool whose connections carry new requests for `reuse_seconds` after they were opened, then close at their
    next release. aiohttp knows an idle timeout but no maximum age, hence its two hooks overridden here."""

    def __init__(self, reuse_seconds: float, **kwargs) -> None:
        # Idle no longer than the window either, and well inside gunicorn's 2 s keep-alive: a connection taken
        # from the pool is not one the server is closing at that moment.
        super().__init__(keepalive_timeout=min(reuse_seconds, 1.0), **kwargs)
        self._reuse_seconds = reuse_seconds
        self._opened: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def _create_connection(self, req, traces, timeout):
        protocol = await super()._create_connection(req, traces, timeout)
        self._opened[protocol] = time.monotonic()
        return protocol

    def _release(self, key, protocol, *, should_close: bool = False) -> None:
        opened = self._opened.get(protocol)
        if opened is None or time.monotonic() - opened >= self._reuse_seconds:
            should_close = True
        super()._release(key, protocol, should_close=should_close)


class DifyFatalError(RuntimeError):
    """No record can succeed (bad key, wrong app, quota, a pinned version gone): the run stops instead of failing
    every row. `code` is Dify's error code when Dify refused (e.g. `workflow_version_unavailable`), else None."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Counters:
    http_attempts: int = 0
    retries: int = 0
    throttled: int = 0
    recovered_runs: int = 0
    resumed_runs: int = 0
    failed_runs: int = 0  # runs that ended `status: failed`: executed, so paid for, with nothing to show
    lookups: int = 0  # GET /workflows/logs and /workflows/run/{id} calls made to find a run again
    fatal: DifyCallError | None = None
    stop_reason: str | None = None  # why the day stopped early (breaker, outage), for DifyFatalError
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    consecutive_trouble: int = 0  # 429/5xx/timeouts in a row, with no other answer in between
    trouble_since: float | None = None  # when the server began answering nothing but 429/5xx/timeouts
    last_trouble: DifyCallError | None = None
    finished: collections.deque = field(default_factory=collections.deque)  # when records became final
    breaker: FailureBreaker = field(default_factory=FailureBreaker)
    workflow_id: str | None = None  # the published version every request of this batch runs, when pinned

    def halt(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.stop.set()


class DifyResource(dg.ConfigurableResource):
    """A Dify app reached through its Service API key."""

    base_url: str = Field(description="Service API base URL, e.g. https://api.dify.ai/v1.")
    api_key: str = Field(description="The app's API key (from the DIFY_API_KEY environment variable).")
    app_mode: AppMode = Field(default="workflow", description=(
        "workflow: POST /workflows/run; completion: /completion-messages; chat (chatflow, chatbot and agent "
        "apps): /chat-messages, each record a conversation of its own."))
    response_mode: ResponseMode = "blocking"
    user: str = Field(default="dify-pipeline", description=(
        "Prefix of the Dify end user sent with each run: `<user>:<record>` for workflow apps, so a run can be "
        "found again; completion and chat apps send it as is."))
    max_concurrency: int = Field(default=16, ge=1, le=1000)
    requests_per_minute: int | None = Field(default=None, ge=1, description="Pace of new runs; unlimited when unset.")
    adaptive_concurrency: bool = Field(default=True, description="Lower concurrency when the server throttles.")
    max_attempts: int = Field(default=5, ge=1)
    backoff_initial_seconds: float = Field(default=1.0, ge=0)
    backoff_max_seconds: float = Field(default=60.0, ge=0)
    request_timeout_seconds: float = Field(default=120.0, gt=0, description="Blocking calls; Dify Cloud cuts at 100 s.")
    stream_idle_timeout_seconds: float = Field(default=45.0, gt=0, description="Streams ping every 10 s.")
    max_outage_seconds: float = Field(
        default=300.0, gt=0, description="Nothing but 429/5xx/timeouts for longer than this ends the step.")
    keep_alive: bool = Field(default=False, description=(
        "Reuse connections without limit. Off by default: Dify's gevent worker serves a fixed number of "
        "connections and leaves the rest unaccepted, so connections reused for ever starve the waiting ones."))
    connection_reuse_seconds: float = Field(default=1.0, ge=0, description=(
        "Without keep_alive, a connection carries new runs only this long after its first one, then closes at its "
        "next answer: a slow server gets a connection per run (the waiting ones get their turn at every answer), "
        "a fast one is not paid a connection per run. 0: a connection per run."))
    verify_tls: bool = True
    ca_file: str | None = Field(default=None, description="CA bundle for a private certificate authority.")

    _rng: random.Random = PrivateAttr(default_factory=random.Random)

    def _policy(self) -> Backoff:
        return Backoff(self.backoff_initial_seconds, self.backoff_max_seconds, self._rng)

    # -- identity -------------------------------------------------------------------------------------
    def app_identity(self) -> str:
        """A stable, non-secret name for the app: a digest of base URL and key (never the key itself)."""
        digest = hashlib.sha256(f"{self.base_url.rstrip('/')}\n{self.api_key}".encode()).hexdigest()
        return f"{self.app_mode}:{digest[:16]}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "User-Agent": "dify-pipeline"}

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.ca_file:
            return ssl.create_default_context(cafile=self.ca_file)
        return True if self.verify_tls else False

    def _session(self, limit: int, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
        if self.keep_alive:
            connector = aiohttp.TCPConnector(limit=limit, ssl=self._ssl())
        elif self.connection_reuse_seconds > 0:
            connector = _ShortLivedConnector(self.connection_reuse_seconds, limit=limit, ssl=self._ssl())
        else:
            connector = aiohttp.TCPConnector(limit=limit, ssl=self._ssl(), force_close=True)
        return aiohttp.ClientSession(headers=self._headers(), timeout=timeout, connector=connector)

    def _url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    # -- app metadata ---------------------------------------------------------------------------------
    def fetch_parameters(self) -> dict:
        """GET /parameters: the app's input form (variables, required, max_length, options)."""
        return _run(self._fetch_parameters())

    async def _fetch_parameters(self) -> dict:
        async with self._session(1, aiohttp.ClientTimeout(total=30)) as session:
            try:
                async with session.get(self._url("/parameters")) as response:
                    text = await response.text()
                    if response.status != 200:
                        error = classify_http_error(response.status, text, response.headers.get("Retry-After"))
                        raise DifyFatalError(f"GET /parameters failed: {error}")
            except aiohttp.ClientConnectorCertificateError:
                raise DifyFatalError(
                    f"the TLS certificate of {self.base_url} could not be verified: if it comes from a private "
                    "certificate authority, give its CA bundle in DIFY_CA_FILE"
                ) from None
            except (TimeoutError, aiohttp.ClientError) as error:
                raise DifyFatalError(
                    f"cannot reach Dify at {self.base_url}: {type(error).__name__}. Check DIFY_BASE_URL."
                ) from None
        return json.loads(text)

    # -- the batch ------------------------------------------------------------------------------------
    def run_all(
        self,
        requests: Iterable[DifyRequest],
        on_result: Callable[[DifyResult], None],
        journal: RunJournal | None = None,
        log: Callable[[str], None] | None = None,
        workflow_id: str | None = None,
        pin: Callable[[str], str] | None = None,
    ) -> dict[str, int]:
        """Send every request, calling `on_result` once per record as soon as it is final.

        Returns counters (HTTP attempts, retries, throttled answers, recovered runs). Raises
        DifyFatalError after the in-flight calls settle when the server says no record can succeed, when
        recent answers fail the same way (a broken app), or when the server answered nothing but 429/5xx
        for `max_outage_seconds`. `log` gets a line now and then while the server is in trouble.

        With a `journal`, every attempt is committed there before it is sent, under a `user` that names the
        record; a workflow run whose outcome is unknown (timeout, cut body, broken stream, 502/504) or that an
        interrupted earlier run sent (`DifyRequest.earlier`) is looked up in Dify and its answer used.

        With a `workflow_id` (workflow apps), every request runs that published version
        (POST /workflows/{workflow_id}/run) whatever is published meanwhile; each result names the version that
        answered. A version Dify does not know stops the run (DifyFatalError, code `workflow_version_unavailable`).
        Without one but with `pin`, requests go one at a time to the published version until one is answered;
        `pin(its workflow_id)` records it and returns the version the day is pinned to (another run may have
        pinned first), and the rest run that version. An answer of another version than the pin is asked again.
        Chat apps send each request's `query`; one without it fails alone, unsent (`invalid_input`).

        `requests` is consumed lazily, a few ahead of the calls in flight: a generator keeps the day out of memory.
        """
        if (workflow_id is not None or pin is not None) and self.app_mode != "workflow":
            raise ValueError(f"workflow_id pins a workflow app's version; this is a {self.app_mode} app")
        log = log or dg.get_dagster_logger().info
        with frozen_heap():
            counters = _run(self._run_all(requests, on_result, journal, log, workflow_id, pin))
        if counters.fatal is not None:
            raise DifyFatalError(f"Dify refused the run: {counters.fatal}", code=counters.fatal.code)
        if counters.stop_reason is not None:
            raise DifyFatalError(counters.stop_reason)
        return {
            "http_attempts": counters.http_attempts,
            "retries": counters.retries,
            "throttled": counters.throttled,
            "recovered_runs": counters.recovered_runs,
            "resumed_runs": counters.resumed_runs,
            "lookups": counters.lookups,
            "failed_runs": counters.failed_runs,
        }

    async def _run_all(self, requests, on_result, journal, log, workflow_id, pin) -> _Counters:
        counters = _Counters(workflow_id=workflow_id)

        async def nap(seconds: float) -> None:  # every wait ends early when the day stops
            await _sleep_unless(counters.stop, seconds)

        gate = RequestGate(self.max_concurrency, self.requests_per_minute, adaptive=self.adaptive_concurrency,
                           sleep=nap)
        upcoming = iter(requests)
        put_back: collections.deque[DifyRequest] = collections.deque()  # taken, to be sent again first

        def take() -> DifyRequest | None:  # the next request, None when all are taken
            while True:
                request = put_back.popleft() if put_back else next(upcoming, None)
                if request is None or self.app_mode != "chat" or request.query is not None:
                    return request
                # Found while others are in flight: fail it alone, unsent, rather than stop and lose their answers.
                on_result(DifyResult(request.record_key, False, 0, error_code="invalid_input",
                                     error_message="a chat app needs the record's `query` (the message); none given"))

        timeout = aiohttp.ClientTimeout(total=self.request_timeout_seconds, sock_connect=10.0)
        async with self._session(self.max_concurrency, timeout) as client:

            async def worker() -> None:
                while not counters.stop.is_set():
                    request = take()
                    if request is None:
                        return
                    result = await self._call_with_retries(client, gate, counters, request, journal)
                    await asyncio.sleep(0)  # the worker woken for the freed slot sends first, then this one's answer
                    if result is not None:
                        counters.finished.append(time.monotonic())
                        on_result(result)

            async def until_pinned() -> None:
                """One request at a time to the published version, until an answer names the version to pin."""
                while counters.workflow_id is None and not counters.stop.is_set():
                    request = take()
                    if request is None:
                        return
                    result = await self._call_with_retries(client, gate, counters, request, journal)
                    if result is None:
                        continue
                    if result.workflow_id:
                        counters.workflow_id = await asyncio.to_thread(pin, result.workflow_id)
                        if counters.workflow_id != result.workflow_id:  # another run pinned another version first
                            put_back.append(request)
                            continue
                    counters.finished.append(time.monotonic())
                    on_result(result)

            watch = asyncio.create_task(self._watch_outage(counters, log))
            try:
                if pin is not None:
                    await until_pinned()
                # More workers than slots: a worker sleeping out a backoff or looking a run up must not idle a slot.
                workers = self.max_concurrency * 4  # each ends when no request is left
                await asyncio.gather(*(worker() for _ in range(workers)))
            finally:
                watch.cancel()
        return counters

    async def _watch_outage(self, counters: _Counters, log: Callable[[str], None]) -> None:
        """While the server answers nothing but 429/5xx: a line now and then, and the end after the bound."""
        interval = min(30.0, max(0.05, self.max_outage_seconds / 10))
        next_line = time.monotonic() + min(30.0, self.max_outage_seconds / 3)
        while not counters.stop.is_set():
            await asyncio.sleep(interval)
            now = time.monotonic()
            while counters.finished and counters.finished[0] < now - 60:
                counters.finished.popleft()
            if counters.trouble_since is None:
                next_line = now + min(30.0, self.max_outage_seconds / 3)
                continue
            troubled = now - counters.trouble_since
            if troubled > self.max_outage_seconds:
                counters.halt(
                    f"Dify answered nothing but throttling, server errors or timeouts for {troubled:.0f} s "
                    f"(last: {counters.last_trouble}), longer than DIFY_MAX_OUTAGE_SECONDS="
                    f"{self.max_outage_seconds:g}; the day stopped. Check the server, then materialize the day again")
            elif now >= next_line:
                log(f"Dify throttled or failing for {troubled:.0f} s (last: {counters.last_trouble.code}), "
                    f"{len(counters.finished)} done in the last minute; the step ends after "
                    f"{self.max_outage_seconds:g} s of this (DIFY_MAX_OUTAGE_SECONDS)")
                next_line = now + min(30.0, self.max_outage_seconds / 3)

    async def _call_with_retries(self, client, gate, counters, request, journal) -> DifyResult | None:
        if request.earlier is not None and self.app_mode == "workflow":
            found = await self._find_run(client, counters, request, request.earlier.run_id, LOOKUP_PATIENCE_SECONDS)
            if isinstance(found, DifyResult):  # answered before the crash: nothing to send
                counters.resumed_runs += 1
                found.attempts, found.recovered = 0, True
                return found
            # no run, or one that failed: this materialization retries it as any failed record
        attempts = throttled = 0
        while True:
            if counters.stop.is_set():
                return None  # left for the next materialization
            attempts += 1
            if journal is not None:  # written down before it leaves (a crash right after still finds it), and
                await journal.sending(request.record_key, self._user(request))  # before taking a slot: no idle slot
            await gate.acquire()
            if counters.stop.is_set():  # stopped while we waited for a slot or a pause: send nothing more
                await gate.release()
                return None
            error: DifyCallError | None = None
            started = time.perf_counter()  # latency of this attempt: the server's time, not our queueing
            try:
                counters.http_attempts += 1
                result = await self._call_once(client, request, counters, journal)
            except DifyCallError as call_error:
                error = call_error
            except BaseException:
                await gate.release()
                raise
            unknown = error is not None and error.outcome_unknown
            # A timeout says we asked for more than the server serves: lower the limit as a throttle would.
            slow = error is not None and (error.throttled or error.code == "timeout")
            if not slow:  # only a timed-out request may still hold a place on the server: keep its slot
                await gate.release(throttled=False, succeeded=error is None)
            try:
                if unknown and self.app_mode == "workflow":
                    # The run may exist (finished, running, or waiting in the server's backlog): find it.
                    patience = (max(LOOKUP_PATIENCE_SECONDS, 2 * (time.perf_counter() - started)) if slow
                                else LOOKUP_PATIENCE_AFTER_AN_ANSWER)
                    found = await self._find_run(client, counters, request, error.run_id, patience)
                    if isinstance(found, DifyResult):
                        counters.recovered_runs += 1
                        result, error = found, None
                        result.recovered = True
                    elif isinstance(found, DifyCallError):
                        error = found  # it ran and failed: a paid attempt, judged as such
            finally:
                if slow:
                    await gate.release(throttled=True)
            if error is None or not error.server_trouble:  # the server answered about the record itself
                counters.consecutive_trouble, counters.trouble_since = 0, None
            if error is None:
                counters.breaker.record(request.record_key, None)
                result.attempts = attempts
                result.latency_ms = round((time.perf_counter() - started) * 1000, 1)
                return result
            if error.code.startswith("run_"):
                counters.failed_runs += 1
            if error.fatal:
                counters.fatal = counters.fatal or error
                counters.stop.set()
                return None
            if error.throttled:
                counters.throttled += 1
            if error.server_trouble:
                counters.consecutive_trouble += 1
                counters.trouble_since = counters.trouble_since or time.monotonic()
                counters.last_trouble = error
                self._cool_down(gate, counters, error)
            # "Slow down", or a server in trouble for everyone, is not a failure of the record: a longer budget.
            if error.throttled or counters.consecutive_trouble >= SUSTAINED_TROUBLE:
                throttled += 1
            broken = counters.breaker.record(request.record_key, error)
            if broken:
                counters.halt(counters.breaker.message())
                if error.server_trouble:
                    return None  # nothing was paid for this one: left for the next materialization
            out_of_attempts = (attempts - throttled >= self.max_attempts
                               or throttled >= self.max_attempts * THROTTLED_ATTEMPTS_FACTOR
                               or (error.attempts_cap is not None and attempts >= error.attempts_cap))
            if not error.retryable or out_of_attempts or broken:
                return DifyResult(
                    record_key=request.record_key, succeeded=False, attempts=attempts,
                    latency_ms=round((time.perf_counter() - started) * 1000, 1),
                    error_code=error.code, error_message=error.message,
                )
            counters.retries += 1
            await _sleep_unless(counters.stop, self._policy().delay(attempts, error.retry_after))

    def _cool_down(self, gate: RequestGate, counters: _Counters, error: DifyCallError) -> None:
        """Pause every new request when the server says so (Retry-After) or when its trouble is sustained.

        A rare 429/5xx retries that record alone (after its own backoff); Dify's concurrency 400 only lowers
        the limit.
        """
        if error.retry_after is not None:
            gate.pause(error.retry_after)
        elif error.http_status != 400 and counters.consecutive_trouble >= SUSTAINED_TROUBLE:
            gate.pause(self._policy().delay(counters.consecutive_trouble - SUSTAINED_TROUBLE + 1))

    # -- one HTTP attempt -----------------------------------------------------------------------------
    def _user(self, request: DifyRequest) -> str:
        """One Dify end user per record (workflow apps): its runs are found again by this session id alone.

        Completion apps keep one shared user: Dify offers no way to look their messages up by user.
        """
        return f"{self.user}:{request.record_key}" if self.app_mode == "workflow" else self.user

    async def _call_once(self, client: aiohttp.ClientSession, request: DifyRequest, counters, journal) -> DifyResult:
        try:
            if self.response_mode == "blocking":
                url = self._url(endpoint(self.app_mode, counters.workflow_id))
                body = payload(self.app_mode, request, self.response_mode, self._user(request))
                async with client.post(url, json=body) as response:
                    text = await response.text()
                    if response.status != 200:
                        raise classify_http_error(response.status, text, response.headers.get("Retry-After"))
                try:
                    answer = json_or_error(text)
                except DifyCallError as cut:  # a 200 whose body was cut: the run finished in Dify
                    cut.outcome_unknown = True
                    raise
                return blocking_result(self.app_mode, request.record_key, answer)
            return await self._call_streaming(client, request, counters, journal)
        except TimeoutError:
            raise DifyCallError("timeout", "no answer within the request timeout", True, outcome_unknown=True) from None
        except aiohttp.ClientConnectorError as error:  # never connected: nothing was sent
            raise DifyCallError("connection_error", f"{type(error).__name__}: connection failed", True) from None
        except aiohttp.ClientError as error:
            raise DifyCallError("connection_error", f"{type(error).__name__}: connection failed or dropped", True,
                                outcome_unknown=True) from None

    async def _call_streaming(self, client: aiohttp.ClientSession, request: DifyRequest, counters,
                              journal) -> DifyResult:
        stream = AnswerStream(self.app_mode, request.record_key)
        run_id: str | None = None  # a workflow run that announced itself, to look up when the stream breaks
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=self.stream_idle_timeout_seconds)
        try:
            url = self._url(endpoint(self.app_mode, counters.workflow_id))
            body = payload(self.app_mode, request, self.response_mode, self._user(request))
            async with client.post(url, json=body, timeout=timeout) as response:
                if response.status != 200:
                    text = await response.text()
                    raise classify_http_error(response.status, text, response.headers.get("Retry-After"))
                async for event in sse_events(response.content.iter_any()):
                    result = stream.feed(event)
                    if result is not None:
                        return result
                    if self.app_mode == "workflow" and run_id is None and stream.run_id:
                        run_id = stream.run_id
                        if journal is not None:
                            await journal.run_started(request.record_key, run_id)
        except (TimeoutError, aiohttp.ClientError, DifyCallError) as error:
            broken_stream = not isinstance(error, DifyCallError) or error.code == "malformed_response"
            if not broken_stream:
                raise
            if run_id is None:  # broken before the run announced itself: it may exist all the same
                if isinstance(error, DifyCallError):
                    error.outcome_unknown = True
                raise
            # The run goes on inside Dify after the stream broke: fetch its result instead of paying again.
            raise DifyCallError("stream_broken", f"stream of run {run_id} broke", True, outcome_unknown=True,
                                run_id=run_id) from None
        raise DifyCallError("stream_incomplete", "stream ended before a terminal event", True,
                            outcome_unknown=True, run_id=run_id)

    async def _find_run(self, client: aiohttp.ClientSession, counters: _Counters, request: DifyRequest,
                        run_id: str | None, patience: float) -> DifyResult | DifyCallError | None:
        """The run Dify made for `request`: its result, its failure, or None when none showed up in `patience` s.

        Without a run id, the record's runs are listed by its end user (GET /workflows/logs); a run still
        running is waited for (up to 10 × the request timeout), not sent again. In a pinned batch, a run of
        another version counts as none.
        """
        user = self._user(request)
        now = time.monotonic()
        deadline, run_deadline = now + patience, now + self.request_timeout_seconds * 10
        delay, failure = 0.25, None
        while True:
            try:
                if run_id is None:
                    run_id, failure = await self._run_of_user(client, counters, user)
                if run_id is not None:
                    detail = await self._get_json(client, counters, f"/workflows/run/{run_id}")
                    status = detail.get("status")
                    if status in ("running", "paused"):
                        deadline = max(deadline, min(run_deadline, time.monotonic() + 2 * delay))
                    elif status is not None:
                        if counters.workflow_id and detail.get("workflow_id") not in (None, counters.workflow_id):
                            return None  # run by another version than the day's: the pinned one is asked instead
                        try:
                            return workflow_result(request.record_key, detail, run_id)
                        except DifyCallError as failed:
                            return failed
                    else:
                        run_id = None  # Dify answers an unknown run id with a 200 of nulls
                elif failure is not None:
                    return failure
            except (TimeoutError, DifyCallError, aiohttp.ClientError):
                pass  # the lookup failed this time; try again until the deadline
            if time.monotonic() > deadline or counters.stop.is_set():
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    async def _run_of_user(self, client, counters: _Counters, user: str) -> tuple[str | None, DifyCallError | None]:
        """(id of the user's best run, or None; its failure when every run failed). Newest first: succeeded
        beats running beats failed."""
        query = aiohttp.helpers.quote(user, safe="")
        path = f"/workflows/logs?created_by_end_user_session_id={query}&limit=20"
        body = await self._get_json(client, counters, path)
        runs = [item.get("workflow_run") or {} for item in body.get("data") or []]
        for wanted in (("succeeded",), ("running", "paused")):
            for run in runs:
                if run.get("status") in wanted and run.get("id"):
                    return run["id"], None
        failed = [run for run in runs if run.get("status") in ("failed", "stopped", "partial-succeeded")]
        if failed:
            return None, classify_failed_run(failed[0].get("error"), failed[0].get("status"))
        return None, None

    async def _get_json(self, client, counters: _Counters, path: str) -> dict:
        counters.lookups += 1
        async with client.get(self._url(path)) as response:
            text = await response.text()
            if response.status != 200:
                raise classify_http_error(response.status, text, response.headers.get("Retry-After"))
        return json_or_error(text)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    if seconds <= 0 or stop.is_set():
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def _run(coroutine):
    """Run a coroutine on a fresh loop (uvloop, installed with Dagster's webserver, where available)."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - the default loop works, only slower
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine)
