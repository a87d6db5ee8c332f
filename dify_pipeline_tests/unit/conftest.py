"""Fixtures shared by the unit tests that also run on PostgreSQL (the cache, the journal, the day versions)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_database_url():
    """A fresh, empty database on the machine's PostgreSQL, dropped afterwards. No PostgreSQL is a failure, not a
    skip: `.ci/run` starts it, and a test never passes because a service was missing."""
    name = f"unit_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    yield f"{POSTGRES_SERVER}/{name}"
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()
