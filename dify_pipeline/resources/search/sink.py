"""The operations the pipeline needs from a search cluster, the same on Elasticsearch 8, 9 and OpenSearch.

`SearchSink` wraps an `elasticsearch.Elasticsearch` or an `opensearchpy.OpenSearch` client: the two clients
share their API shape (opensearch-py is a fork of elasticsearch-py 7), so every call is written once, with
`body=` (accepted by both), and only the errors and the bulk helper are looked up per engine.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from dify_pipeline.resources.search.versions import ClusterInfo

Part = TypeVar("Part")
RETRIED_STATUSES = (429, 502, 503, 504)  # the cluster is busy or briefly away: try again later


@dataclass(frozen=True)
class ClientKind:
    """What differs between the two client libraries: their errors and their bulk helper."""

    api_error: type[Exception]  # any answer with an HTTP error status
    conflict: type[Exception]  # 409
    not_found: type[Exception]  # 404
    helpers: ModuleType  # `streaming_bulk`, with the same arguments in both


class SearchSink:
    """One connection to the cluster, for one step: the index and its alias, bulk loads, counts, leases."""

    def __init__(self, client: Any, kind: ClientKind, cluster: ClusterInfo, alias: str, bulk: BulkSettings) -> None:
        self.client, self.kind, self.cluster, self.alias, self.bulk_settings = client, kind, cluster, alias, bulk

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> SearchSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the index and its alias -------------------------------------------------------------------

    def physical_index(self, mapping_version: int) -> str:
        return f"{self.alias}-v{mapping_version}"

    def ensure_index(self, mapping: dict, mapping_version: int) -> str:
        """`<alias>-v<N>` with the package's mapping, created if missing; returns its name.

        Fields the mapping gained since the index was created (a new text or timestamp column) are added;
        a changed type is refused by the cluster, which is the signal to bump MAPPING_VERSION. The alias
        is created on this index when it does not exist; when it points at an older version it is left
        there until `swap_alias` (after a reindex or a backfill), so readers never see a half-filled index.
        """
        physical = self.physical_index(mapping_version)
        self.ensure_physical(physical, mapping)
        if not self.client.indices.exists_alias(name=self.alias):
            self.client.indices.put_alias(index=physical, name=self.alias, body={"is_write_index": True})
        return physical

    def ensure_physical(self, name: str, mapping: dict, settings: dict | None = None) -> None:
        if self.client.indices.exists(index=name):
            self.client.indices.put_mapping(index=name, body={"properties": mapping["properties"]})
            return
        body = {"mappings": mapping, **({"settings": settings} if settings else {})}
        try:
            self.client.indices.create(index=name, body=body)
        except self.kind.api_error as error:
            if error_type(error) != "resource_already_exists_exception":  # another run created it meanwhile
                raise

    def alias_targets(self) -> list[str]:
        """The physical indices readers of the alias see now."""
        if not self.client.indices.exists_alias(name=self.alias):
            return []
        return sorted(self.client.indices.get_alias(name=self.alias))

    def swap_alias(self, mapping_version: int) -> None:
        """Point the alias at `<alias>-v<N>` only, in one atomic request: readers switch from the old index
        to the new one between two searches, never seeing both or neither."""
        actions = [{"remove": {"index": old, "alias": self.alias}} for old in self.alias_targets()]
        new = {"index": self.physical_index(mapping_version), "alias": self.alias, "is_write_index": True}
        self.client.indices.update_aliases(body={"actions": [*actions, {"add": new}]})

    # -- reading and deleting ------------------------------------------------------------------------

    def refresh(self, index: str) -> None:
        self.client.indices.refresh(index=index)

    def count(self, index: str, query: dict) -> int:
        return int(self.client.count(index=index, body={"query": query})["count"])

    def count_by(self, index: str, query: dict, field_name: str, size: int = 10) -> tuple[int, dict[str, int]]:
        """Documents matching `query` (exact total), and how many of them hold each value of `field_name`."""
        body = {"query": query, "size": 0, "track_total_hits": True,
                "aggs": {"by": {"terms": {"field": field_name, "size": size}}}}
        found = self.client.search(index=index, body=body)
        buckets = found["aggregations"]["by"]["buckets"]
        return int(found["hits"]["total"]["value"]), {bucket["key"]: bucket["doc_count"] for bucket in buckets}

    def delete_matching(self, index: str, query: dict) -> int:
        """Delete what `query` matches as of the last refresh; a document written since is left alone."""
        answer = self.client.delete_by_query(index=index, body={"query": query}, refresh=True, conflicts="proceed")
        return int(answer.get("deleted", 0))

    # -- single documents, for leases ---------------------------------------------------------------

    def create_document(self, index: str, doc_id: str, source: dict) -> tuple[int, int] | None:
        """Create a document that must not exist: its (seq_no, primary_term), or None if it exists."""
        try:
            written = self.client.index(index=index, id=doc_id, body=source, op_type="create", refresh=True)
        except self.kind.conflict:
            return None
        return written["_seq_no"], written["_primary_term"]

    def read_document(self, index: str, doc_id: str) -> tuple[dict, int, int] | None:
        try:
            found = self.client.get(index=index, id=doc_id)
        except self.kind.not_found:
            return None
        return found["_source"], found["_seq_no"], found["_primary_term"]

    def replace_document(
        self, index: str, doc_id: str, source: dict, version: tuple[int, int]
    ) -> tuple[int, int] | None:
        """Overwrite a document only if it is still at `version` (seq_no, primary_term); None if it moved on."""
        try:
            written = self.client.index(index=index, id=doc_id, body=source, refresh=True,
                                        if_seq_no=version[0], if_primary_term=version[1])
        except (self.kind.conflict, self.kind.not_found):
            return None
        return written["_seq_no"], written["_primary_term"]

    def delete_document(self, index: str, doc_id: str, version: tuple[int, int]) -> None:
        """Delete a document if it is still at `version`; a document that moved on or is gone is left as it is."""
        try:
            self.client.delete(index=index, id=doc_id, refresh=True, if_seq_no=version[0], if_primary_term=version[1])
        except (self.kind.conflict, self.kind.not_found):
            pass

    # -- bulk loads ----------------------------------------------------------------------------------

    def bulk_index(
        self, parts: Sequence[Part], actions_of: Callable[[Part], Iterable[dict]], stop: threading.Event | None = None
    ) -> BulkOutcome:
        """Send the actions of every part (e.g. one file each) with `parallel_requests` workers.

        Each worker runs the client's `streaming_bulk` over the parts it takes from a shared queue, so
        requests are cut by count (`chunk_size`) and bytes (`max_chunk_bytes`), and documents (or whole
        requests) refused with 429 are sent again with exponential backoff, up to `max_retries` times.
        `parallel_bulk` would be simpler but never retries. Per-item errors are collected, never raised: one
        bad document does not stop the others. A worker that cannot go on (connection lost, unreadable part)
        stops the others taking new parts; so does `stop` (a lease lost).
        """
        settings = self.bulk_settings
        outcome = BulkOutcome()
        pending: queue.SimpleQueue = queue.SimpleQueue()
        for part in parts:
            pending.put(part)
        stop = stop or threading.Event()
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
                for _, item in self.kind.helpers.streaming_bulk(
                    self.client, actions(sent), chunk_size=settings.chunk_size,
                    max_chunk_bytes=settings.max_chunk_bytes, max_retries=settings.max_retries,
                    initial_backoff=settings.initial_backoff_seconds, max_backoff=settings.max_backoff_seconds,
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

        threads = [threading.Thread(target=worker, name=f"bulk-{i}") for i in range(settings.parallel_requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if stop.is_set() and outcome.error is None and not pending.empty():
            outcome.error = "stopped before every part was sent"
        outcome.seconds = time.perf_counter() - started
        return outcome


@dataclass(frozen=True)
class BulkSettings:
    chunk_size: int
    max_chunk_bytes: int
    parallel_requests: int
    max_retries: int
    initial_backoff_seconds: float
    max_backoff_seconds: float


def error_type(error: Exception) -> str | None:
    """The cluster's error type (`resource_already_exists_exception`...) of either client's exception."""
    return getattr(error, "error", None)


@dataclass
class BulkOutcome:
    """What a bulk load did: documents sent, those the cluster refused and why."""

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
