import pytest

from dify_pipeline.infer.cache_key import cache_key
from dify_pipeline.resources.dify import DifyResult
from dify_pipeline.resources.result_cache import ResultCache

APP = "app-3f2a"
VERSION = "v1"


def result(n: int = 1, **overrides) -> DifyResult:
    """The client's answer for the input of `key(n)` (the step's record is the cache key)."""
    values = dict(
        record_key=key(n), succeeded=True,
        outputs={"category": "物流问题", "summary": "包裹三天未到。", "sentiment": "negative"},
        run_id="run-1", workflow_id="wf-1", total_tokens=321, total_price=0.0012, currency="USD",
        latency_ms=812.5, attempts=2,
    )
    return DifyResult(**{**values, **overrides})


def key(n: int) -> str:
    return cache_key(APP, VERSION, {"subject": f"ticket {n}"})


@pytest.fixture
def cache_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/state/result_cache.sqlite"


@pytest.fixture
def session(cache_url):
    opened = ResultCache(url=cache_url).open()
    yield opened
    opened.close()


def test_a_stored_result_is_found_with_everything_it_held(session):
    stored = result()
    session.store(key(1), APP, VERSION, stored)
    assert session.lookup([key(1)]) == {key(1): stored}


def test_a_completion_answer_stored_as_text_comes_back_as_text(session):
    stored = result(outputs='```json\n{"category": "其他"}\n```', run_id=None, workflow_id=None, total_price=None)
    session.store(key(1), APP, VERSION, stored)
    assert session.lookup([key(1)])[key(1)] == stored


def test_lookup_returns_only_the_keys_that_were_stored(session):
    session.store(key(1), APP, VERSION, result())
    assert set(session.lookup([key(1), key(2), key(1)])) == {key(1)}
    assert session.lookup([]) == {}


def test_storing_a_key_again_keeps_the_first_answer_without_error(session):
    """Two runs answering the same inputs at once (a backfill) must not crash on the unique key."""
    session.store(key(1), APP, VERSION, result(attempts=1))
    session.store(key(1), APP, VERSION, result(attempts=5, run_id="run-2"))
    found = session.lookup([key(1)])[key(1)]
    assert (found.attempts, found.run_id) == (1, "run-1")


def test_replace_overwrites_the_stored_answer_and_a_plain_store_still_keeps_the_first(session):
    """An answer asked again of the day's pinned version replaces the other version's."""
    session.store(key(1), APP, VERSION, result(workflow_id="wf-old", run_id="run-1"))
    session.store(key(1), APP, VERSION, result(workflow_id="wf-new", run_id="run-2"), replace=True)
    session.store(key(1), APP, VERSION, result(workflow_id="wf-other", run_id="run-3"))
    assert session.lookup([key(1)])[key(1)] == result(workflow_id="wf-new", run_id="run-2")
    assert session.workflow_ids([key(1), key(2)]) == {key(1): "wf-new"}


def test_replace_on_postgresql_overwrites(postgres_cache_url):
    session = ResultCache(url=postgres_cache_url).open()
    try:
        session.store(key(1), APP, VERSION, result(workflow_id="wf-old"))
        session.flush()
        session.store(key(1), APP, VERSION, result(workflow_id="wf-new", attempts=1), replace=True)
        found = session.lookup([key(1)])[key(1)]
        assert (found.workflow_id, found.attempts) == ("wf-new", 1)
    finally:
        session.close()


def test_a_failed_run_is_not_stored(session):
    with pytest.raises(ValueError, match="failed run"):
        session.store(key(1), APP, VERSION, result(succeeded=False, error_code="run_failed", outputs=None))


def test_rows_written_before_the_cache_held_client_results_read_back_as_them(cache_url):
    """The table's layout did not change: a row stored by an earlier version reads back as a DifyResult."""
    import json
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from dify_pipeline.resources.result_cache import RESULTS

    ResultCache(url=cache_url).open().close()
    engine = sa.create_engine(cache_url)
    with engine.begin() as connection:
        connection.execute(sa.insert(RESULTS).values(
            cache_key=key(1), app_identity=APP, cache_version=VERSION, outputs_json=json.dumps({"category": "其他"}),
            run_id="run-9", workflow_id=None, total_tokens=10, total_price=None, currency=None, latency_ms=None,
            attempts=None, created_at=datetime.now(UTC)))
    engine.dispose()
    session = ResultCache(url=cache_url).open()
    try:
        assert session.lookup([key(1)])[key(1)] == DifyResult(
            record_key=key(1), succeeded=True, attempts=0, outputs={"category": "其他"}, run_id="run-9",
            total_tokens=10)
    finally:
        session.close()


def test_lookup_of_more_keys_than_one_query_may_bind_finds_them_all(session):
    stored = [key(n) for n in range(950)]
    for k in stored:
        session.store(k, APP, VERSION, result(record_key=k, total_tokens=int(k[:6], 16)))
    asked = stored + [key(n) for n in range(950, 2000)]
    found = session.lookup(asked)
    assert set(found) == set(stored)
    assert all(found[k].total_tokens == int(k[:6], 16) for k in stored)


def test_a_second_session_sees_what_the_first_stored(cache_url):
    first = ResultCache(url=cache_url).open()
    first.store(key(1), APP, VERSION, result())
    first.close()
    second = ResultCache(url=cache_url).open()
    try:
        assert second.lookup([key(1)]) == {key(1): result()}
    finally:
        second.close()


def test_a_disabled_cache_stores_nothing(cache_url):
    disabled = ResultCache(url=cache_url, enabled=False).open()
    disabled.store(key(1), APP, VERSION, result())
    disabled.close()
    enabled = ResultCache(url=cache_url).open()
    try:
        assert enabled.lookup([key(1)]) == {}
    finally:
        enabled.close()


def test_a_disabled_cache_finds_nothing_even_when_results_are_stored(cache_url):
    enabled = ResultCache(url=cache_url).open()
    enabled.store(key(1), APP, VERSION, result())
    enabled.close()
    disabled = ResultCache(url=cache_url, enabled=False).open()
    try:
        assert disabled.lookup([key(1)]) == {}
    finally:
        disabled.close()


# -- group commit ------------------------------------------------------------------------------------


def test_answers_are_committed_in_groups_off_the_caller_thread(cache_url):
    """Storing never waits for a COMMIT: 500 answers stored at once take far fewer transactions."""
    import sqlalchemy as sa

    session = ResultCache(url=cache_url, commit_interval_seconds=0.05).open()
    commits = []
    sa.event.listen(session._engine, "commit", lambda connection: commits.append(1))
    try:
        for n in range(500):
            session.store(key(n), APP, VERSION, result(n))
        session.flush()
        assert session.committed == 500
        assert 1 <= len(commits) <= 25
        assert len(session.lookup([key(n) for n in range(500)])) == 500
    finally:
        session.close()


def test_close_commits_what_is_still_queued(cache_url):
    session = ResultCache(url=cache_url, commit_interval_seconds=1.0).open()
    session.store(key(1), APP, VERSION, result())
    session.close()
    reopened = ResultCache(url=cache_url).open()
    try:
        assert set(reopened.lookup([key(1)])) == {key(1)}
    finally:
        reopened.close()


def test_a_write_the_database_refuses_stops_the_caller(cache_url):
    """A full disk or a lost database must not go unnoticed while the run keeps paying."""
    import sqlalchemy as sa

    from dify_pipeline.resources.result_cache import CacheWriteError

    session = ResultCache(url=cache_url).open()
    try:
        with session._engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE dify_results"))
        session.store(key(1), APP, VERSION, result())
        with pytest.raises(CacheWriteError, match="could not store"):
            session.flush()
        with pytest.raises(CacheWriteError):
            session.store(key(2), APP, VERSION, result())
    finally:
        with pytest.raises(CacheWriteError):
            session.close()


def test_known_names_only_the_stored_keys(session):
    session.store(key(1), APP, VERSION, result())
    assert session.known([key(1), key(2)]) == {key(1)}


def test_token_split_is_kept(session):
    stored = result(prompt_tokens=300, completion_tokens=21)
    session.store(key(1), APP, VERSION, stored)
    assert session.lookup([key(1)])[key(1)] == stored


def test_a_cache_created_before_the_token_split_gains_its_columns(cache_url):
    import sqlalchemy as sa

    from dify_pipeline.resources.result_cache import RESULTS

    engine = sa.create_engine(cache_url.replace("/state/", "/"))
    old = sa.MetaData()
    sa.Table("dify_results", old, *[sa.Column(c.name, c.type, primary_key=c.primary_key)
                                    for c in RESULTS.c if c.name not in ("prompt_tokens", "completion_tokens")])
    old.create_all(engine)
    engine.dispose()
    session = ResultCache(url=cache_url.replace("/state/", "/")).open()
    try:
        session.store(key(1), APP, VERSION, result(prompt_tokens=5))
        assert session.lookup([key(1)])[key(1)].prompt_tokens == 5
    finally:
        session.close()


def test_the_same_answers_twice_on_postgresql_keep_the_first(postgres_cache_url):
    first = ResultCache(url=postgres_cache_url).open()
    try:
        first.store(key(1), APP, VERSION, result(attempts=1))
        first.store(key(1), APP, VERSION, result(attempts=5))
        first.flush()
        assert first.lookup([key(1)])[key(1)].attempts == 1
    finally:
        first.close()


@pytest.fixture
def postgres_cache_url(postgres_database_url):
    return postgres_database_url


def test_the_time_an_answer_was_stored_reads_back_through_sqlalchemy(session):
    import sqlalchemy as sa

    from dify_pipeline.resources.result_cache import RESULTS

    session.store(key(1), APP, VERSION, result())
    session.flush()
    with session._engine.connect() as connection:
        [stored_at] = connection.execute(sa.select(RESULTS.c.created_at)).scalars()
    assert stored_at.year >= 2026


def test_a_lookup_from_another_thread_waits_for_the_answers_stored_before_it_not_for_later_ones(cache_url):
    import threading

    import sqlalchemy as sa

    session = ResultCache(url=cache_url, commit_interval_seconds=0.01).open()
    more = iter(range(1, 10**6))

    def one_more(_connection):  # answers keep arriving: one is queued whenever a group commits
        session.store(key(next(more)), APP, VERSION, result(0))

    session.store(key(0), APP, VERSION, result(0))
    sa.event.listen(session._engine, "commit", one_more)
    found: dict = {}
    lookup = threading.Thread(target=lambda: found.update(session.lookup([key(0)])), daemon=True)
    lookup.start()
    lookup.join(5)
    sa.event.remove(session._engine, "commit", one_more)
    session.close()
    assert not lookup.is_alive()  # it waited for the group holding key(0), not for the answers to stop
    assert set(found) == {key(0)}
