"""The attempt journal: every run request is written down (committed) before it is sent.

After a timeout, a cut body or a crash, the journal says which records may already have a run in Dify and
under which `user`, so the client looks the run up (GET /workflows/logs, GET /workflows/run/{id}) instead of
paying for it again. It lives in the result cache's database, in its own table.

Writes are group-committed on a worker thread: attempts that start together share one transaction, and
each waits for its own commit before its request leaves (the event loop never blocks on the database).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from dify_pipeline.resources.cache_database import cache_database_engine

_metadata = sa.MetaData()
ATTEMPTS = sa.Table(
    "dify_attempts",
    _metadata,
    sa.Column("cache_key", sa.String(64), primary_key=True),
    sa.Column("user", sa.String(255), nullable=False),  # the `user` sent with the run: Dify's end-user session id
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),  # known once a stream announced it (workflow_started)
)


@dataclass(frozen=True)
class Attempt:
    """A request sent for a record whose answer was never stored."""

    user: str
    sent_at: datetime
    run_id: str | None = None


class RunJournal:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._queue: list[tuple[str, dict, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    @classmethod
    def open(cls, url: str) -> RunJournal:
        engine = cache_database_engine(url)
        _metadata.create_all(engine, checkfirst=True)
        return cls(engine)

    # -- from the client's event loop ------------------------------------------------------------------
    async def sending(self, key: str, user: str) -> None:
        """Returns once the attempt is committed: only then may its request leave."""
        await self._write("sent", {"cache_key": key, "user": user, "sent_at": datetime.now(UTC)})

    async def run_started(self, key: str, run_id: str) -> None:
        await self._write("run", {"cache_key": key, "run_id": run_id})

    async def _write(self, kind: str, values: dict) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((kind, values, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._commit, [(kind, values) for kind, values, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiter gets the database's error
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _commit(self, batch: list[tuple[str, dict]]) -> None:
        # A few statements per group, not per attempt: consecutive writes of one kind go together, in order.
        with self._engine.begin() as connection:
            postgres = connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg2"
            for kind, group in itertools.groupby(batch, key=lambda item: item[0]):
                rows = list({values["cache_key"]: values for _, values in group}.values())  # the last per record
                if postgres:
                    _commit_postgres(connection, kind, rows)
                elif kind == "sent":
                    keys = [row["cache_key"] for row in rows]
                    for start in range(0, len(keys), 900):  # stay under every driver's parameter limit
                        connection.execute(sa.delete(ATTEMPTS).where(ATTEMPTS.c.cache_key.in_(keys[start:start + 900])))
                    connection.execute(sa.insert(ATTEMPTS), rows)
                else:
                    connection.execute(
                        sa.update(ATTEMPTS).where(ATTEMPTS.c.cache_key == sa.bindparam("key"))
                        .values(run_id=sa.bindparam("run")),
                        [{"key": row["cache_key"], "run": row["run_id"]} for row in rows],
                    )

    # -- from the step -------------------------------------------------------------------------------
    def pending(self, keys: Iterable[str]) -> dict[str, Attempt]:
        """Attempts for `keys` (records without a stored answer) made by earlier, interrupted runs."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Attempt] = {}
        with self._engine.connect() as connection:
            for start in range(0, len(keys), 900):  # stay under every driver's parameter limit
                rows = connection.execute(sa.select(ATTEMPTS).where(ATTEMPTS.c.cache_key.in_(keys[start:start + 900])))
                found.update({row.cache_key: Attempt(row.user, row.sent_at, row.run_id) for row in rows})
        return found

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the attempts of records whose outcome is final and stored (call after the cache is durable)."""
        keys = list(dict.fromkeys(keys))
        with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg2":
                with connection.connection.driver_connection.cursor() as cursor:  # the keys as one array parameter
                    cursor.execute(f"DELETE FROM {ATTEMPTS.name} WHERE cache_key = ANY(%s)", (keys,))
                return
            for start in range(0, len(keys), 900):
                connection.execute(sa.delete(ATTEMPTS).where(ATTEMPTS.c.cache_key.in_(keys[start:start + 900])))

    def close(self) -> None:
        self._engine.dispose()


def _commit_postgres(connection: sa.Connection, kind: str, rows: list[dict]) -> None:
    """One statement per group through psycopg2 itself: a round trip and SQLAlchemy's per-row work cost more
    than the database's, and every attempt waits for this commit before its request leaves."""
    from psycopg2.extras import execute_values

    with connection.connection.driver_connection.cursor() as cursor:
        if kind == "sent":  # a record sent again replaces its earlier attempt (and forgets that run's id)
            execute_values(cursor, f'INSERT INTO {ATTEMPTS.name} (cache_key, "user", sent_at, run_id) VALUES %s '
                                   'ON CONFLICT (cache_key) DO UPDATE SET "user" = EXCLUDED."user", '
                                   "sent_at = EXCLUDED.sent_at, run_id = NULL",
                           [(row["cache_key"], row["user"], row["sent_at"]) for row in rows],
                           template="(%s, %s, %s, NULL)", page_size=len(rows))
        else:
            execute_values(cursor, f"UPDATE {ATTEMPTS.name} SET run_id = v.run_id FROM (VALUES %s) AS v(cache_key, "
                                   f"run_id) WHERE {ATTEMPTS.name}.cache_key = v.cache_key",
                           [(row["cache_key"], row["run_id"]) for row in rows], page_size=len(rows))
