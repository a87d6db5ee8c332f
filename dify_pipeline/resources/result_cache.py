"""What Dify answered, stored as it arrives: the pay-once cache and the crash checkpoint in one table.

An answer is stored whether or not it keeps the data contract (categories, types): the step judges it when it
builds the day's rows, so a contract failure costs nothing to judge again, and a new category list re-judges
every stored answer for free. Runs that failed inside Dify are not stored (they may be retried). A record whose
cache key is stored is never sent again, so a re-run or a resumed crash pays only for what is missing (unless the
contract re-asks answers of another app version than the day's: `store(..., replace=True)` then overwrites). What
goes in and comes out is the client's own `DifyResult`. Any SQLAlchemy database works: SQLite on one machine,
PostgreSQL when runs spread out.

Writes go through one writer thread that commits in groups (every `commit_interval_seconds`, or sooner when a
group is full), so the event loop never waits for a COMMIT. The window an answer can be lost in on a `kill -9`
is the time between its arrival and the commit of its group: at most one interval plus one commit.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from dify_pipeline.resources.cache_database import cache_database_engine
from dify_pipeline.resources.dify.protocol import DifyResult

__all__ = ["RESULTS", "CacheWriteError", "ResultCache", "ResultCacheSession", "cache_database_engine"]

_metadata = sa.MetaData()
RESULTS = sa.Table(
    "dify_results",
    _metadata,
    sa.Column("cache_key", sa.String(64), primary_key=True),
    sa.Column("app_identity", sa.String(64), nullable=False),
    sa.Column("cache_version", sa.String(64), nullable=False),
    sa.Column("outputs_json", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("workflow_id", sa.String(64)),
    sa.Column("total_tokens", sa.BigInteger),
    sa.Column("total_price", sa.Float),
    sa.Column("currency", sa.String(8)),
    sa.Column("latency_ms", sa.Float),
    sa.Column("attempts", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger),  # added later: _add_missing_columns gives older tables them
    sa.Column("completion_tokens", sa.BigInteger),
)
# The attempts of records without an answer yet live in resources/run_journal.py (table dify_attempts).
# What a lookup returns: not created_at (a date parsed per row for nothing) nor the key's own parts.
_ANSWER_COLUMNS = [RESULTS.c[name] for name in (
    "cache_key", "outputs_json", "run_id", "workflow_id", "total_tokens", "total_price", "currency", "latency_ms",
    "attempts", "prompt_tokens", "completion_tokens")]


class CacheWriteError(RuntimeError):
    """The cache could not store answers (disk full, database gone): the run stops rather than pay unrecorded."""


class ResultCache(dg.ConfigurableResource):
    """Where paid answers live. Turning it off (`enabled=False`) means every run pays for every record."""

    url: str = Field(description="SQLAlchemy URL of the cache database.")
    enabled: bool = True
    commit_interval_seconds: float = Field(
        default=0.02, ge=0, le=1.0,
        description="Answers arriving within this interval are committed together (the kill -9 window).",
    )

    def open(self) -> ResultCacheSession:
        engine = cache_database_engine(self.url)
        _metadata.create_all(engine, checkfirst=True)
        _add_missing_columns(engine)
        return ResultCacheSession(engine, self.enabled, self.commit_interval_seconds)


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added to RESULTS since a cache was created (all nullable), added in place."""
    present = {column["name"] for column in sa.inspect(engine).get_columns(RESULTS.name)}
    missing = [column for column in RESULTS.c if column.name not in present]
    if not missing:
        return
    with engine.begin() as connection:
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            connection.exec_driver_sql(f"ALTER TABLE {RESULTS.name} ADD COLUMN {column.name} {kind}")


class ResultCacheSession:
    def __init__(self, engine: sa.Engine, enabled: bool, commit_interval_seconds: float = 0.02) -> None:
        self._engine = engine
        self.enabled = enabled
        self._writer = _GroupWriter(engine, commit_interval_seconds) if enabled else None

    def _rows(self, columns: list, keys: Iterable[str]) -> Iterator[sa.Row]:
        """Rows of `columns`' table whose cache_key is among `keys`, queried in chunks."""
        key_column = columns[0].table.c.cache_key
        keys = list(dict.fromkeys(keys))
        with self._engine.connect() as connection:
            for start in range(0, len(keys), 900):  # stay under every driver's parameter limit
                yield from connection.execute(sa.select(*columns).where(key_column.in_(keys[start : start + 900])))

    def known(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` hold a stored answer (reads only the keys: cheap for a whole day)."""
        return set(self.workflow_ids(keys))

    def workflow_ids(self, keys: Iterable[str]) -> dict[str, str | None]:
        """The stored answers among `keys`, each with the app version that gave it (None: not known), read
        without the answers themselves: cheap for a whole day."""
        if not self.enabled:
            return {}
        self.flush()
        return {row.cache_key: row.workflow_id
                for row in self._rows([RESULTS.c.cache_key, RESULTS.c.workflow_id], keys)}

    def lookup(self, keys: Iterable[str]) -> dict[str, DifyResult]:
        """The stored answers of `keys`, as Dify gave them (the caller judges them against the contract); each
        result's `record_key` is its cache key."""
        if not self.enabled:
            return {}
        self.flush()
        return {
            row.cache_key: DifyResult(
                record_key=row.cache_key, succeeded=True, attempts=row.attempts or 0, latency_ms=row.latency_ms,
                outputs=json.loads(row.outputs_json), run_id=row.run_id, workflow_id=row.workflow_id,
                total_tokens=row.total_tokens, total_price=row.total_price, currency=row.currency,
                prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
            )
            for row in self._rows(_ANSWER_COLUMNS, keys)
        }

    def store(self, key: str, app_identity: str, cache_version: str, result: DifyResult, *,
              replace: bool = False) -> None:
        """Queue one answer for the next group commit (never waits for the database). A key stored already keeps
        its first answer, unless `replace` (an answer asked again of the day's pinned version). Raises
        CacheWriteError when an earlier group could not be committed, ValueError for a failed run (not an answer).
        """
        if not self.enabled:
            return
        if not result.succeeded:
            raise ValueError(f"a failed run is not an answer to keep: {result.error_code}")
        self._writer.put(dict(
            cache_key=key, app_identity=app_identity, cache_version=cache_version,
            outputs_json=json.dumps(result.outputs, ensure_ascii=False), run_id=result.run_id,
            workflow_id=result.workflow_id, total_tokens=result.total_tokens, total_price=result.total_price,
            currency=result.currency, latency_ms=result.latency_ms, attempts=result.attempts,
            prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
            created_at=datetime.now(UTC),
        ), replace)

    def flush(self) -> None:
        """Return once every answer stored before the call is committed; CacheWriteError if one could not be."""
        if self._writer is not None:
            self._writer.flush()

    @property
    def committed(self) -> int:
        """Answers committed by this session so far (acknowledged: they survive a kill -9)."""
        return self._writer.committed if self._writer is not None else 0

    def close(self) -> None:
        """Commit what is queued, stop the writer, release the connections."""
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._engine.dispose()


class _GroupWriter:
    """One thread committing queued answers in groups: it sleeps `interval` after the first answer of a group, then
    commits everything queued by then in one transaction, before the next group starts. Callers only append to a
    deque: they never wake the thread per answer (each wake-up would cost the event loop a GIL hand-off)."""

    def __init__(self, engine: sa.Engine, interval: float, max_group: int = 5000, max_queued: int = 20000) -> None:
        self._engine = engine
        self._interval = interval
        self._max_group = max_group
        self._max_queued = max_queued  # bounded: a slow database slows the callers down
        self._pending: deque[tuple[dict, bool]] = deque()  # (row, replace)
        self._insert = _insert_statement(engine.dialect.name, engine.dialect.driver, replace=False)
        self._upsert = _insert_statement(engine.dialect.name, engine.dialect.driver, replace=True)
        self._wake = threading.Event()
        self._settled_changed = threading.Condition()
        self._queued = 0
        self._settled = 0  # committed or lost to an error
        self.committed = 0
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="result-cache-writer", daemon=True)
        self._thread.start()

    def put(self, values: dict, replace: bool = False) -> None:
        self._raise_if_failed()
        while len(self._pending) >= self._max_queued and self._thread.is_alive():
            time.sleep(self._interval or 0.001)
        self._queued += 1  # only the caller's thread writes it
        self._pending.append((values, replace))
        if not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        queued = self._queued  # asked from another thread, it waits for what was queued then, not for later answers
        with self._settled_changed:
            while self._settled < queued and self._thread.is_alive():
                self._wake.set()
                self._settled_changed.wait(0.5)
        self._raise_if_failed()

    def close(self) -> None:
        if self._thread.is_alive():
            self._stopping = True
            self._wake.set()
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CacheWriteError(f"the result cache could not store answers: {self._error}") from self._error

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._pending and not self._stopping:
                time.sleep(self._interval)  # let the group fill
            while self._pending:
                group = [self._pending.popleft() for _ in range(min(len(self._pending), self._max_group))]
                committed = 0
                if self._error is None:  # after a failure nothing more is written: the caller stops the run
                    try:
                        self._commit(group)
                        committed = len(group)
                    except Exception as error:  # noqa: BLE001 - handed to the caller by flush/put
                        self._error = error
                with self._settled_changed:
                    self.committed += committed
                    self._settled += len(group)
                    self._settled_changed.notify_all()
                if not self._stopping:
                    break  # the rest is the next group, after its own interval
            if self._pending:
                self._wake.set()
            elif self._stopping:
                return

    def _commit(self, group: list[tuple[dict, bool]]) -> None:
        inserts = [values for values, replace in group if not replace]
        replaces = [values for values, replace in group if replace]  # after the inserts: a replacement wins
        with self._engine.begin() as connection:
            for rows, statement, replace in ((inserts, self._insert, False), (replaces, self._upsert, True)):
                if not rows:
                    continue
                if statement is not None:
                    _execute_many(connection, statement, rows)
                    continue
                for values in rows:  # another database: one row at a time
                    with connection.begin_nested():
                        if replace:
                            connection.execute(sa.delete(RESULTS).where(RESULTS.c.cache_key == values["cache_key"]))
                        try:
                            with connection.begin_nested():
                                connection.execute(sa.insert(RESULTS).values(**values))
                        except sa.exc.IntegrityError:  # a duplicate key is another run's identical answer
                            pass


_COLUMNS = [column.name for column in RESULTS.c]


def _execute_many(connection: sa.Connection, statement: str, group: list[dict]) -> None:
    """The group's rows in one statement through the driver itself: SQLAlchemy's per-row parameter processing
    cost more CPU than the database's work (and the writer shares the GIL with the event loop)."""
    postgres = connection.dialect.name == "postgresql"
    rows = [tuple(values[name] for name in _COLUMNS) for values in group]
    if not postgres:  # stored as SQLAlchemy's SQLite DateTime stores it (naive UTC text), so it reads it back
        at = _COLUMNS.index("created_at")
        rows = [(*row[:at], row[at].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), *row[at + 1:])
                for row in rows]
    cursor = connection.connection.driver_connection.cursor()
    try:
        if postgres:
            from psycopg2.extras import execute_values

            execute_values(cursor, statement, rows, page_size=len(rows))
        else:
            cursor.executemany(statement, rows)
    finally:
        cursor.close()


def _insert_statement(dialect: str, driver: str, replace: bool) -> str | None:
    """INSERT ... ON CONFLICT where the database has it: two runs answering the same inputs at once (a backfill)
    store the first answer, without an error; with `replace`, the new answer overwrites the stored one."""
    names = ", ".join(_COLUMNS)
    on_conflict = "DO NOTHING"
    if replace:
        on_conflict = "DO UPDATE SET " + ", ".join(f"{name} = excluded.{name}" for name in _COLUMNS
                                                   if name != "cache_key")
    if dialect == "sqlite" and driver == "pysqlite":
        marks = ", ".join("?" for _ in _COLUMNS)
        return f"INSERT INTO {RESULTS.name} ({names}) VALUES ({marks}) ON CONFLICT (cache_key) {on_conflict}"
    if dialect == "postgresql" and driver == "psycopg2":
        return f"INSERT INTO {RESULTS.name} ({names}) VALUES %s ON CONFLICT (cache_key) {on_conflict}"
    return None
