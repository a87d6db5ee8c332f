"""Elasticsearch through the official client: the package's index, bulk loads, verification."""

from __future__ import annotations

import dagster as dg
from elasticsearch import Elasticsearch
from pydantic import Field


class ElasticsearchResource(dg.ConfigurableResource):
    """A cluster and the alias the package writes to (`index`), backed by a versioned physical index."""

    url: str
    index: str = "tickets_enriched"
    api_key: str | None = Field(default=None, description="From ELASTICSEARCH_API_KEY; never logged.")
    username: str | None = None
    password: str | None = None
    ca_file: str | None = Field(default=None, description="CA bundle for a private certificate authority.")
    verify_tls: bool = True
    request_timeout_seconds: float = 60.0
    chunk_size: int = Field(default=1000, ge=1, description="Documents per bulk request, at most.")
    max_chunk_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Bytes per bulk request, at most.")
    max_retries: int = Field(default=5, ge=0, description="Retries of documents rejected with 429.")
    initial_backoff_seconds: float = Field(default=1.0, ge=0)

    def client(self) -> Elasticsearch:
        options: dict = {"request_timeout": self.request_timeout_seconds, "retry_on_status": (429, 502, 503, 504),
                         "max_retries": 3, "retry_on_timeout": True}
        if self.api_key:
            options["api_key"] = self.api_key
        elif self.username:
            options["basic_auth"] = (self.username, self.password or "")
        if self.url.startswith("https"):
            options["verify_certs"] = self.verify_tls
            if self.ca_file:
                options["ca_certs"] = self.ca_file
        return Elasticsearch(self.url, **options)

    def physical_index(self, mapping_version: int) -> str:
        return f"{self.index}-v{mapping_version}"

    def ensure_index(self, client: Elasticsearch, mapping: dict, mapping_version: int) -> str:
        """Create `<index>-v<N>` with the mapping and point the alias at it, unless it exists already."""
        physical = self.physical_index(mapping_version)
        if not client.indices.exists(index=physical):
            client.indices.create(
                index=physical, mappings=mapping,
                aliases={self.index: {"is_write_index": True}},
                settings={"number_of_shards": 1},
            )
        elif not client.indices.exists_alias(name=self.index, index=physical):
            client.indices.put_alias(index=physical, name=self.index)
        return physical
