"""The published workflow version each day is pinned to, so a republish mid-day or mid-backfill never mixes versions.

A day is pinned to the version that answered its first record; every later request of that day runs that
version by its id (POST /workflows/{workflow_id}/run). The first pin wins: two runs of one day that race
both read back the same version. A new `cache_version` (a new prompt) pins the day afresh, so bumping it re-answers
a day with the version published now. It lives in the result cache's database, in its own table.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa

from dify_pipeline.resources.cache_database import cache_database_engine

_metadata = sa.MetaData()
DAY_VERSIONS = sa.Table(
    "dify_day_versions",
    _metadata,
    sa.Column("enrichment", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("app_identity", sa.String(64), primary_key=True),  # DifyResource.app_identity(): never the key
    sa.Column("cache_version", sa.String(64), primary_key=True),
    sa.Column("workflow_id", sa.String(64), nullable=False),
    sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
)


class DayVersions:
    """`pin` a day's version once, read it back with `pinned`; `unpin` to let the next run choose again."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    @classmethod
    def open(cls, url: str) -> DayVersions:
        engine = cache_database_engine(url)
        inspector = sa.inspect(engine)
        if inspector.has_table(DAY_VERSIONS.name) and "cache_version" not in {
                column["name"] for column in inspector.get_columns(DAY_VERSIONS.name)}:
            # A table of the client-only days, before the step pinned anything: its rows were never used.
            DAY_VERSIONS.drop(engine)
        _metadata.create_all(engine, checkfirst=True)
        return cls(engine)

    def pinned(self, enrichment: str, day: date, app_identity: str, *, cache_version: str) -> str | None:
        """The workflow_id the day is pinned to, or None when nothing answered it yet."""
        with self._engine.connect() as connection:
            return connection.execute(sa.select(DAY_VERSIONS.c.workflow_id).where(
                *_day(enrichment, day, app_identity, cache_version))).scalar()

    def pin(self, enrichment: str, day: date, app_identity: str, workflow_id: str, *, cache_version: str) -> str:
        """Pin the day to `workflow_id` unless it is pinned already; returns the version it is pinned to."""
        row = {"enrichment": enrichment, "day": day, "app_identity": app_identity, "cache_version": cache_version,
               "workflow_id": workflow_id, "pinned_at": datetime.now(UTC)}
        try:
            with self._engine.begin() as connection:
                connection.execute(sa.insert(DAY_VERSIONS), row)
        except sa.exc.IntegrityError:  # another run pinned it first: its version wins
            pass
        winner = self.pinned(enrichment, day, app_identity, cache_version=cache_version)
        assert winner is not None  # the row exists: ours, or the one that beat ours
        return winner

    def unpin(self, enrichment: str, day: date, app_identity: str, *, cache_version: str) -> None:
        """Forget the day's version (e.g. to re-enrich a day with the version published now)."""
        with self._engine.begin() as connection:
            connection.execute(sa.delete(DAY_VERSIONS).where(*_day(enrichment, day, app_identity, cache_version)))

    def close(self) -> None:
        self._engine.dispose()


def _day(enrichment: str, day: date, app_identity: str, cache_version: str) -> tuple:
    table = DAY_VERSIONS.c
    return (table.enrichment == enrichment, table.day == day, table.app_identity == app_identity,
            table.cache_version == cache_version)
