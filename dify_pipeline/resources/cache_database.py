"""The database behind RESULT_CACHE_URL: one engine shared by the answers, the attempt journal and the day pins."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa


def cache_database_engine(url: str) -> sa.Engine:
    """An engine on RESULT_CACHE_URL: SQLite in WAL with synchronous=NORMAL (a commit survives the process being
    killed, not a power cut, without an fsync each); any other SQLAlchemy database as it is."""
    url = sa.make_url(url)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url)
    if url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
    sa.event.listen(engine, "connect", _sqlite_wal)
    return engine


def _sqlite_wal(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
