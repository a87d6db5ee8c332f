"""A publishing step's hold on its day, kept in the search cluster itself.

Two runs may publish the same day at once (two CLI runs, a backfill beside the schedule, a second machine):
each step first takes the day's lease, a document created with `op_type=create` in the lease index, so only
one step at a time reads the day's stage and replaces what is published. The holder renews it while it works,
with conditional writes (`if_seq_no`/`if_primary_term`); another step waits, and takes over a lease whose
holder stopped renewing it (a killed run) once it has run out. A holder that finds its lease taken stops
before it deletes anything.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from dify_pipeline.resources.search.sink import SearchSink

LEASE_MAPPING = {"dynamic": False, "properties": {"holder": {"type": "keyword"}, "expires_at": {"type": "long"}}}
POLL_SECONDS = 1.0  # how often a waiting step looks again


class LeaseUnavailable(Exception):
    """The day stayed held by another run for longer than the step may wait, or the hold was lost."""


def lease_index(alias: str) -> str:
    """Beside the alias, under a name its wildcard (`<alias>*`) does not match."""
    return f"dify_pipeline_leases-{alias}"


def may_take(current: dict, holder: str, now_ms: int) -> bool:
    """A held lease can be taken over by its own holder (a retried step) or once it ran out."""
    return current.get("holder") == holder or int(current.get("expires_at", 0)) <= now_ms


def _now_ms() -> int:
    return int(time.time() * 1000)


class DayLease:
    """`with DayLease(...)`: held inside the block, renewed in the background; `confirm()` before destroying."""

    def __init__(self, sink: SearchSink, name: str, holder: str, seconds: float, wait_seconds: float,
                 on_wait: Callable[[str], None] = lambda holder: None) -> None:
        self.sink, self.name, self.holder = sink, name, holder
        self.seconds, self.wait_seconds, self.on_wait = seconds, wait_seconds, on_wait
        self.index = lease_index(sink.alias)
        self.lost = threading.Event()  # set when the hold cannot be renewed: stop writing
        self._version: tuple[int, int] | None = None
        self._expires_ms = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> DayLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _source(self) -> dict:
        return {"holder": self.holder, "expires_at": _now_ms() + int(self.seconds * 1000)}

    def acquire(self) -> None:
        self.sink.ensure_physical(self.index, LEASE_MAPPING, settings={"number_of_shards": 1})
        deadline = time.monotonic() + self.wait_seconds
        waiting_for = None
        while True:
            source = self._source()
            version = self.sink.create_document(self.index, self.name, source)
            if version is None:
                found = self.sink.read_document(self.index, self.name)
                if found is None:
                    continue  # released between the two requests
                current, *current_version = found
                if may_take(current, self.holder, _now_ms()):
                    version = self.sink.replace_document(self.index, self.name, source, tuple(current_version))
                    if version is None:
                        continue  # someone else took it first
                elif time.monotonic() >= deadline:
                    raise LeaseUnavailable(f"{self.name} is still being published by {current.get('holder')} after "
                                           f"{self.wait_seconds:.0f} s of waiting: run the day again once it is done")
                else:
                    if current.get("holder") != waiting_for:
                        waiting_for = current.get("holder")
                        self.on_wait(str(waiting_for))
                    time.sleep(POLL_SECONDS * random.uniform(0.5, 1.5))
                    continue
            self._version, self._expires_ms = version, source["expires_at"]
            break
        self._heartbeat = threading.Thread(target=self._renew_until_done, name=f"lease-{self.name}", daemon=True)
        self._heartbeat.start()

    def renew(self) -> bool:
        """Extend the hold; False (and `lost` set) when another run holds the day now."""
        with self._lock:
            if self.lost.is_set() or self._version is None:
                return False
            source = self._source()
            try:
                version = self.sink.replace_document(self.index, self.name, source, self._version)
            except Exception:  # the cluster busy or away for a moment: the hold lasts until it expires
                if _now_ms() >= self._expires_ms:
                    self.lost.set()
                return not self.lost.is_set()
            if version is None:
                self.lost.set()
                return False
            self._version, self._expires_ms = version, source["expires_at"]
            return True

    def confirm(self) -> None:
        """Renew now, or raise: call it right before replacing what another holder may have written."""
        if not self.renew() or _now_ms() >= self._expires_ms:
            raise LeaseUnavailable(f"{self.name}: this run's hold on the day ran out and another run may be "
                                   "publishing it; nothing was deleted: run the day again")

    def _renew_until_done(self) -> None:
        while not self._done.wait(self.seconds / 3):
            if not self.renew() and self.lost.is_set():
                return

    def release(self) -> None:
        self._done.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=self.seconds)
        with self._lock:
            if self._version is not None and not self.lost.is_set():
                try:
                    self.sink.delete_document(self.index, self.name, self._version)
                except Exception:  # it runs out by itself
                    pass
            self._version = None
