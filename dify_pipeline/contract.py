"""The declared contract of one enrichment: where its records come from, what the Dify app is asked and must
answer, and where the answers go. Everything downstream derives from it — parsing, the published Parquet
schema, the search mapping, the checks — so adding an output is one line here or in `defs.yaml`.

A contract is plain data (pydantic), read from YAML or built in Python, validated with messages that name the
field at fault. It holds names of environment variables, never their values: secrets stay in the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]*")

OutputType = Literal["text", "label", "integer", "number", "boolean", "list", "json"]


class ContractError(ValueError):
    """A contract that cannot run; the message names each field at fault and what is wrong with it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _identifier(value: str, what: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a plain identifier (letters, digits and underscores)")
    return value


def _variable(value: str) -> str:
    if not _VARIABLE.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (upper case, digits, underscores)")
    return value


class SourceContract(_Strict):
    """The source table and the columns the pipeline relies on (README: "The source table")."""

    url_env: str = Field("SOURCE_DATABASE_URL", description="Variable holding the SQLAlchemy URL of the source.")
    table: str = Field("tickets", description="Table (or view) exported one day at a time.")
    key_column: str = Field("id", description="Identifies a record; the latest version wins when it repeats.")
    timestamp_column: str = Field("created_at", description="Decides the day of a row.")
    updated_at_column: str | None = Field("updated_at", description="Orders versions of one key (optional).")
    text_columns: list[str] = Field(["subject", "body"], min_length=1, description="Normalized and PII-masked.")
    timezone: str | None = Field(None, description="Zone of naive timestamps; default PIPELINE_TIMEZONE.")

    _url_env = field_validator("url_env")(lambda value: _variable(value))

    @field_validator("table", "key_column", "timestamp_column", "updated_at_column")
    @classmethod
    def _plain(cls, value: str | None, info) -> str | None:
        return None if value is None else _identifier(value, info.field_name)

    @field_validator("text_columns")
    @classmethod
    def _plain_columns(cls, value: list[str]) -> list[str]:
        return [_identifier(column, "text column") for column in value]


class CleaningContract(_Strict):
    """How the text is cleaned before anything leaves for Dify."""

    max_chars: dict[str, int] = Field({"subject": 200, "body": 4000}, description="Longer text is cut and flagged.")
    extra_pii_patterns: dict[str, str] = Field({}, description="name → regex, masked as [NAME].")
    max_shard_rows: int = Field(500, ge=1, description="Upper bound of rows in one shard.")

    @field_validator("extra_pii_patterns")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"pattern {name!r} is not a regular expression: {error}") from None
        return value


class AppContract(_Strict):
    """The Dify app: how to reach it, how it is called, and which version answers a day."""

    base_url_env: str = Field("DIFY_BASE_URL", description="Variable holding the app's API base URL (…/v1).")
    api_key_env: str = Field("DIFY_API_KEY", description="Variable holding the app's API key (a secret).")
    mode: Literal["workflow", "completion", "chat"] = Field(
        "workflow", description="workflow: POST /workflows/run; completion: /completion-messages; chat (chatflow "
                                "apps): /chat-messages, with `query` sent as the message.")
    inputs: dict[str, str] = Field({"subject": "subject", "body": "body"}, description="Dify input variable → column.")
    query: str | None = Field(None, description="chat mode: the column sent as the message (`query`).")
    pin_version: bool = Field(True, description="workflow mode: a day is answered by the published version that "
                                                "answered its first record (POST /workflows/{workflow_id}/run).")
    other_version_answers: Literal["reuse", "reask"] = Field(
        "reuse", description="Cached answers from another app version: reuse them (free) or ask again (paid).")

    _env = field_validator("base_url_env", "api_key_env")(lambda value: _variable(value))

    @model_validator(mode="after")
    def _query_for_chat(self) -> AppContract:
        if self.mode == "chat" and not self.query:
            raise ValueError("mode chat needs `query`: the column sent as the chat message")
        if self.mode != "chat" and self.query:
            raise ValueError(f"`query` is for chat apps only; a {self.mode} app takes its inputs only")
        return self


class OutputField(_Strict):
    """One field the app must (or may) answer, and its type in Parquet and in the search index."""

    type: OutputType = "text"
    required: bool = True
    allowed: list[str] | None = Field(None, description="label: the values the app may answer (matched ignoring "
                                                        "case and surrounding space, stored as written here).")
    minimum: float | None = Field(None, description="integer, number: the smallest value accepted.")
    maximum: float | None = Field(None, description="integer, number: the largest value accepted.")
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> OutputField:
        if self.type == "label" and not self.allowed:
            raise ValueError("a label needs `allowed`: the values the app may answer")
        if self.type != "label" and self.allowed is not None:
            raise ValueError(f"`allowed` is for labels; this output is {self.type}")
        if self.type not in ("integer", "number") and (self.minimum is not None or self.maximum is not None):
            raise ValueError(f"`minimum`/`maximum` are for integer and number outputs; this output is {self.type}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        return self


class SinksContract(_Strict):
    """Where the enriched day is published."""

    parquet_prefix: str = Field("", description="Folder under OUTPUT_PARQUET_URL; '' is its root (one enrichment).")
    index_alias: str | None = Field(None, description="Search alias; default ELASTICSEARCH_INDEX (one enrichment).")

    @field_validator("parquet_prefix")
    @classmethod
    def _relative(cls, value: str) -> str:
        value = value.strip("/")
        if value and not re.fullmatch(r"[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*", value):
            raise ValueError(f"{value!r} is not a relative folder (letters, digits, _ . = - and /)")
        return value


# Pipeline columns an output may not be named like (they would be overwritten or ambiguous).
RESERVED_COLUMNS = frozenset({
    "record_key", "text_truncated", "pii_masked", "shard", "outputs_json", "dify_status", "error_code",
    "error_message", "attempts", "latency_ms", "total_tokens", "total_price", "currency", "dify_run_id",
    "dify_workflow_id", "cache_hit", "inputs_truncated", "enriched_at", "app_identity", "cache_version",
    "pipeline_version", "dt", "load_id", "attributes",
})


class EnrichmentContract(_Strict):
    """One daily enrichment: a source table, a Dify app, its outputs, its sinks."""

    name: str = Field(description="Plural noun of the records (`tickets`): names the assets, group, job, folders.")
    record_name: str | None = Field(None, description="Singular (`ticket`), for `<record>_shards`; default: name "
                                                      "without its trailing s.")
    key_prefix: list[str] = Field([], description="Asset key prefix, for code locations that want one.")
    source: SourceContract = SourceContract()
    cleaning: CleaningContract = CleaningContract()
    app: AppContract = AppContract()
    outputs: dict[str, OutputField] = Field(min_length=1, description="What the app must answer, name → field.")
    cache_version: str = Field("v1", min_length=1, max_length=64,
                               description="Part of the cache key: change it when the prompt changes.")
    max_failure_rate: float = Field(0.02, ge=0, le=1, description="A day with more failed records is not published.")
    # For answers that carry tokens but no price (workflow apps): the day's cost is then an estimate, labelled so.
    price_per_1k_input_tokens: float | None = Field(None, ge=0, description="Model price per 1,000 input tokens.")
    price_per_1k_output_tokens: float | None = Field(None, ge=0, description="Model price per 1,000 output tokens.")
    price_currency: str = Field("USD", description="Currency of the token prices above.")
    sinks: SinksContract = SinksContract()

    @field_validator("name", "record_name")
    @classmethod
    def _names(cls, value: str | None, info) -> str | None:
        return None if value is None else _identifier(value, info.field_name)

    @field_validator("outputs")
    @classmethod
    def _output_names(cls, value: dict[str, OutputField]) -> dict[str, OutputField]:
        for name in value:
            _identifier(name, "output")
            if name in RESERVED_COLUMNS:
                raise ValueError(f"output {name!r} is a column the pipeline writes itself: rename it")
        return value

    @model_validator(mode="after")
    def _columns_exist_in_contract(self) -> EnrichmentContract:
        clash = sorted(set(self.outputs) & set(self.source.text_columns))
        if clash:
            raise ValueError(f"outputs {clash} have the names of source text columns: rename them")
        return self

    @property
    def singular(self) -> str:
        return self.record_name or (self.name[:-1] if self.name.endswith("s") and len(self.name) > 1 else self.name)

    def label_values(self) -> dict[str, list[str]]:
        """The allowed values of each label output."""
        return {name: list(field.allowed) for name, field in self.outputs.items() if field.type == "label"}

    @classmethod
    def from_yaml(cls, path: str | Path) -> EnrichmentContract:
        """The contract in a YAML file; a ContractError naming the file and each field at fault otherwise."""
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        return parse_contract(data, origin=str(path))


def parse_contract(data: object, origin: str = "contract") -> EnrichmentContract:
    """`data` (a mapping, as read from YAML) as a contract, or a ContractError naming each field at fault."""
    if not isinstance(data, dict):
        raise ContractError(f"{origin}: a contract is a mapping of fields (name, source, app, outputs, ...)")
    try:
        return EnrichmentContract.model_validate(data)
    except ValidationError as error:
        lines = [f"{'.'.join(str(part) for part in problem['loc']) or '(contract)'}: {_reason(problem)}"
                 for problem in error.errors()]
        raise ContractError(f"{origin} is not a valid enrichment contract:\n  " + "\n  ".join(lines)) from None


def _reason(problem: dict) -> str:
    message = problem["msg"]
    return message.removeprefix("Value error, ")


# -- the support-ticket example, the package's default enrichment -------------------------------------------------

# The ten support categories an app may answer; anything else is a permanent `invalid_category` error.
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "物流问题",  # logistics
    "退款申请",  # refund request
    "功能建议",  # feature suggestion
    "账户问题",  # account issue
    "支付问题",  # payment issue
    "产品质量",  # product quality
    "售后维修",  # after-sales repair
    "订单修改",  # order change
    "技术故障",  # technical fault
    "其他",  # other
)
SENTIMENTS: tuple[str, ...] = ("positive", "neutral", "negative")
DEFAULT_INPUT_MAPPING: dict[str, str] = {"subject": "subject", "body": "body"}

TICKET_OUTPUTS: dict[str, OutputField] = {
    "category": OutputField(type="label", allowed=list(DEFAULT_CATEGORIES), description="The support category."),
    "summary": OutputField(type="text", required=False, description="One line for the agent."),
    "sentiment": OutputField(type="label", allowed=list(SENTIMENTS), description="The customer's tone."),
}


def tickets_contract(**changes) -> EnrichmentContract:
    """The support-ticket enrichment (the default code location), with `changes` to its top-level fields."""
    return EnrichmentContract(**{"name": "tickets", "outputs": TICKET_OUTPUTS, **changes})
