"""Turn what the Dify app answered into the contract's typed values, or a permanent error saying why not."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from dify_pipeline.contract import OutputField
from dify_pipeline.resources.dify.errors import DifyCallError

_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)  # models wrap JSON in prose
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def parse_outputs(outputs: Mapping | str | None, fields: Mapping[str, OutputField]) -> dict[str, object]:
    """The declared outputs read from workflow outputs or a completion/chat answer, typed as declared.

    Accepts the fields as an object, or as a JSON string (optionally in a ```json fence) held in the answer or
    in any single output field. Raises a permanent DifyCallError when the answer breaks the contract:
    `invalid_<name>` for a label outside its allowed values, `invalid_output` for anything else (a required
    output missing, a value of the wrong type or out of range). An optional output that is missing is None.
    """
    found = _find_fields(outputs, fields)
    if found is None:
        required = [name for name, field in fields.items() if field.required] or list(fields)
        raise DifyCallError("invalid_output", f"outputs lack {', '.join(required)}: {_preview(outputs)}", False)
    return {name: _value(name, found.get(name), field) for name, field in fields.items()}


def _value(name: str, raw: object, field: OutputField) -> object:
    if raw is None or (isinstance(raw, str) and not raw.strip() and field.type != "text"):
        if field.required:
            raise DifyCallError("invalid_output", f"the answer has no {name}", False)
        return None
    if field.type == "text":
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
        text = text.strip()
        if not text and field.required:
            raise DifyCallError("invalid_output", f"{name} is empty", False)
        return text or None
    if field.type == "label":
        return _label(name, raw, field.allowed or [])
    if field.type in ("integer", "number"):
        return _in_range(name, _number(name, raw, field.type == "integer"), field)
    if field.type == "boolean":
        return _boolean(name, raw)
    if field.type == "list":
        return _text_list(name, raw)
    return json.dumps(raw, ensure_ascii=False, sort_keys=True)  # json: kept whole, as text


def _label(name: str, raw: object, allowed: list[str]) -> str:
    text = str(raw).strip()
    by_folded = {value.strip().casefold(): value for value in allowed}
    if text.casefold() not in by_folded:
        raise DifyCallError(f"invalid_{name}", f"{name} {text!r} is not one of the allowed labels", False)
    return by_folded[text.casefold()]


def _number(name: str, raw: object, integer: bool) -> int | float:
    value = raw
    if isinstance(raw, bool):
        value = None
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DifyCallError("invalid_output", f"{name} {raw!r} is not a number", False)
    if integer:
        if value != int(value):
            raise DifyCallError("invalid_output", f"{name} {raw!r} is not a whole number", False)
        return int(value)
    return float(value)


def _in_range(name: str, value: int | float, field: OutputField) -> int | float:
    if field.minimum is not None and value < field.minimum:
        raise DifyCallError("invalid_output", f"{name} {value} is below the minimum {field.minimum:g}", False)
    if field.maximum is not None and value > field.maximum:
        raise DifyCallError("invalid_output", f"{name} {value} is above the maximum {field.maximum:g}", False)
    return value


def _boolean(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().casefold()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise DifyCallError("invalid_output", f"{name} {raw!r} is not true or false", False)


def _text_list(name: str, raw: object) -> list[str]:
    if isinstance(raw, str):
        loaded = _loads(raw)
        raw = loaded if isinstance(loaded, list) else [raw]
    if not isinstance(raw, list) or any(isinstance(item, (dict, list)) for item in raw):
        raise DifyCallError("invalid_output", f"{name} {_preview(raw)} is not a list of text", False)
    return [text for text in (str(item).strip() for item in raw if item is not None) if text]


def _find_fields(outputs: Mapping | str | None, fields: Mapping[str, OutputField]) -> Mapping | None:
    """The mapping that holds the answer: the first one (depth first) naming a required output (any output when
    none is required)."""
    keys = [name for name, field in fields.items() if field.required] or list(fields)
    if isinstance(outputs, str):
        return _find_fields(_loads(outputs), fields)
    if not isinstance(outputs, Mapping):
        return None
    if any(key in outputs for key in keys):
        return outputs
    for value in outputs.values():  # one output variable holding the JSON text
        if isinstance(value, (str, Mapping)):
            found = _find_fields(value, fields)
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
