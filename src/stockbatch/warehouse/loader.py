"""Transactional loads from Arrow into the warehouse.

Keyed tables (``load_table``): the rows are bulk-inserted into a temporary
staging table, counted against the target, then merged with ONE
``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE SET ... WHERE <a column
differs>`` statement. The ``WHERE`` compares null-safely (``IS NOT`` on
SQLite, ``IS DISTINCT FROM`` on PostgreSQL), so a rerun with the same data
writes nothing. Everything, staging included, runs in one transaction: an
error at any point (a bad batch, a constraint violation, a crash) leaves the
table as it was.

Append-only tables (``replace_run_rows``): the run's rows are deleted and
inserted again in one transaction, so reloading a run never duplicates.

One transaction per run (``run_transaction``): every function above also
exists as a method of the :class:`WarehouseTransaction` that
``with run_transaction(engine) as tx:`` yields; all of them then share one
connection and ONE transaction, committed when the block ends and rolled back
as a whole if anything in it fails (an error, a killed connection, a crash of
the server: the warehouse stays at the previous run's state)::

    with loader.run_transaction(engine) as tx:
        tx.load_table("instruments", [inst], key=("symbol",))
        for bucket in buckets:                       # each call: stage + one upsert
            tx.load_table("daily_bars", [bars], key=("symbol", "trade_date"))
            tx.load_table("daily_features", [feats], key=("symbol", "trade_date"))
        tx.replace_quarantine(quarantine)
        tx.record_run(manifest)

The module-level functions (``load_table(engine, ...)`` ...) are the same
code, each in a transaction of its own. ``load_tables(engine, {...})`` loads
several keyed tables in one transaction. SQLite and PostgreSQL behave the same.

The only dialect-specific step is the bulk insert (``_BULK_INSERTERS``):
SQLite uses ``executemany`` on the sqlite3 cursor with plain value lists,
many rows per ``INSERT ... VALUES`` statement; PostgreSQL uses ``COPY
staging FROM STDIN (FORMAT binary)``, the rows encoded from whole Arrow
columns with numpy (``pgcopy``: no per-value Python; ~3x the rows/s of CSV
``COPY`` on the gold daily tables), or CSV written by Arrow for a column type
the binary encoder does not cover; any other dialect falls back to
SQLAlchemy's ``executemany``. Everything else is SQLAlchemy
Core that both SQLite and PostgreSQL compile.

Values: NaN in a float column is stored as NULL (SQLite cannot store NaN; the
same rule elsewhere keeps the warehouses identical); a ``list<string>`` column
going into a text column (the quarantine reasons) is stored comma-joined.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from stockbatch import schema
from stockbatch.warehouse import db, models, pgcopy

CHUNK_ROWS = 50_000
"""Rows converted to Python tuples at a time (bounds the memory of a bulk insert)."""

Batches = Iterable[pa.Table | pa.RecordBatch]


@dataclass(frozen=True)
class LoadStats:
    """Outcome of one ``load_table`` call: every input row is exactly one of the three."""

    inserted: int
    updated: int
    unchanged: int
    seconds: float = field(default=0.0, compare=False)
    deleted: int = 0
    """Stored rows removed (only ``replace_quarantine`` removes rows)."""

    @property
    def rows(self) -> int:
        """Input rows."""
        return self.inserted + self.updated + self.unchanged

    @property
    def changed(self) -> int:
        """Rows written or removed: 0 when the load found the warehouse up to date."""
        return self.inserted + self.updated + self.deleted

    @property
    def rows_per_s(self) -> float:
        """Throughput of the whole load (staging, counting, merge, commit)."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class DuplicateKeyError(ValueError):
    """The input of one load holds the same key twice (an upstream bug; nothing was written)."""


def table_for(name: str) -> sa.Table:
    """The warehouse table called ``name``."""
    try:
        return models.metadata.tables[name]
    except KeyError:
        raise ValueError(
            f"unknown warehouse table {name!r}; known: {sorted(models.metadata.tables)}"
        ) from None


# --------------------------------------------------------------------------- batches


def _chunks(batches: Batches, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
    for item in batches:
        if isinstance(item, pa.Table):
            yield from item.to_batches(max_chunksize=chunk_rows)
        else:
            for start in range(0, item.num_rows, chunk_rows):
                yield item.slice(start, chunk_rows)


def _check_columns(table: sa.Table, names: list[str]) -> None:
    unknown = [n for n in names if n not in table.c]
    if unknown:
        raise ValueError(f"columns {unknown} are not in table {table.name}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate column names in the batches for {table.name}: {names}")


def _columns_of(first: pa.RecordBatch, table: sa.Table) -> list[str]:
    """The load's columns: those of the first batch, in the table's order."""
    names = list(first.schema.names)
    _check_columns(table, names)
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


def _csv_column(arr: pa.Array) -> pa.Array:
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
                arrays = [_csv_column(arr) for arr in batch.columns]
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


_BULK_INSERTERS: dict[str, BulkInserter] = {
    "sqlite": _bulk_insert_sqlite,
    "postgresql": _bulk_insert_postgresql,
}


def bulk_insert(
    conn: sa.Connection, table: sa.Table, columns: list[str], batches: Iterator[pa.RecordBatch]
) -> int:
    """Insert ``batches`` into ``table`` by the dialect's fastest path (caller's transaction)."""
    inserter = _BULK_INSERTERS.get(conn.dialect.name, _bulk_insert_generic)
    return inserter(conn, table, columns, (_select(b, columns, table) for b in batches))


# --------------------------------------------------------------------------- keyed upsert


def _dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"upsert is not implemented for dialect {conn.dialect.name}")


def _staging_table(table: sa.Table, columns: list[str], key: tuple[str, ...]) -> sa.Table:
    """A temporary copy of ``table``'s columns; keyed (if ``key``) so a repeated key fails fast."""
    if not key:
        return sa.Table(
            f"_stage_{table.name}",
            sa.MetaData(),
            *[sa.Column(c, table.c[c].type) for c in columns],
            prefixes=["TEMPORARY"],
        )
    return sa.Table(
        f"_stage_{table.name}",
        sa.MetaData(),
        *[sa.Column(c, table.c[c].type, nullable=c not in key) for c in columns],
        sa.PrimaryKeyConstraint(*key),
        prefixes=["TEMPORARY"],
        sqlite_with_rowid=False,
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load_table(
    engine: sa.Engine,
    table_name: str,
    batches: Batches,
    *,
    key: tuple[str, ...],
) -> LoadStats:
    """Upsert Arrow ``batches`` into ``table_name`` in one transaction; count what changed.

    ``key`` must be the table's primary key (``models.UPSERT_KEYS``). The batches
    give the columns to write (all batches the same columns; a table column
    they lack keeps its value, except ``updated_at``, which is set on insert
    and on real change). A row whose values all equal the stored ones is
    ``unchanged`` and is not written. Raises ``DuplicateKeyError`` when the
    input repeats a key; any error rolls the whole load back.
    """
    with engine.begin() as conn:
        return _load_table(conn, table_name, batches, key=key)


def _load_table(
    conn: sa.Connection, table_name: str, batches: Batches, *, key: tuple[str, ...]
) -> LoadStats:
    table = table_for(table_name)
    pk = tuple(c.name for c in table.primary_key.columns)
    if set(key) != set(pk) or len(key) != len(pk):
        raise ValueError(f"key {key} of {table_name} must be its primary key {pk}")
    started = time.perf_counter()
    chunks = _chunks(batches)
    first = next(chunks, None)
    if first is None:
        return LoadStats(0, 0, 0, time.perf_counter() - started)
    columns = _columns_of(first, table)
    missing_key = [k for k in key if k not in columns]
    if missing_key:
        raise ValueError(f"key columns {missing_key} are missing from the batches")
    if _all_new(conn, table, columns, key, batches):
        # No stored row shares a leading key value with the input: every row is an insert,
        # so COPY goes straight into the table (no staging copy, no merge).
        try:
            n = bulk_insert(conn, table, columns, _chunks(batches))
        except sa.exc.IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) == "23505":  # unique_violation
                raise DuplicateKeyError(
                    f"the batches for {table_name} repeat a key {key}: {exc}"
                ) from exc
            raise
        return LoadStats(n, 0, 0, time.perf_counter() - started)

    stage = _staging_table(table, columns, key)
    stage.drop(conn, checkfirst=True)  # a leftover of a killed load on a pooled connection
    stage.create(conn)
    try:
        bulk_insert(conn, stage, columns, _prepend(first, chunks))
    except (sqlite3.IntegrityError, sa.exc.IntegrityError) as exc:
        # The staging table's only constraints are its primary key and NOT NULL keys.
        if "NOT NULL" in str(exc).upper():
            raise ValueError(f"the batches for {table_name} hold a null key: {exc}") from exc
        raise DuplicateKeyError(f"the batches for {table_name} repeat a key {key}: {exc}") from exc
    if conn.dialect.name == "postgresql":
        # A fresh temp table has no statistics; without them the planner may choose
        # a nested loop for the counting join. (SQLite's plan is right without them.)
        conn.exec_driver_sql(f'ANALYZE "{stage.name}"')
    stats = _merge(conn, table, stage, columns, key)
    stage.drop(conn)
    return LoadStats(stats[0], stats[1], stats[2], time.perf_counter() - started)


def _all_new(
    conn: sa.Connection, table: sa.Table, columns: list[str], key: tuple[str, ...], batches: Batches
) -> bool:
    """PostgreSQL, input given as a list of tables/batches: True if no stored row has one of
    the input's values of the leading key column (then a direct COPY is a correct upsert).

    Locks the table against other writers (SHARE ROW EXCLUSIVE; readers go on) until the
    transaction ends, so no row with those keys can appear between the check and the COPY.
    The first load of a table and a load of new symbols take this path; updates of stored
    symbols go through the staging table. Not for tables stamped with ``updated_at``
    (the merge sets it).
    """
    if conn.dialect.name != "postgresql" or not isinstance(batches, (list, tuple)):
        return False
    if "updated_at" in table.c and "updated_at" not in columns:
        return False
    lead = key[0]
    parts: list[pa.Array] = []
    for b in batches:
        col = b.column(lead)
        parts.extend(col.chunks if isinstance(col, pa.ChunkedArray) else [col])
    if not any(len(p) for p in parts):
        return False
    values = pc.unique(pa.chunked_array([p.cast(parts[0].type) for p in parts]))
    qualified = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    conn.exec_driver_sql(f"LOCK TABLE {qualified} IN SHARE ROW EXCLUSIVE MODE")
    any_of = sa.func.any(
        sa.bindparam("values", values.to_pylist(), type_=postgresql.ARRAY(table.c[lead].type))
    )
    hit = conn.execute(sa.select(sa.literal(1)).where(table.c[lead] == any_of).limit(1)).first()
    return hit is None


def _prepend(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _merge(
    conn: sa.Connection,
    table: sa.Table,
    stage: sa.Table,
    columns: list[str],
    key: tuple[str, ...],
) -> tuple[int, int, int]:
    """Count staged rows against the target, then upsert them.

    Returns (inserted, updated, unchanged).
    """
    on = sa.and_(*[stage.c[k] == table.c[k] for k in key])
    total, matched = conn.execute(
        sa.select(sa.func.count(), sa.func.count(table.c[key[0]])).select_from(
            stage.outerjoin(table, on)
        )
    ).one()
    inserted = total - matched

    values = [c for c in columns if c not in key]
    select_cols: list[sa.ColumnElement[Any]] = [stage.c[c] for c in columns]
    insert_cols = list(columns)
    stamp = "updated_at" in table.c and "updated_at" not in columns
    if stamp:
        now = _utcnow()
        select_cols.append(sa.literal(now, table.c.updated_at.type).label("updated_at"))
        insert_cols.append("updated_at")
    # WHERE true: without it SQLite would parse ON CONFLICT as the join constraint of the SELECT.
    stmt = _dialect_insert(conn, table).from_select(
        insert_cols, sa.select(*select_cols).where(sa.true())
    )
    if values:
        set_ = {c: stmt.excluded[c] for c in values}
        if stamp:
            set_["updated_at"] = stmt.excluded["updated_at"]
        changed = sa.or_(*[table.c[c].is_distinct_from(stmt.excluded[c]) for c in values])
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=set_, where=changed)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    # inserted + updated on both SQLite and PostgreSQL; psycopg's cursor is closed before
    # SQLAlchemy reads an INSERT's rowcount unless asked to keep it.
    written = conn.execute(stmt, execution_options={"preserve_rowcount": True}).rowcount
    updated = written - inserted
    if not 0 <= updated <= matched:
        raise RuntimeError(
            f"upsert of {table.name} wrote {written} rows for {inserted} new and {matched} "
            "existing ones; rolled back"
        )
    return inserted, updated, matched - updated


# --------------------------------------------------------------------------- append-only tables


def replace_run_rows(engine: sa.Engine, table_name: str, run_id: str, batches: Batches) -> int:
    """Replace the rows of ``run_id`` in an append-only table (e.g. ``quarantine``).

    Deletes the run's rows and inserts ``batches`` (their ``run_id`` column, if
    any, is overwritten with ``run_id``) in one transaction; returns the rows
    inserted. Reloading a run therefore never duplicates it.
    """
    with engine.begin() as conn:
        return _replace_run_rows(conn, table_name, run_id, batches)


def _replace_run_rows(conn: sa.Connection, table_name: str, run_id: str, batches: Batches) -> int:
    table = table_for(table_name)
    if "run_id" not in table.c:
        raise ValueError(f"table {table_name} has no run_id column")

    def with_run_id() -> Iterator[pa.RecordBatch]:
        for batch in _chunks(batches):
            if "run_id" in batch.schema.names:
                batch = batch.drop_columns(["run_id"])
            yield batch.append_column("run_id", pa.array([run_id] * batch.num_rows, pa.string()))

    conn.execute(sa.delete(table).where(table.c.run_id == run_id))
    chunks = with_run_id()
    first = next(chunks, None)
    if first is None:
        return 0
    columns = _columns_of(first, table)
    return bulk_insert(conn, table, columns, _prepend(first, chunks))


QUARANTINE_PROVENANCE = ("run_id", "ingest_run_id")
"""Quarantine columns that say where a row came from, not what it is."""


def replace_quarantine(
    engine: sa.Engine, batches: Batches, *, run_id: str | None = None
) -> LoadStats:
    """Make ``quarantine`` hold exactly ``batches`` (``schema.QUARANTINE`` rows); one transaction.

    ``batches`` is the complete silver quarantine (the process stage rebuilds it
    whole), so the table is replaced, not appended to. With ``run_id`` only that
    run's rows are replaced and the new rows get that ``run_id``; without it the
    whole table is replaced and each row's ``run_id`` is its ``ingest_run_id``
    (the bronze batch that brought it), which keeps reruns deterministic.

    Rows are compared by content (``EXCEPT``, null-safe), i.e. every column but
    the provenance ones (``run_id``, ``ingest_run_id``): a forced re-ingest of
    the same files brings the same quarantined lines from a new bronze batch,
    which is not a change. ``inserted`` are new rows, ``deleted`` stored rows
    that are gone, ``unchanged`` the rest. When nothing differs nothing is
    written (the stored rows, their ids and first provenance stay).
    """
    with engine.begin() as conn:
        return _replace_quarantine(conn, batches, run_id=run_id)


def _replace_quarantine(
    conn: sa.Connection, batches: Batches, *, run_id: str | None = None
) -> LoadStats:
    table = models.quarantine
    started = time.perf_counter()

    def with_run_id() -> Iterator[pa.RecordBatch]:
        for batch in _chunks(batches):
            if "run_id" in batch.schema.names:
                batch = batch.drop_columns(["run_id"])
            if run_id is not None:
                ids = pa.array([run_id] * batch.num_rows, pa.string())
            elif "ingest_run_id" in batch.schema.names:
                ids = pc.fill_null(batch.column("ingest_run_id").cast(pa.string()), "unknown")
            else:
                ids = pa.array(["unknown"] * batch.num_rows, pa.string())
            yield batch.append_column("run_id", ids)

    chunks = with_run_id()
    first = next(chunks, None)
    scope = sa.true() if run_id is None else table.c.run_id == run_id
    if first is None:
        deleted = conn.execute(sa.delete(table).where(scope)).rowcount
        return LoadStats(0, 0, 0, time.perf_counter() - started, deleted=deleted)
    columns = _columns_of(first, table)
    stage = _staging_table(table, columns, ())
    stage.drop(conn, checkfirst=True)
    stage.create(conn)
    total = bulk_insert(conn, stage, columns, _prepend(first, chunks))
    content = [c for c in columns if c not in QUARANTINE_PROVENANCE]
    new_rows = sa.select(*[stage.c[c] for c in content])
    old_rows = sa.select(*[table.c[c] for c in content]).where(scope)

    def count(query: sa.CompoundSelect[Any]) -> int:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
        )

    inserted = count(new_rows.except_(old_rows))
    deleted = count(old_rows.except_(new_rows))
    if inserted or deleted:
        conn.execute(sa.delete(table).where(scope))
        conn.execute(table.insert().from_select(columns, sa.select(*[stage.c[c] for c in columns])))
    stage.drop(conn)
    return LoadStats(inserted, 0, total - inserted, time.perf_counter() - started, deleted=deleted)


# --------------------------------------------------------------------------- runs and audit


def _as_utc(value: Any) -> dt.datetime | None:
    """datetime / ISO text / epoch seconds -> aware UTC datetime (naive input is taken as UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, (int, float)):
        ts = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str):
        ts = dt.datetime.fromisoformat(value)
    else:
        raise TypeError(f"not a timestamp: {value!r}")
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so dates, paths, etc. become text before SQLAlchemy sees them."""
    return json.loads(json.dumps(value, default=str))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def quality_rows(run_id: str, counts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``data_quality`` rows of a manifest's ``counts`` (see ``summary_counts``).

    Top-level numbers are ``kind='count'`` (``rows_in`` ...); the numbers of a
    flat mapping are named ``<key>.<name>`` and take the key as kind
    (``reasons.duplicate`` of kind ``reasons``). Every reason code and health
    flag of the contract is present (0 when absent) when the manifest has a
    ``reasons`` / ``health`` mapping, so dashboards see explicit zeros.
    """
    rows: list[dict[str, Any]] = []
    for name, value in summary_counts(counts).items():
        if isinstance(value, Mapping):
            defaults = {"reasons": schema.REASON_CODES, "health": schema.HEALTH_FLAGS}.get(name, ())
            for k, v in {**dict.fromkeys(defaults, 0), **value}.items():
                rows.append(
                    {"run_id": run_id, "metric": f"{name}.{k}", "kind": name, "value": float(v)}
                )
        else:
            rows.append({"run_id": run_id, "metric": name, "kind": "count", "value": float(value)})
    return rows


def summary_counts(counts: Mapping[str, Any]) -> dict[str, Any]:
    """The run-level part of ``counts``: top-level numbers and flat mappings of numbers.

    Deeper detail (e.g. ``per_file``: thousands of files per run) stays in the
    lake manifest; the warehouse keeps what the runs page and the API show.
    """
    out: dict[str, Any] = {}
    for name, value in counts.items():
        if isinstance(value, Mapping):
            flat = {str(k): _number(v) for k, v in value.items()}
            if flat and all(v is not None for v in flat.values()):
                out[name] = flat
        elif (number := _number(value)) is not None:
            out[name] = number if isinstance(value, float) else int(number)
    return out


def _count(counts: Mapping[str, Any], name: str) -> int | None:
    value = counts.get(name)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def record_run(engine: sa.Engine, manifest: Mapping[str, Any]) -> None:
    """Upsert a run manifest into ``pipeline_runs`` and replace its ``data_quality`` rows.

    Reads ``run_id`` (required), ``started_at``, ``finished_at`` (datetime, ISO
    text or epoch seconds), ``status``, ``command``, ``params`` (mapping),
    ``counts`` (mapping: ``rows_in``, ``rows_clean``, ``rows_quarantined``,
    ``rows_deduplicated``, ``reasons``, ``health``, ...) and ``duration_s``
    (else finished - started). One transaction.
    """
    with engine.begin() as conn:
        _record_run(conn, manifest)


def _record_run(conn: sa.Connection, manifest: Mapping[str, Any]) -> None:
    run_id = manifest.get("run_id")
    if not run_id:
        raise ValueError("manifest has no run_id")
    counts = manifest.get("counts") or {}
    started = _as_utc(manifest.get("started_at"))
    finished = _as_utc(manifest.get("finished_at"))
    duration = manifest.get("duration_s")
    if duration is None and started is not None and finished is not None:
        duration = (finished - started).total_seconds()
    row = {
        "run_id": str(run_id),
        "started_at": started,
        "finished_at": finished,
        "status": manifest.get("status"),
        "command": manifest.get("command"),
        "params": _json_safe(manifest.get("params")),
        "counts": _json_safe(summary_counts(counts)),
        "rows_in": _count(counts, "rows_in"),
        "rows_clean": _count(counts, "rows_clean"),
        "rows_quarantined": _count(counts, "rows_quarantined"),
        "rows_deduplicated": _count(counts, "rows_deduplicated"),
        "duration_s": None if duration is None else float(duration),
    }
    runs, quality = models.pipeline_runs, models.data_quality
    stmt = _dialect_insert(conn, runs).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id"],
        set_={c: stmt.excluded[c] for c in row if c != "run_id"},
    )
    conn.execute(stmt)
    conn.execute(sa.delete(quality).where(quality.c.run_id == row["run_id"]))
    q_rows = quality_rows(row["run_id"], counts)
    if q_rows:
        conn.execute(quality.insert(), q_rows)


def audit(
    engine: sa.Engine, actor: str, action: str, detail: Mapping[str, Any] | None = None
) -> int:
    """Append one ``audit_log`` entry (timestamped now, UTC); returns its id."""
    with engine.begin() as conn:
        return _audit(conn, actor, action, detail)


def _audit(
    conn: sa.Connection, actor: str, action: str, detail: Mapping[str, Any] | None = None
) -> int:
    result = conn.execute(
        models.audit_log.insert().values(
            at=_utcnow(),
            actor=actor,
            action=action,
            detail=None if detail is None else _json_safe(dict(detail)),
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


# --------------------------------------------------------------------------- one run


class WarehouseTransaction:
    """The loads of one run on one connection, in one transaction (see ``run_transaction``).

    Each method does what the module function of the same name does, without
    committing: the block of ``run_transaction`` commits everything at its end.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def load_table(self, table_name: str, batches: Batches, *, key: tuple[str, ...]) -> LoadStats:
        """Upsert ``batches`` into ``table_name`` (see :func:`load_table`)."""
        return _load_table(self.conn, table_name, batches, key=key)

    def replace_quarantine(self, batches: Batches, *, run_id: str | None = None) -> LoadStats:
        """Make ``quarantine`` hold exactly ``batches`` (see :func:`replace_quarantine`)."""
        return _replace_quarantine(self.conn, batches, run_id=run_id)

    def replace_run_rows(self, table_name: str, run_id: str, batches: Batches) -> int:
        """Replace the rows of ``run_id`` (see :func:`replace_run_rows`)."""
        return _replace_run_rows(self.conn, table_name, run_id, batches)

    def record_run(self, manifest: Mapping[str, Any]) -> None:
        """Upsert the run and its quality rows (see :func:`record_run`)."""
        _record_run(self.conn, manifest)

    def audit(self, actor: str, action: str, detail: Mapping[str, Any] | None = None) -> int:
        """Append an ``audit_log`` entry (see :func:`audit`)."""
        return _audit(self.conn, actor, action, detail)


@contextlib.contextmanager
def run_transaction(engine: sa.Engine) -> Iterator[WarehouseTransaction]:
    """One transaction for everything a run writes: commit at the end of the block, or nothing.

    Yields a :class:`WarehouseTransaction`. An exception inside the block (or
    a lost connection, or the server crashing) rolls every table back to the
    previous state; the exception propagates.
    """
    with engine.begin() as conn:
        yield WarehouseTransaction(conn)


def load_tables(
    engine: sa.Engine,
    loads: Mapping[str, Batches],
    *,
    keys: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, LoadStats]:
    """Upsert several keyed tables in ONE transaction, in the mapping's order.

    ``loads`` maps table names to their batches; the keys are ``keys[name]``,
    else ``models.UPSERT_KEYS[name]``. Returns the stats per table.
    """
    keys = {**models.UPSERT_KEYS, **(keys or {})}
    with run_transaction(engine) as tx:
        return {
            name: tx.load_table(name, batches, key=keys[name]) for name, batches in loads.items()
        }
