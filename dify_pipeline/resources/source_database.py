"""The source database (MySQL/MariaDB in production, SQLite in the demo), read through SQLAlchemy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa
from pydantic import Field

from dify_pipeline.extract.query import (
    arrow_schema,
    arrow_type,
    day_query,
    local_naive,
    to_record_batch,
    validate_identifier,
)


class SourceDatabaseError(RuntimeError):
    """The source cannot be read; the message says what to fix and never holds the password."""


class SourceDatabase(dg.ConfigurableResource):
    """One table of tickets, exported a day at a time in streamed batches."""

    url: str = Field(description="SQLAlchemy URL, e.g. mysql+pymysql://user:pass@host:3306/db or sqlite:///file.db.")
    table: str = "tickets"
    source_timezone: str = Field(default="UTC", description="Time zone of the naive DATETIME values stored.")
    batch_size: int = Field(default=10_000, gt=0)
    connect_timeout_seconds: int = 10

    def _engine(self) -> sa.Engine:
        url = sa.make_url(self.url)
        connect_args = {"connect_timeout": self.connect_timeout_seconds} if url.get_backend_name() == "mysql" else {}
        if url.get_backend_name() == "mysql":
            connect_args["charset"] = "utf8mb4"
        return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=False)

    def safe_url(self) -> str:
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def stream_day(
        self, timestamp_column: str, window_start: datetime, window_end: datetime
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The schema of the table and an iterator of record batches of its rows whose `timestamp_column`
        lies in [start, end).

        Values go to the server as bound parameters; table and column names are validated identifiers.
        """
        validate_identifier(self.table, "table")
        validate_identifier(timestamp_column, "timestamp_column")
        engine = self._engine()
        try:
            table = sa.Table(self.table, sa.MetaData(), autoload_with=engine)
        except sa.exc.NoSuchTableError:
            engine.dispose()
            raise SourceDatabaseError(f"table {self.table!r} not found in source database {self.safe_url()}") from None
        except sa.exc.DBAPIError as error:
            engine.dispose()
            raise SourceDatabaseError(
                f"cannot read source database {self.safe_url()}: {_reason(error)}. "
                "Check SOURCE_DATABASE_URL (host, port, user, password, database) and that the server is up."
            ) from None
        if timestamp_column not in table.c:
            engine.dispose()
            raise SourceDatabaseError(f"column {timestamp_column!r} not found in table {self.table!r}")
        columns = [c.name for c in table.columns]
        types = [arrow_type(c.type) for c in table.columns]
        params = {
            "window_start": local_naive(window_start, self.source_timezone),
            "window_end": local_naive(window_end, self.source_timezone),
        }

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                with engine.connect() as connection:
                    result = connection.execution_options(stream_results=True, max_row_buffer=self.batch_size).execute(
                        day_query(table, timestamp_column), params
                    )
                    for rows in result.partitions(self.batch_size):
                        yield to_record_batch(rows, columns, types, self.source_timezone)
            except sa.exc.DBAPIError as error:
                raise SourceDatabaseError(
                    f"export from {self.safe_url()} failed: {_reason(error)}"
                ) from None
            finally:
                engine.dispose()

        return arrow_schema(columns, types), batches()


def _reason(error: sa.exc.DBAPIError) -> str:
    """The driver's own message, without SQLAlchemy's statement/parameter dump."""
    return str(error.orig).strip() or type(error.orig).__name__
