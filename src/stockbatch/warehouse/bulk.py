"""Bulk insert of Arrow batches, by the dialect's fastest path (the caller's transaction).

SQLite: ``executemany`` on the sqlite3 cursor with plain value lists, many rows
per ``INSERT ... VALUES``; PostgreSQL: ``COPY ... FROM STDIN (FORMAT binary)``
encoded from whole Arrow columns with numpy (:mod:`.pgcopy`), or CSV written by
Arrow for a column type the binary encoder does not cover; any other dialect:
SQLAlchemy's ``executemany``. NaN in a float column becomes NULL; a
``list<string>`` column into a text column is stored comma-joined.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from stockbatch.warehouse import db, pgcopy

CHUNK_ROWS = 50_000
"""Rows converted to Python tuples at a time (bounds the memory of a bulk insert)."""

Batches = Iterable[pa.Table | pa.RecordBatch]


# --------------------------------------------------------------------------- batches


def chunks(batches: Batches, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
    for item in batches:
        if isinstance(item, pa.Table):
            yield from item.to_batches(max_chunksize=chunk_rows)
        else:
            for start in range(0, item.num_rows, chunk_rows):
                yield item.slice(start, chunk_rows)


def check_columns(table: sa.Table, names: list[str]) -> None:
    unknown = [n for n in names if n not in table.c]
    if unknown:
        raise ValueError(f"columns {unknown} are not in table {table.name}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate column names in the batches for {table.name}: {names}")


def columns_of(first: pa.RecordBatch, table: sa.Table) -> list[str]:
    """The load's columns: those of the first batch, in the table's order."""
    names = list(first.schema.names)
    check_columns(table, names)
    return [c.name for c in table.columns if c.name in names]


def _select(batch: pa.RecordBatch, columns: list[str], table: sa.Table) -> pa.RecordBatch:
    if set(batch.schema.names) != set(columns):
        raise ValueError(
            f"batch columns {sorted(batch.schema.names)} differ from the first batch's "
            f"{sorted(columns)} (table {table.name})"
        )
    return batch.select(columns)


def _is_float_sql(sql_type: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(sql_type, sa.Float)  # Double is a Float


def _nan_to_null(arr: pa.Array) -> pa.Array:
    if pa.types.is_floating(arr.type) and arr.null_count < len(arr):
        return pc.if_else(pc.is_nan(arr), pa.scalar(None, arr.type), arr)
    return arr


def _join_lists(arr: pa.Array) -> pa.Array:
    """list<string> -> 'a,b' text (quarantine reasons)."""
    return pc.binary_join(arr, ",")


# --------------------------------------------------------------------------- bulk insert


BulkInserter = Callable[[sa.Connection, sa.Table, list[str], Iterator[pa.RecordBatch]], int]
"""(connection, table, column names, batches) -> rows inserted; runs in the caller's transaction."""


def _sqlite_values(arr: pa.Array, sql_type: sa.types.TypeEngine[Any], dialect: Any) -> Any:
    """One Arrow column as values sqlite3 binds fastest, stored the way SQLAlchemy stores them.

    Returns a list, or for float columns a float64 numpy array (its nulls are NaN,
    which SQLite stores as NULL: ``sqlite3_bind_double`` of NaN binds NULL).
    """
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = _join_lists(arr)
    if _is_float_sql(sql_type) and pa.types.is_floating(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if isinstance(sql_type, sa.Date) and (
        pa.types.is_date32(arr.type) or pa.types.is_date64(arr.type)
    ):
        # SQLAlchemy stores SQLite dates as 'YYYY-MM-DD' text; Arrow's cast writes that form.
        return arr.cast(pa.string()).to_pylist()
    values = arr.to_pylist()
    if isinstance(sql_type, (sa.String, sa.Integer, sa.Float, sa.Boolean)):
        return values
    process = sql_type.bind_processor(dialect)  # DateTime, JSON, Date given as Python objects
    if process is None:
        return values
    return [None if v is None else process(v) for v in values]


def _sqlite_rows_per_statement(dbapi_conn: sqlite3.Connection, n_columns: int) -> int:
    """Rows per multi-row ``VALUES`` statement: ~2,400 bound values, within SQLite's limit.

    Binding many rows per statement amortises sqlite3's per-statement work
    (step, reset, rowcount): measured ~2x the rows/s of one row per statement.
    """
    limit = dbapi_conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(200, 2_400 // n_columns, limit // n_columns))


def _bulk_insert_sqlite(
    conn: sa.Connection, table: sa.Table, columns: list[str], batches: Iterator[pa.RecordBatch]
) -> int:
    """executemany on the sqlite3 cursor of plain value lists, ``k`` rows per statement.

    No per-row SQLAlchemy work: each chunk becomes a 2-D numpy object array
    (filled column by column in C), reshaped so one parameter list holds ``k``
    rows, and handed to ``executemany``; the tail of a chunk goes one row per
    statement.
    """
    qualified = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    dbapi_conn = conn.connection.driver_connection
    assert isinstance(dbapi_conn, sqlite3.Connection)
    n_cols = len(columns)
    k = _sqlite_rows_per_statement(dbapi_conn, n_cols)
    head = f"INSERT INTO {qualified} ({', '.join(_quoted(columns))}) VALUES "
    one_row = "(" + ", ".join("?" * n_cols) + ")"
    sql_k, sql_1 = head + ", ".join([one_row] * k), head + one_row
    types = [table.c[c].type for c in columns]
    cursor = dbapi_conn.cursor()
    n = 0
    try:
        for batch in batches:
            rows = batch.num_rows
            if rows == 0:
                continue
            grid = np.empty((rows, n_cols), dtype=object)
            for j in range(n_cols):
                grid[:, j] = _sqlite_values(batch.column(j), types[j], conn.dialect)
            full = rows - rows % k
            if full:
                cursor.executemany(sql_k, grid[:full].reshape(-1, k * n_cols).tolist())
            if full < rows:
                cursor.executemany(sql_1, grid[full:].tolist())
            n += rows
    finally:
        cursor.close()
    return n


def _quoted(columns: list[str]) -> list[str]:
    return ['"' + c.replace('"', '""') + '"' for c in columns]


def _bulk_insert_generic(
    conn: sa.Connection, table: sa.Table, columns: list[str], batches: Iterator[pa.RecordBatch]
) -> int:
    """Portable fallback: SQLAlchemy executemany (insertmanyvalues) of dicts."""
    n = 0
    for batch in batches:
        data = {}
        for name, arr in zip(columns, batch.columns, strict=True):
            if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
                arr = _join_lists(arr)
            data[name] = _nan_to_null(arr).to_pylist()
        rows = [
            dict(zip(columns, values, strict=True)) for values in zip(*data.values(), strict=True)
        ]
        if rows:
            conn.execute(table.insert(), rows)
        n += batch.num_rows
    return n


def csv_column(arr: pa.Array) -> pa.Array:
    """One Arrow column as PostgreSQL's ``COPY`` (binary or CSV) reads it back exactly.

    NaN becomes null (stored NULL, as on SQLite); lists are comma-joined text.
    Arrow writes doubles in their shortest round-trip form, dates as ISO text,
    null as an unquoted empty field and every string quoted (so '' stays '').
    """
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        return _join_lists(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    return _nan_to_null(arr)


_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, batch_size=CHUNK_ROWS)


def _bulk_insert_postgresql(
    conn: sa.Connection, table: sa.Table, columns: list[str], batches: Iterator[pa.RecordBatch]
) -> int:
    """``COPY table (columns) FROM STDIN``: binary (``pgcopy``) when every column type has an
    encoding there, else CSV written by Arrow; one chunk of rows per write.

    Runs on the psycopg connection under SQLAlchemy's, in the caller's
    transaction. Driver errors are turned into SQLAlchemy's (an integrity error
    stays an ``IntegrityError``); a lost connection invalidates it and raises
    ``WarehouseUnavailable``.
    """
    import psycopg

    qualified = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    kinds = pgcopy.binary_kinds(table, columns)
    form = "binary" if kinds is not None else "csv"
    statement = f"COPY {qualified} ({', '.join(_quoted(columns))}) FROM STDIN (FORMAT {form})"
    dbapi_conn = conn.connection.driver_connection
    assert isinstance(dbapi_conn, psycopg.Connection)
    n = 0
    try:
        with dbapi_conn.cursor() as cursor, cursor.copy(statement) as copy:
            if kinds is not None:
                copy.write(pgcopy.HEADER)
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                arrays = [csv_column(arr) for arr in batch.columns]
                chunk = pa.RecordBatch.from_arrays(arrays, names=columns)
                if kinds is not None:
                    copy.write(pgcopy.encode(chunk, kinds))
                else:
                    sink = pa.BufferOutputStream()
                    pa_csv.write_csv(chunk, sink, _CSV_OPTIONS)
                    copy.write(memoryview(sink.getvalue()))
                n += batch.num_rows
            if kinds is not None:
                copy.write(pgcopy.TRAILER)
    except psycopg.Error as exc:
        if dbapi_conn.broken or dbapi_conn.closed:
            conn.invalidate(exc)
            raise db.unavailable(conn.engine.url, exc) from exc
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, psycopg.Error, dialect=conn.dialect
        ) from exc
    return n


BULK_INSERTERS: dict[str, BulkInserter] = {
    "sqlite": _bulk_insert_sqlite,
    "postgresql": _bulk_insert_postgresql,
}


def bulk_insert(
    conn: sa.Connection, table: sa.Table, columns: list[str], batches: Iterator[pa.RecordBatch]
) -> int:
    """Insert ``batches`` into ``table`` by the dialect's fastest path (caller's transaction)."""
    inserter = BULK_INSERTERS.get(conn.dialect.name, _bulk_insert_generic)
    return inserter(conn, table, columns, (_select(b, columns, table) for b in batches))


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT construct (it has ``on_conflict_do_update``)."""
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"upsert is not implemented for dialect {conn.dialect.name}")


def utcnow() -> dt.datetime:
    """Now, UTC (timestamps the warehouse stores)."""
    return dt.datetime.now(dt.UTC)
