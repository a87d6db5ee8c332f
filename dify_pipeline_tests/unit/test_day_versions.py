"""The day's pinned app version: first writer wins, per enrichment, day and app; and which cached answers count."""

from __future__ import annotations

import threading
from datetime import date

import pytest

from dify_pipeline.resources.day_versions import DayVersions
from dify_pipeline.resources.dify import AnswerDecision, decide_cached_answer

DAY = date(2026, 3, 1)
APP = "workflow:0123456789abcdef"
CACHE = "v1"  # the contract's cache_version


@pytest.fixture
def versions(tmp_path):
    store = DayVersions.open(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    yield store
    store.close()


def test_nothing_is_pinned_until_a_day_is_pinned(versions):
    assert versions.pinned("tickets", DAY, APP, cache_version=CACHE) is None
    assert versions.pin("tickets", DAY, APP, "v1", cache_version=CACHE) == "v1"
    assert versions.pinned("tickets", DAY, APP, cache_version=CACHE) == "v1"


def test_the_first_pin_wins_and_a_later_one_reads_it_back(versions):
    versions.pin("tickets", DAY, APP, "v1", cache_version=CACHE)
    assert versions.pin("tickets", DAY, APP, "v2", cache_version=CACHE) == "v1"
    assert versions.pinned("tickets", DAY, APP, cache_version=CACHE) == "v1"


def test_pins_are_per_enrichment_day_and_app(versions):
    versions.pin("tickets", DAY, APP, "v1", cache_version=CACHE)
    versions.pin("reviews", DAY, APP, "r1", cache_version=CACHE)
    versions.pin("tickets", date(2026, 3, 2), APP, "v2", cache_version=CACHE)
    versions.pin("tickets", DAY, "workflow:fedcba9876543210", "w1", cache_version=CACHE)
    assert versions.pinned("tickets", DAY, APP, cache_version=CACHE) == "v1"
    assert versions.pinned("reviews", DAY, APP, cache_version=CACHE) == "r1"
    assert versions.pinned("tickets", date(2026, 3, 2), APP, cache_version=CACHE) == "v2"


def test_a_new_cache_version_pins_the_day_afresh(versions):
    versions.pin("tickets", DAY, APP, "v1", cache_version=CACHE)
    assert versions.pinned("tickets", DAY, APP, cache_version="prompt-v2") is None
    assert versions.pin("tickets", DAY, APP, "v2", cache_version="prompt-v2") == "v2"
    assert versions.pinned("tickets", DAY, APP, cache_version=CACHE) == "v1"


def test_unpin_lets_the_next_run_choose_again(versions):
    versions.pin("tickets", DAY, APP, "v1", cache_version=CACHE)
    versions.unpin("tickets", DAY, APP, cache_version=CACHE)
    assert versions.pinned("tickets", DAY, APP, cache_version=CACHE) is None
    assert versions.pin("tickets", DAY, APP, "v2", cache_version=CACHE) == "v2"


def test_the_store_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    DayVersions.open(url).pin("tickets", DAY, APP, "v1", cache_version=CACHE)
    assert DayVersions.open(url).pinned("tickets", DAY, APP, cache_version=CACHE) == "v1"


def test_a_table_from_before_pins_had_a_cache_version_is_made_anew(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE dify_day_versions (enrichment VARCHAR(64), day DATE, "
                                   "app_identity VARCHAR(64), workflow_id VARCHAR(64), pinned_at DATETIME, "
                                   "PRIMARY KEY (enrichment, day, app_identity))")
    engine.dispose()
    store = DayVersions.open(url)
    assert store.pin("tickets", DAY, APP, "v1", cache_version=CACHE) == "v1"
    store.close()


@pytest.fixture
def postgres_url(postgres_database_url):
    return postgres_database_url


def test_racing_pins_on_postgresql_all_read_back_one_version(postgres_url):
    stores = [DayVersions.open(postgres_url) for _ in range(8)]
    winners: list[str] = []
    start = threading.Barrier(len(stores))

    def pin(index: int) -> None:
        start.wait()
        winners.append(stores[index].pin("tickets", DAY, APP, f"v{index}", cache_version=CACHE))

    threads = [threading.Thread(target=pin, args=(index,)) for index in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 8 and len(set(winners)) == 1
    assert stores[0].pinned("tickets", DAY, APP, cache_version=CACHE) == winners[0]
    for store in stores:
        store.close()


@pytest.mark.parametrize(("policy", "pinned", "answered_by", "decision"), [
    ("reuse", None, "v1", AnswerDecision.USE),  # nothing pinned: every answer counts
    ("reask", None, "v1", AnswerDecision.USE),
    ("reask", "v1", "v1", AnswerDecision.USE),  # the pinned version's own answer
    ("reuse", "v1", "v0", AnswerDecision.USE),  # another version's, reused for free
    ("reask", "v1", "v0", AnswerDecision.REASK),  # another version's, asked again
    ("reask", "v1", None, AnswerDecision.REASK),  # of an unknown version: not known to be the pinned one
    ("reuse", "v1", None, AnswerDecision.USE),
])
def test_a_cached_answer_is_used_or_asked_again_as_the_policy_says(policy, pinned, answered_by, decision):
    assert decide_cached_answer(policy, pinned, answered_by) is decision
