"""The attempt journal: committed before a request leaves, read back by the next run, forgotten once answered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from dify_pipeline.resources.run_journal import RunJournal


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request, tmp_path):
    """The journal on both databases it runs on: PostgreSQL has its own one-statement writes."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.sqlite'}"
    return request.getfixturevalue("postgres_database_url")


def test_an_attempt_is_committed_when_sending_returns_and_seen_by_another_connection(journal_url):
    url = journal_url
    journal = RunJournal.open(url)
    asyncio.run(journal.sending("k1", "dify-pipeline:k1"))
    other = sa.create_engine(url)  # as the next process would read it after a kill -9
    with other.connect() as connection:
        assert connection.execute(sa.text("SELECT \"user\" FROM dify_attempts WHERE cache_key='k1'")).scalar() == (
            "dify-pipeline:k1")
    other.dispose()
    journal.close()


def test_attempts_started_together_share_commits_and_each_waits_for_its_own(journal_url):
    journal = RunJournal.open(journal_url)
    commits = []
    original = journal._commit
    journal._commit = lambda batch: (commits.append(len(batch)), original(batch))

    async def many():
        await asyncio.gather(*(journal.sending(f"k{i}", f"u{i}") for i in range(50)))

    asyncio.run(many())
    assert sum(commits) == 50 and len(commits) < 50
    assert set(journal.pending(f"k{i}" for i in range(60))) == {f"k{i}" for i in range(50)}
    journal.close()


def test_a_run_id_announced_later_is_kept_and_forget_drops_the_attempt(journal_url):
    journal = RunJournal.open(journal_url)

    async def attempt():
        await journal.sending("k", "u")
        await journal.run_started("k", "run-1")

    asyncio.run(attempt())
    (entry,) = journal.pending(["k"]).values()
    assert (entry.user, entry.run_id) == ("u", "run-1")
    journal.forget(["k"])
    assert journal.pending(["k"]) == {}
    journal.close()


def test_one_group_keeps_the_order_of_its_writes_and_the_last_attempt_of_a_record(journal_url):
    journal = RunJournal.open(journal_url)
    journal._commit([
        ("sent", {"cache_key": "a", "user": "u-a", "sent_at": datetime(2026, 1, 1, tzinfo=UTC)}),
        ("sent", {"cache_key": "b", "user": "u-b", "sent_at": datetime(2026, 1, 1, tzinfo=UTC)}),
        ("run", {"cache_key": "a", "run_id": "run-a1"}),
        ("sent", {"cache_key": "a", "user": "u-a", "sent_at": datetime(2026, 1, 2, tzinfo=UTC)}),  # a retry
        ("sent", {"cache_key": "b", "user": "u-b", "sent_at": datetime(2026, 1, 3, tzinfo=UTC)}),
        ("run", {"cache_key": "b", "run_id": "run-b2"}),
    ])
    pending = journal.pending(["a", "b"])
    assert (pending["a"].run_id, pending["a"].sent_at.day) == (None, 2)  # the retry's attempt, not the first run's
    assert (pending["b"].run_id, pending["b"].sent_at.day) == ("run-b2", 3)
    journal.close()


def test_forget_drops_every_given_attempt_however_many(journal_url):
    journal = RunJournal.open(journal_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    journal._commit([("sent", {"cache_key": f"k{i}", "user": f"u{i}", "sent_at": at}) for i in range(2500)])
    journal.forget(f"k{i}" for i in range(2000))
    assert set(journal.pending(f"k{i}" for i in range(2500))) == {f"k{i}" for i in range(2000, 2500)}
    journal.close()
