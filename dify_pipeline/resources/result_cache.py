"""Successful Dify results, stored as they arrive: the pay-once cache and the crash checkpoint in one table.

A record whose cache key is stored is never sent again, so a re-run or a resumed crash pays only for
what is missing. Any SQLAlchemy database works: SQLite on one machine, PostgreSQL when runs spread out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

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
)
# The attempts of records without an answer yet live in resources/run_journal.py (table dify_attempts).


@dataclass(frozen=True)
class CachedResult:
    outputs: object
    run_id: str | None
    workflow_id: str | None
    total_tokens: int | None
    total_price: float | None
    currency: str | None
    latency_ms: float | None
    attempts: int | None


class ResultCache(dg.ConfigurableResource):
    """Where paid results live. Turning it off (`enabled=False`) means every run pays for every record."""

    url: str = Field(description="SQLAlchemy URL of the cache database.")
    enabled: bool = True

    def open(self) -> "ResultCacheSession":
        url = sa.make_url(self.url)
        kwargs = {}
        if url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
            if url.database:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            with engine.begin() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        _metadata.create_all(engine, checkfirst=True)
        return ResultCacheSession(engine, self.enabled)


class ResultCacheSession:
    def __init__(self, engine: sa.Engine, enabled: bool) -> None:
        self._engine = engine
        self.enabled = enabled

    def _rows(self, columns: list, keys: Iterable[str]) -> Iterator[sa.Row]:
        """Rows of `columns`' table whose cache_key is among `keys`, queried in chunks."""
        key_column = columns[0].table.c.cache_key
        keys = list(dict.fromkeys(keys))
        with self._engine.connect() as connection:
            for start in range(0, len(keys), 900):  # stay under every driver's parameter limit
                yield from connection.execute(sa.select(*columns).where(key_column.in_(keys[start : start + 900])))

    def lookup(self, keys: Iterable[str]) -> dict[str, CachedResult]:
        if not self.enabled:
            return {}
        return {
            row.cache_key: CachedResult(
                outputs=json.loads(row.outputs_json), run_id=row.run_id, workflow_id=row.workflow_id,
                total_tokens=row.total_tokens, total_price=row.total_price, currency=row.currency,
                latency_ms=row.latency_ms, attempts=row.attempts,
            )
            for row in self._rows(list(RESULTS.c), keys)
        }

    def store(self, key: str, app_identity: str, cache_version: str, result: CachedResult) -> None:
        """Persist one successful result at once (committed), so a killed run never pays for it again."""
        if not self.enabled:
            return
        values = dict(
            cache_key=key, app_identity=app_identity, cache_version=cache_version,
            outputs_json=json.dumps(result.outputs, ensure_ascii=False), run_id=result.run_id,
            workflow_id=result.workflow_id, total_tokens=result.total_tokens, total_price=result.total_price,
            currency=result.currency, latency_ms=result.latency_ms, attempts=result.attempts,
            created_at=datetime.now(timezone.utc),
        )
        try:
            with self._engine.begin() as connection:
                connection.execute(sa.insert(RESULTS).values(**values))
        except sa.exc.IntegrityError:
            pass  # another run stored the same inputs first: same key, same answer, nothing to do

    def close(self) -> None:
        self._engine.dispose()
