"""Elasticsearch through the official client: the package's index, bulk loads, verification."""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import dagster as dg
from elasticsearch import BadRequestError, Elasticsearch, helpers
from pydantic import Field

try:
    from elasticsearch.serializer import OrjsonSerializer
except ImportError:  # orjson missing: the client's json serializer does the same, slower
    OrjsonSerializer = None

Part = TypeVar("Part")
RETRIED_STATUSES = (429, 502, 503, 504)  # the cluster is busy or briefly away: try again later
REQUEST_RETRIES = 3  # the client's own retries of a whole request, before the bulk helper's


class ElasticsearchResource(dg.ConfigurableResource):
    """A cluster and the alias readers use (`index`), backed by a versioned physical index the package owns."""

    url: str
    index: str = Field(default="tickets_enriched", description="The alias readers use; the data is in <index>-v<N>.")
    api_key: str | None = Field(default=None, description="From ELASTICSEARCH_API_KEY; never logged.")
    username: str | None = None
    password: str | None = None
    ca_file: str | None = Field(default=None, description="CA bundle for a private certificate authority.")
    verify_tls: bool = True
    request_timeout_seconds: float = 60.0
    chunk_size: int = Field(default=1000, ge=1, description="Documents per bulk request, at most.")
    max_chunk_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Bytes per bulk request, at most.")
    parallel_requests: int = Field(default=4, ge=1, description="Bulk requests in flight (one streaming_bulk each).")
    max_retries: int = Field(default=5, ge=0, description="Retries of documents rejected with 429 (or whose request failed).")
    initial_backoff_seconds: float = Field(default=1.0, ge=0, description="First wait before a retry; doubles each time.")
    max_backoff_seconds: float = Field(default=60.0, ge=0)

    def client(self) -> Elasticsearch:
        options: dict = {
            "request_timeout": self.request_timeout_seconds,
            # A whole request answered 429/502/503/504, or a dropped connection, is retried by the client
            # itself with jittered exponential backoff; timed-out bulk requests are safe to resend (_id).
            "retry_on_status": RETRIED_STATUSES, "max_retries": REQUEST_RETRIES, "retry_on_timeout": True,
            "retry_backoff_base": self.initial_backoff_seconds, "retry_backoff_cap": self.max_backoff_seconds,
            "connections_per_node": max(10, self.parallel_requests + 2),
        }
        if self.api_key:
            options["api_key"] = self.api_key
        elif self.username:
            options["basic_auth"] = (self.username, self.password or "")
        if self.url.startswith("https"):
            options["verify_certs"] = self.verify_tls
            if self.ca_file:
                options["ca_certs"] = self.ca_file
        if OrjsonSerializer is not None:  # serializing the documents was a third of the load's CPU with json
            options["serializer"] = OrjsonSerializer()
        return Elasticsearch(self.url, **options)

    # -- the index and its alias -------------------------------------------------------------------

    def physical_index(self, mapping_version: int) -> str:
        return f"{self.index}-v{mapping_version}"

    def ensure_index(self, client: Elasticsearch, mapping: dict, mapping_version: int) -> str:
        """`<index>-v<N>` with the package's mapping, created if missing; returns its name.

        Fields the mapping gained since the index was created (a new text or timestamp column) are added;
        a changed type is refused by Elasticsearch, which is the signal to bump MAPPING_VERSION. The alias
        is created on this index when it does not exist; when it points at an older version it is left
        there until `swap_alias` (after a reindex or a backfill), so readers never see a half-filled index.
        """
        physical = self.physical_index(mapping_version)
        if client.indices.exists(index=physical):
            client.indices.put_mapping(index=physical, properties=mapping["properties"])
        else:
            try:
                client.indices.create(index=physical, mappings=mapping)
            except BadRequestError as error:
                if error.error != "resource_already_exists_exception":  # another run created it meanwhile
                    raise
        if not client.indices.exists_alias(name=self.index):
            client.indices.put_alias(index=physical, name=self.index, is_write_index=True)
        return physical

    def alias_targets(self, client: Elasticsearch) -> list[str]:
        """The physical indices readers of the alias see now."""
        if not client.indices.exists_alias(name=self.index):
            return []
        return sorted(client.indices.get_alias(name=self.index))

    def swap_alias(self, client: Elasticsearch, mapping_version: int) -> None:
        """Point the alias at `<index>-v<N>` only, in one atomic request: readers switch from the old index
        to the new one between two searches, never seeing both or neither."""
        actions = [{"remove": {"index": old, "alias": self.index}} for old in self.alias_targets(client)]
        actions.append({"add": {"index": self.physical_index(mapping_version), "alias": self.index, "is_write_index": True}})
        client.indices.update_aliases(actions=actions)

    # -- bulk loads ----------------------------------------------------------------------------------

    def bulk_index(
        self, client: Elasticsearch, parts: Sequence[Part], actions_of: Callable[[Part], Iterable[dict]]
    ) -> BulkOutcome:
        """Send the actions of every part (e.g. one file each) with `parallel_requests` workers.

        Each worker runs the client's `streaming_bulk` over the parts it takes from a shared queue, so
        requests are cut by count (`chunk_size`) and bytes (`max_chunk_bytes`), and documents rejected with
        429 (or whose whole request still failed after the client's own retries) are sent again with
        exponential backoff, up to `max_retries` times. `parallel_bulk` would be simpler but never retries.
        Per-item errors are collected, never raised: one bad document does not stop the others. A worker
        that cannot go on (connection lost, unreadable part) stops the others taking new parts.
        """
        outcome = BulkOutcome()
        pending: queue.SimpleQueue = queue.SimpleQueue()
        for part in parts:
            pending.put(part)
        stop = threading.Event()
        lock = threading.Lock()
        started = time.perf_counter()

        def actions(sent: list[int]) -> Iterator[dict]:
            while not stop.is_set():
                try:
                    part = pending.get_nowait()
                except queue.Empty:
                    return
                for action in actions_of(part):
                    sent[0] += 1
                    yield action

        def worker() -> None:
            sent = [0]  # this worker's count, added once at the end: no lock per document
            try:
                for ok, item in helpers.streaming_bulk(
                    client, actions(sent), chunk_size=self.chunk_size, max_chunk_bytes=self.max_chunk_bytes,
                    max_retries=self.max_retries, initial_backoff=self.initial_backoff_seconds,
                    max_backoff=self.max_backoff_seconds, retry_on_status=RETRIED_STATUSES,
                    raise_on_error=False, raise_on_exception=False, yield_ok=False,
                ):
                    with lock:
                        outcome.record_failure(item)
            except BaseException as error:  # noqa: BLE001 - reported by the caller, with the counts so far
                stop.set()
                with lock:
                    outcome.error = outcome.error or f"{type(error).__name__}: {error}"
            finally:
                with lock:
                    outcome.sent += sent[0]

        threads = [threading.Thread(target=worker, name=f"bulk-{i}") for i in range(self.parallel_requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcome.seconds = time.perf_counter() - started
        return outcome


@dataclass
class BulkOutcome:
    """What a bulk load did: documents sent, those Elasticsearch refused and why."""

    sent: int = 0
    rejected: Counter = field(default_factory=Counter)  # the document's own fault (mapping, parsing): by type
    unavailable: Counter = field(default_factory=Counter)  # the cluster's (429/5xx after retries, failed request)
    samples: list[dict] = field(default_factory=list)
    error: str | None = None  # a worker stopped: the load is incomplete
    seconds: float = 0.0

    @property
    def indexed(self) -> int:
        return self.sent - sum(self.rejected.values()) - sum(self.unavailable.values())

    @property
    def complete(self) -> bool:
        """Every document was either indexed or refused for its own content."""
        return self.error is None and not self.unavailable

    def record_failure(self, item: dict) -> None:
        detail = next(iter(item.values()))
        status = detail.get("status")
        error = detail.get("error")
        kind = error.get("type", str(status)) if isinstance(error, dict) else f"request failed ({status})"
        whole_request = "exception" in detail  # streaming_bulk marks every item of a request that failed
        if whole_request or not isinstance(status, int) or status in RETRIED_STATUSES or status >= 500:
            self.unavailable[kind] += 1
        else:
            self.rejected[kind] += 1
        if len(self.samples) < 5:
            reason = error.get("reason", error) if isinstance(error, dict) else error
            self.samples.append({"_id": detail.get("_id"), "status": status, "type": kind, "reason": str(reason)[:300]})
