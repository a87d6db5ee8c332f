"""What a user tunes about the data itself: columns, limits, the app's contract. No I/O here."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from dify_pipeline.contract import DEFAULT_CATEGORIES, DEFAULT_INPUT_MAPPING, TICKET_OUTPUTS, OutputField


class PipelineSettings(dg.ConfigurableResource):
    """The data contract of a deployment; defaults fit the support-ticket example."""

    key_column: str = "id"
    timestamp_column: str = Field(default="created_at", description="Which timestamp decides the day of a row.")
    updated_at_column: str = Field(default="updated_at", description="Latest version wins when a key repeats.")
    text_columns: list[str] = ["subject", "body"]
    max_chars: dict[str, int] = Field(default={"subject": 200, "body": 4000}, description="Longer text is cut and flagged.")
    extra_pii_patterns: dict[str, str] = Field(default={}, description="name → regex, masked as [NAME].")
    max_shard_rows: int = Field(default=500, ge=1, description="Upper bound of rows in one shard.")
    input_mapping: dict[str, str] = Field(default=dict(DEFAULT_INPUT_MAPPING), description="Dify input variable → column.")
    categories: list[str] = Field(default=list(DEFAULT_CATEGORIES), description="Labels the app may answer.")
    cache_version: str = Field(default="v1", description="Part of the cache key: change it when the prompt changes.")
    max_failure_rate: float = Field(default=0.02, ge=0, le=1, description="Asset check threshold for failed records.")
    # For answers that carry tokens but no price (workflow apps): the day's cost is then an estimate, labelled so.
    price_per_1k_input_tokens: float | None = Field(default=None, ge=0, description="Model price per 1,000 input tokens.")
    price_per_1k_output_tokens: float | None = Field(default=None, ge=0, description="Model price per 1,000 output tokens.")
    price_currency: str = Field(default="USD", description="Currency of the token prices above.")

    def outputs(self) -> dict[str, OutputField]:
        """The ticket outputs, with the categories above as the labels `category` allows."""
        return {**TICKET_OUTPUTS, "category": TICKET_OUTPUTS["category"].model_copy(update={"allowed": self.categories})}
