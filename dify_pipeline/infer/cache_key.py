"""The identity of a paid call: same app, same prompt version, same inputs (and chat message) → same answer, paid
once."""

from __future__ import annotations

import hashlib
import json


def cache_key(app_identity: str, cache_version: str, inputs: dict, query: str | None = None) -> str:
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    if query is not None:  # a chat message; JSON text holds no raw newline, so the two parts cannot run together
        canonical += "\n" + json.dumps(query, ensure_ascii=False)
    return hashlib.sha256(f"{app_identity}\n{cache_version}\n{canonical}".encode()).hexdigest()
