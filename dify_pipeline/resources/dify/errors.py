"""What a failed Dify call means: retry it, give up on the record, or stop the whole run."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass
class DifyCallError(Exception):
    """One failed attempt. `code` is stable and goes into the output rows and metadata."""

    code: str
    message: str
    retryable: bool
    throttled: bool = False  # the server asked us to slow down
    fatal: bool = False  # no record can succeed (bad key, app gone, quota): stop the run
    http_status: int | None = None
    retry_after: float | None = None
    attempts_cap: int | None = None  # at most this many attempts for this kind of failure (a timed-out run: 2)
    outcome_unknown: bool = False  # the request may have started a run (timeout, cut body, broken stream)
    run_id: str | None = None  # the run it started, when the server said so

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @property
    def server_trouble(self) -> bool:
        """429, 5xx, a timeout or a dropped connection: the server or the path to it, not this record."""
        return self.retryable and not self.code.startswith("run_") and self.code != "malformed_response"


# Dify codes that no retry can fix, and that no other record can get past either.
_FATAL_CODES = {"unauthorized", "app_unavailable", "not_workflow_app", "not_completion_app", "not_chat_app",
                "provider_quota_exceeded", "provider_not_initialize", "model_currently_not_support", "forbidden"}
# A failed run was executed inside Dify (and charged), so its error text decides whether paying again can help.
# Throttling at the model provider passes: the full retry budget. A timeout or a dropped connection at the
# provider may pass: one more try. Anything else fails the same way next time and is not sent again; notably
# "Connection refused" (a node that cannot reach its sandbox), which is Dify's infrastructure, not our network.
_PROVIDER_THROTTLED = re.compile(r"rate.?limit|too many requests|overload|server is busy|\b429\b", re.IGNORECASE)
_MAYBE_PASSING = re.compile(
    r"timeout|timed out|temporar|unavailable|connection (?:error|reset|aborted)|try again|internal server error"
    r"|bad gateway|gateway time-?out|\b50[234]\b",
    re.IGNORECASE,
)
FAILED_RUN_ATTEMPTS = 2
FAILED_CHATFLOW_PREFIX = "Run failed: "  # Dify's ValueError for a chatflow run that failed
# POST /workflows/{workflow_id}/run refusing the id: unknown (404), not a UUID or a draft (400 bad_request).
_VERSION_REFUSALS = ("Workflow not found with id:", "Invalid workflow_id format:", "Cannot use draft workflow version.")
MAX_RETRY_AFTER_SECONDS = 3600.0  # a server asking for longer is broken; we would rather fail the record


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), MAX_RETRY_AFTER_SECONDS)


def classify_http_error(status: int, body: str, retry_after_header: str | None = None) -> DifyCallError:
    """Classify a non-200 answer from Dify or from a gateway in front of it."""
    retry_after = parse_retry_after(retry_after_header)
    code, message = _dify_error_body(body)
    if status == 429:
        return DifyCallError(code or "too_many_requests", message or "rate limited (HTTP 429)", True, True,
                             http_status=status, retry_after=retry_after)
    if status == 400 and code == "invalid_param" and message.startswith("Too many requests"):
        # Dify's per-app active-request limit comes back this way, never as the documented 429.
        return DifyCallError("too_many_requests", message, True, True, http_status=status, retry_after=retry_after)
    if status == 400 and code == "invalid_param" and message.startswith(FAILED_CHATFLOW_PREFIX):
        # A chatflow whose run failed answers a blocking call this way: it ran, and is judged as a failed run.
        failed = classify_failed_run(message.removeprefix(FAILED_CHATFLOW_PREFIX))
        failed.http_status = status
        return failed
    if status in (400, 404) and message.startswith(_VERSION_REFUSALS):
        return DifyCallError(
            "workflow_version_unavailable",
            message + " — the day is pinned to this version of the app; it is not (or no longer) a published "
            "version of the app behind DIFY_API_KEY",
            False, fatal=True, http_status=status)
    if status >= 500 or status in (408, 425):
        label = code or ("gateway_error" if status in (502, 503, 504) and not code else "server_error")
        return DifyCallError(label, message or f"HTTP {status} from the server or a gateway", True,
                             outcome_unknown=status in (502, 504),  # a gateway gave up; the run may go on
                             # a 503 slows everyone down only when it says for how long; a rare one is one record's
                             throttled=status == 503 and retry_after is not None, http_status=status,
                             retry_after=retry_after)
    if status in (401, 403):
        return DifyCallError(
            "unauthorized" if status == 401 else "forbidden",
            (message or f"HTTP {status}") + " — check DIFY_API_KEY (the app's API key) and DIFY_BASE_URL",
            False, fatal=True, http_status=status,
        )
    if status == 404:
        return DifyCallError(code or "not_found",
                             (message or "HTTP 404") + " — check DIFY_BASE_URL (it usually ends in /v1)",
                             False, fatal=True, http_status=status)
    code = code or f"http_{status}"
    return DifyCallError(code, message or f"HTTP {status}", False, fatal=code in _FATAL_CODES, http_status=status)


def classify_failed_run(error: str | None, status: str = "failed") -> DifyCallError:
    """A 200 whose run did not succeed: provider throttling is retried, a maybe-passing error once, the rest not."""
    text = (error or f"run ended with status {status!r}").strip()
    code, text = f"run_{status.replace('-', '_')}", text[:500]
    if _PROVIDER_THROTTLED.search(text):
        return DifyCallError(code, text, True)
    if _MAYBE_PASSING.search(text) and "refused" not in text.lower():
        return DifyCallError(code, text, True, attempts_cap=FAILED_RUN_ATTEMPTS)
    return DifyCallError(code, text, False)


def classify_stream_error(event: dict) -> DifyCallError:
    """An `event: error` frame in a streaming answer carries the same {status, code, message} envelope."""
    status = int(event.get("status") or 500)
    body = json.dumps({"code": event.get("code"), "message": event.get("message")})
    return classify_http_error(status, body)


def _dify_error_body(body: str) -> tuple[str, str]:
    """(code, message) from Dify's {code, message, status} envelope; ('', '') for HTML or other bodies."""
    try:
        parsed = json.loads(body)
    except (ValueError, TypeError):
        return "", ""
    if not isinstance(parsed, dict):
        return "", ""
    return str(parsed.get("code") or ""), str(parsed.get("message") or "")[:500]


class FailureBreaker:
    """Stops paying for a broken app: trips when `threshold` of the last `window` answers failed the same way.

    Only answers the server gave about the record count (a success, a failed run, a refused input); throttling,
    5xx and network trouble are the outage bound's business. Two failures are "the same" when their code
    and, for a failed run, its error text agree.
    """

    def __init__(self, window: int = 20, threshold: int = 10) -> None:
        self.threshold = threshold
        self._recent: deque[str | None] = deque(maxlen=window)
        self._examples: dict[str, tuple[str, DifyCallError]] = {}
        self.tripped: tuple[int, str, DifyCallError] | None = None  # (count, example record, error)

    def record(self, record_key: str, error: DifyCallError | None) -> bool:
        """Note one answer; True when the breaker has tripped."""
        if error is not None and error.server_trouble:
            return self.tripped is not None
        signature = None if error is None else f"{error.code}\n{error.message}"
        self._recent.append(signature)
        if signature is not None:
            self._examples.setdefault(signature, (record_key, error))
            count = Counter(self._recent)[signature]
            if count >= self.threshold and self.tripped is None:
                example, first = self._examples[signature]
                self.tripped = (count, example, first)
        return self.tripped is not None

    def message(self) -> str:
        count, example, error = self.tripped
        return (f"{count} of the last {len(self._recent)} answers from Dify failed the same way, so the day was "
                f"stopped instead of paying for every record: {error} (e.g. record {example}). Fix the app "
                "(or the service it calls), then materialize the day again")
