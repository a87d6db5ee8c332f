"""What a failed Dify call means: retry it, give up on the record, or stop the whole run."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone


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

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# Dify codes that no retry can fix, and that no other record can get past either.
_FATAL_CODES = {"unauthorized", "app_unavailable", "not_workflow_app", "not_completion_app",
                "provider_quota_exceeded", "provider_not_initialize", "model_currently_not_support", "forbidden"}
# Failed-run messages that speak of passing trouble in the model provider or the network.
_TRANSIENT_RUN_ERROR = re.compile(
    r"timeout|timed out|rate.?limit|too many requests|overload|temporar|unavailable|connection (?:error|reset|refused)"
    r"|try again|internal server error|bad gateway|gateway time-?out",
    re.IGNORECASE,
)
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
        when = when.replace(tzinfo=timezone.utc)
    return min(max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds()), MAX_RETRY_AFTER_SECONDS)


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
    if status >= 500 or status in (408, 425):
        label = code or ("gateway_error" if status in (502, 503, 504) and not code else "server_error")
        return DifyCallError(label, message or f"HTTP {status} from the server or a gateway", True,
                             throttled=status == 503, http_status=status, retry_after=retry_after)
    if status in (401, 403):
        return DifyCallError(
            "unauthorized" if status == 401 else "forbidden",
            (message or f"HTTP {status}") + " — check DIFY_API_KEY (the app's API key) and DIFY_BASE_URL",
            False, fatal=True, http_status=status,
        )
    if status == 404:
        return DifyCallError(code or "not_found", (message or "HTTP 404") + " — check DIFY_BASE_URL (it usually ends in /v1)",
                             False, fatal=True, http_status=status)
    code = code or f"http_{status}"
    return DifyCallError(code, message or f"HTTP {status}", False, fatal=code in _FATAL_CODES, http_status=status)


def classify_failed_run(error: str | None, status: str = "failed") -> DifyCallError:
    """A 200 answer whose run did not succeed: transient provider trouble is retried, the rest is not."""
    text = (error or f"run ended with status {status!r}").strip()
    return DifyCallError(f"run_{status.replace('-', '_')}", text[:500], bool(_TRANSIENT_RUN_ERROR.search(text)))


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
