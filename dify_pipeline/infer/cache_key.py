"""The identity of a paid call: same app, same prompt version, same inputs → same answer, paid once."""

from __future__ import annotations

import hashlib
import json


def cache_key(app_identity: str, cache_version: str, inputs: dict) -> str:
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{app_identity}\n{cache_version}\n{canonical}".encode()).hexdigest()
