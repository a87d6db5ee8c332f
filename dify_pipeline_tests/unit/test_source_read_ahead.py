"""The export fetches batches in a thread ahead of the Parquet writer: same batches, same errors, and a stop
when the writer stops."""

import threading
import time

import pytest

from dify_pipeline.resources.source_database import read_ahead


def counting(count: int, fail_at: int | None = None, log: list | None = None):
    try:
        for n in range(count):
            if n == fail_at:
                raise RuntimeError(f"fetch {n} failed")
            yield n
    finally:
        if log is not None:
            log.append(("closed", threading.current_thread().name))


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_every_batch_arrives_in_order(depth):
    assert list(read_ahead(counting(50), depth)) == list(range(50))


def test_an_error_of_the_fetch_is_raised_in_the_consumer_after_the_batches_before_it():
    received = []
    with pytest.raises(RuntimeError, match="fetch 7 failed"):
        for batch in read_ahead(counting(20, fail_at=7), 2):
            received.append(batch)
    assert received == list(range(7))


def test_the_fetch_runs_ahead_in_another_thread_but_at_most_depth_batches():
    produced = []

    def batches():
        for n in range(10):
            produced.append(n)
            yield n

    stream = read_ahead(batches(), 2)
    assert next(stream) == 0
    time.sleep(0.3)
    assert len(produced) <= 1 + 2 + 1  # the one taken, the queue's two, one waiting to be handed over
    assert list(stream) == list(range(1, 10))


def test_stopping_early_stops_the_fetch_and_closes_it():
    log = []
    stream = read_ahead(counting(1_000_000, log=log), 2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    deadline = time.monotonic() + 5
    while not log and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log == [("closed", "export-read-ahead")]
