"""The source database (MySQL/MariaDB in production, SQLite in the demo), read through SQLAlchemy."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import queue
import threading
from collections.abc import Iterator
from datetime import datetime

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa
from pydantic import Field

from dify_pipeline.resources.source_query import (
    arrow_schema,
    arrow_type,
    columns_to_record_batch,
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
    read_ahead_batches: int = Field(
        default=2, ge=0, description="Batches fetched ahead in a thread while the caller writes the ones before "
        "(the driver and Arrow's Parquet writer then work at the same time); 0 fetches in the caller's thread.")

    def _engine(self) -> sa.Engine:
        url = sa.make_url(self.url)
        connect_args = {"connect_timeout": self.connect_timeout_seconds} if url.get_backend_name() == "mysql" else {}
        if url.get_backend_name() == "mysql":
            connect_args["charset"] = "utf8mb4"
        return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=False)

    def safe_url(self) -> str:
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def export_driver(self) -> str:
        """What reads the rows: `mysqldb` (mysqlclient, C) when installed, else `pymysql`, for MySQL/MariaDB;
        `sqlalchemy` (the URL's own driver) for other databases."""
        if sa.make_url(self.url).get_backend_name() != "mysql":
            return "sqlalchemy"
        return "mysqldb" if importlib.util.find_spec("MySQLdb") else "pymysql"

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
        query = day_query(table, timestamp_column)
        driver = self.export_driver()

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                if driver == "sqlalchemy":
                    with engine.connect() as connection:
                        streamed = connection.execution_options(stream_results=True, max_row_buffer=self.batch_size)
                        result = streamed.execute(query, params)
                        for rows in result.partitions(self.batch_size):
                            yield to_record_batch(rows, columns, types, self.source_timezone)
                else:
                    yield from self._mysql_batches(driver, table, query, params, columns, types)
            except sa.exc.DBAPIError as error:
                raise SourceDatabaseError(f"export from {self.safe_url()} failed: {_reason(error)}") from None
            finally:
                engine.dispose()

        return arrow_schema(columns, types), read_ahead(batches(), self.read_ahead_batches)

    def rows_without_timestamp(self, timestamp_column: str) -> int:
        """How many rows of the table have no `timestamp_column`: they belong to no day, so no day exports them.

        One COUNT over `timestamp_column IS NULL`, which the index the day's range query needs also serves."""
        validate_identifier(self.table, "table")
        validate_identifier(timestamp_column, "timestamp_column")
        table = sa.table(self.table, sa.column(timestamp_column))
        query = sa.select(sa.func.count()).select_from(table).where(table.c[timestamp_column].is_(None))
        engine = self._engine()
        try:
            with engine.connect() as connection:
                return connection.execute(query).scalar_one()
        except sa.exc.DBAPIError as error:
            raise SourceDatabaseError(f"counting rows without {timestamp_column} in {self.safe_url()} failed: "
                                      f"{_reason(error)}") from None
        finally:
            engine.dispose()

    def _mysql_batches(
        self, driver: str, table: sa.Table, query: sa.Select, params: dict, columns: list[str], types: list[pa.DataType]
    ) -> Iterator[pa.RecordBatch]:
        """The day from MySQL/MariaDB through the driver's own unbuffered cursor, without SQLAlchemy's rows.

        SQLAlchemy's per-row machinery costs about as much as the C driver itself; so the rows are fetched
        with the DBAPI cursor (`SSCursor`: streamed, never the whole day in memory) and transposed into Arrow
        columns. DATETIME/TIMESTAMP/DATE values arrive as the server's text and are parsed by Arrow instead
        of one Python datetime at a time; columns whose SQLAlchemy type post-processes values (TIME, SET,
        BIT, JSON...) still get SQLAlchemy's own result processor, so the values equal those of the
        SQLAlchemy path.
        """
        url = sa.make_url(self.url).set(drivername=f"mysql+{driver}")
        dialect = url.get_dialect()()
        module = dialect.import_dbapi()
        dialect.dbapi = module
        args, kwargs = dialect.create_connect_args(url)
        kwargs.update(charset="utf8mb4", connect_timeout=self.connect_timeout_seconds,
                      conv=_temporal_as_text(module),
                      cursorclass=importlib.import_module(f"{module.__name__}.cursors").SSCursor)
        compiled = query.compile(dialect=dialect)
        bound = compiled.construct_params(params)
        arguments = tuple(bound[name] for name in compiled.positiontup) if compiled.positional else bound
        try:
            connection = module.connect(*args, **kwargs)
        except module.Error as error:
            raise SourceDatabaseError(
                f"cannot connect to source database {self.safe_url()} for the export: {error}. "
                "Check SOURCE_DATABASE_URL and that the server is up."
            ) from None
        try:
            cursor = connection.cursor()
            cursor.execute(compiled.string, arguments)
            type_codes = [description[1] for description in cursor.description]
            processors = [
                None if code in _TEMPORAL_TYPE_CODES
                else column.type.dialect_impl(dialect).result_processor(dialect, code)
                for column, code in zip(table.columns, type_codes)
            ]
            while rows := cursor.fetchmany(self.batch_size):
                values = list(zip(*rows))
                for position, process in enumerate(processors):
                    if process is not None:
                        values[position] = [process(value) for value in values[position]]
                yield columns_to_record_batch(values, columns, types, self.source_timezone)
            cursor.close()
        except module.Error as error:
            raise SourceDatabaseError(f"export from {self.safe_url()} failed: {error}") from None
        finally:
            connection.close()


# MySQL's field type codes of DATETIME (12), TIMESTAMP (7), DATE (10) and NEWDATE (14): read as text.
_TEMPORAL_TYPE_CODES = frozenset({7, 10, 12, 14})


def _temporal_as_text(module) -> dict:
    """The driver's conversions (decoders by field type, encoders by Python type), minus the temporal
    decoders: those values stay the server's text, which Arrow parses a whole column at a time."""
    converters = importlib.import_module(f"{module.__name__}.converters")
    return {key: value for key, value in converters.conversions.items() if key not in _TEMPORAL_TYPE_CODES}


def read_ahead(batches: Iterator[pa.RecordBatch], depth: int) -> Iterator[pa.RecordBatch]:
    """`batches`, produced by a thread up to `depth` ahead of the consumer; its errors are raised here, in order.

    Closing the result early stops the thread at its next batch (and so closes `batches`, which frees the
    connection)."""
    if depth <= 0:
        yield from batches
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put((batch, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((done, None))
        except BaseException as error:  # noqa: BLE001 - raised again in the consumer
            ready.put((done, error))
        finally:
            batches.close()

    producer = threading.Thread(target=produce, name="export-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is done:
                return
            yield batch
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting to hand over a batch
            with contextlib.suppress(queue.Empty):
                ready.get_nowait()
            producer.join(timeout=0.05)


def _reason(error: sa.exc.DBAPIError) -> str:
    """The driver's own message, without SQLAlchemy's statement/parameter dump."""
    return str(error.orig).strip() or type(error.orig).__name__
