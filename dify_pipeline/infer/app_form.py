"""Check the configured input mapping against the app's declared input form, and fit values to it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputVariable:
    name: str
    required: bool
    max_length: int | None
    options: tuple[str, ...]


class InputMappingError(ValueError):
    """The columns configured for the app's inputs do not match what the app declares."""


def input_variables(parameters: dict) -> dict[str, InputVariable]:
    """The variables of GET /parameters' `user_input_form` (each item is {control_type: {...}})."""
    variables = {}
    for item in parameters.get("user_input_form") or []:
        for spec in item.values():
            if isinstance(spec, dict) and spec.get("variable"):
                max_length = spec.get("max_length")
                variables[spec["variable"]] = InputVariable(
                    name=spec["variable"],
                    required=bool(spec.get("required")),
                    max_length=int(max_length) if max_length else None,
                    options=tuple(spec.get("options") or ()),
                )
    return variables


def check_input_mapping(variables: dict[str, InputVariable], mapping: dict[str, str]) -> None:
    """Fail fast, before any paid call, when the mapping names unknown variables or misses required ones."""
    unknown = sorted(set(mapping) - set(variables))
    missing = sorted(v.name for v in variables.values() if v.required and v.name not in mapping)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"mapped variables the app does not declare: {', '.join(unknown)}")
        if missing:
            parts.append(f"required app variables with no column mapped: {', '.join(missing)}")
        raise InputMappingError(
            "input mapping does not match the Dify app's input form — " + "; ".join(parts)
            + f". The app declares: {', '.join(sorted(variables)) or 'nothing'}."
        )


@dataclass(frozen=True)
class FittedInputs:
    inputs: dict[str, object]
    truncated: bool  # some text was cut to the app's max_length
    problem: str | None = None  # why Dify would refuse these inputs (a value outside a select's options)


def fit_inputs(values: dict[str, object], variables: dict[str, InputVariable]) -> FittedInputs:
    """Cut text to each variable's declared max_length (Dify rejects longer input with 400 invalid_param),
    and spot a select value outside its options (Dify would refuse it: the record fails without a paid call).

    Missing values are sent as empty strings, which Dify accepts for required variables as well.
    """
    fitted, truncated, problems = {}, False, []
    for name, value in values.items():
        variable = variables.get(name)
        value = "" if value is None else value
        if isinstance(value, str) and variable and variable.max_length and len(value) > variable.max_length:
            value, truncated = value[: variable.max_length], True
        if variable and variable.options and value not in variable.options and (value != "" or variable.required):
            problems.append(f"{name}={str(value)[:50]!r} is not one of the app's options {list(variable.options)}")
        fitted[name] = value
    return FittedInputs(fitted, truncated, "; ".join(problems) or None)
