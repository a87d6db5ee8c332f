"""Turn what the Dify app answered into typed columns, or a permanent error saying why not."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dify_pipeline.contract import SENTIMENTS
from dify_pipeline.resources.dify.errors import DifyCallError

OUTPUT_FIELDS = ("category", "summary", "sentiment")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)  # models wrap JSON in prose


@dataclass(frozen=True)
class Enrichment:
    category: str
    summary: str
    sentiment: str


def parse_enrichment(outputs: Mapping | str | None, categories: Sequence[str]) -> Enrichment:
    """Read category/summary/sentiment from workflow outputs or a completion answer.

    Accepts the fields as an object, or as a JSON string (optionally in a ```json fence) held in the
    answer or in any single output field. Raises a permanent DifyCallError when the answer breaks the
    contract: `invalid_output` (missing/unparseable) or `invalid_category` (not an allowed label).
    """
    fields = _find_fields(outputs)
    if fields is None:
        raise DifyCallError("invalid_output", f"outputs lack {', '.join(OUTPUT_FIELDS)}: {_preview(outputs)}", False)
    category = str(fields.get("category") or "").strip()
    if category not in categories:
        raise DifyCallError("invalid_category", f"category {category!r} is not one of the allowed labels", False)
    sentiment = str(fields.get("sentiment") or "").strip().lower()
    if sentiment not in SENTIMENTS:
        raise DifyCallError("invalid_output", f"sentiment {sentiment!r} is not one of {', '.join(SENTIMENTS)}", False)
    return Enrichment(category=category, summary=str(fields.get("summary") or "").strip(), sentiment=sentiment)


def _find_fields(outputs: Mapping | str | None) -> Mapping | None:
    if isinstance(outputs, str):
        return _find_fields(_loads(outputs))
    if not isinstance(outputs, Mapping):
        return None
    if "category" in outputs:
        return outputs
    for value in outputs.values():  # one output variable holding the JSON text
        if isinstance(value, (str, Mapping)):
            found = _find_fields(value)
            if found is not None:
                return found
    return None


def _loads(text: str):
    fenced = _FENCE.search(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return None


def _preview(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:200]
