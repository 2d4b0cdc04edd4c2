"""Transactional loads from Arrow into the warehouse.

Keyed tables (``load_table``): the rows are bulk-inserted into a temporary
staging table, counted against the target, then merged with ONE
``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE SET ... WHERE <a column
differs>`` statement. The ``WHERE`` compares null-safely (``IS NOT`` on
SQLite, ``IS DISTINCT FROM`` on PostgreSQL), so a rerun with the same data
writes nothing. Everything, staging included, runs in one transaction: an
error at any point (a bad batch, a constraint violation, a crash) leaves the
table as it was. When no stored row shares a leading key value (a symbol) with
the input, e.g. the first load into an empty warehouse or new symbols, the rows
are bulk-inserted straight into the table instead: every row is an insert, and
the staging copy and the merge, most of a first load's time, are skipped.

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

The only dialect-specific steps are the bulk insert (:mod:`.bulk`: executemany
on SQLite, binary ``COPY`` on PostgreSQL) and the lock taken before a straight
insert (``_all_new``); everything else is SQLAlchemy Core
that both compile. The run and audit rows live in :mod:`.records`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from stockbatch.warehouse import bulk, models, records
from stockbatch.warehouse.bulk import Batches, bulk_insert

# The run and audit rows are written through the loader as well (one API for writes).
from stockbatch.warehouse.records import audit as audit
from stockbatch.warehouse.records import record_run as record_run


@dataclass(frozen=True)
class LoadStats:
    """Outcome of one ``load_table`` call: every input row is exactly one of the three."""

    inserted: int
    updated: int
    unchanged: int
    seconds: float = field(default=0.0, compare=False)
    deleted: int = 0
    """Stored rows removed (``replace_quarantine``, and ``load_table`` with ``replace``)."""

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


# --------------------------------------------------------------------------- keyed upsert


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


Replace = Sequence[Any] | bool | None
"""What a load mirrors: ``None`` upserts only; a list of values of the table's leading key
column (e.g. symbols) makes the stored rows with those values equal the input (rows
absent from the input are deleted); ``True`` makes the whole table equal the input."""


def load_table(
    engine: sa.Engine,
    table_name: str,
    batches: Batches,
    *,
    key: tuple[str, ...],
    replace: Replace = None,
) -> LoadStats:
    """Upsert Arrow ``batches`` into ``table_name`` in one transaction; count what changed.

    ``key`` must be the table's primary key (``models.UPSERT_KEYS``). The batches
    give the columns to write (all batches the same columns; a table column
    they lack keeps its value, except ``updated_at``, which is set on insert
    and on real change). A row whose values all equal the stored ones is
    ``unchanged`` and is not written. With ``replace`` (see :data:`Replace`) the
    stored rows in its scope that the input lacks are deleted (``deleted``), so the
    table mirrors its source. Raises ``DuplicateKeyError`` when the input repeats
    a key; any error rolls the whole load back.
    """
    with engine.begin() as conn:
        return _load_table(conn, table_name, batches, key=key, replace=replace)


def _load_table(
    conn: sa.Connection,
    table_name: str,
    batches: Batches,
    *,
    key: tuple[str, ...],
    replace: Replace = None,
) -> LoadStats:
    table = table_for(table_name)
    pk = tuple(c.name for c in table.primary_key.columns)
    if set(key) != set(pk) or len(key) != len(pk):
        raise ValueError(f"key {key} of {table_name} must be its primary key {pk}")
    started = time.perf_counter()
    chunks = bulk.chunks(batches)
    first = next(chunks, None)
    if first is None:
        deleted = _delete_absent(conn, table, None, key, replace)
        return LoadStats(0, 0, 0, time.perf_counter() - started, deleted=deleted)
    columns = bulk.columns_of(first, table)
    missing_key = [k for k in key if k not in columns]
    if missing_key:
        raise ValueError(f"key columns {missing_key} are missing from the batches")
    if replace is not True and _all_new(conn, table, columns, key, batches):
        # No stored row shares a leading key value with the input: every row is an insert,
        # so the rows go straight into the table (no staging copy, no merge).
        n = _insert_new(conn, table, columns, key, batches)
        # No stored row had the input's leading values: only scope values the input
        # lacks can have rows to delete.
        leads = _lead_values(batches, key[0])
        absent = (
            None if not isinstance(replace, Sequence) else [v for v in replace if v not in leads]
        )
        deleted = _delete_absent(conn, table, None, key, absent)
        return LoadStats(n, 0, 0, time.perf_counter() - started, deleted=deleted)

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
    deleted = _delete_absent(conn, table, stage, key, replace)
    stage.drop(conn)
    return LoadStats(stats[0], stats[1], stats[2], time.perf_counter() - started, deleted=deleted)


def _lead_values(batches: Batches, lead: str) -> set[Any]:
    values: set[Any] = set()
    for b in batches:
        values.update(pc.unique(b.column(lead)).to_pylist())
    return values


IN_LIST = 500
"""Values per ``IN (...)`` list of a scoped delete (SQLite caps bound parameters)."""


def _delete_absent(
    conn: sa.Connection,
    table: sa.Table,
    stage: sa.Table | None,
    key: tuple[str, ...],
    replace: Replace,
) -> int:
    """Delete the stored rows in ``replace``'s scope that the staged input does not hold
    (all of them when there is no stage: the input had none of the scope's values)."""
    if replace is None or replace is False:
        return 0
    absent: sa.ColumnElement[bool] = sa.true()
    if stage is not None:
        on = sa.and_(*[stage.c[k] == table.c[k] for k in key])
        absent = ~sa.exists(sa.select(sa.literal(1)).select_from(stage).where(on))
    if replace is True:
        return int(conn.execute(sa.delete(table).where(absent)).rowcount)
    scope = sorted(set(replace))
    deleted = 0
    for i in range(0, len(scope), IN_LIST):
        part = table.c[key[0]].in_(scope[i : i + IN_LIST])
        deleted += int(conn.execute(sa.delete(table).where(part, absent)).rowcount)
    return deleted


def _insert_new(
    conn: sa.Connection, table: sa.Table, columns: list[str], key: tuple[str, ...], batches: Batches
) -> int:
    """Bulk-insert rows none of whose keys is stored (``_all_new``) straight into ``table``.

    A repeated key in the input raises ``DuplicateKeyError``, a null key ``ValueError``
    (as the staging path does); a CHECK or NOT NULL failure of a value column is an
    ``IntegrityError``. The caller's transaction rolls everything back.
    """
    try:
        return bulk_insert(conn, table, columns, bulk.chunks(batches))
    except sqlite3.IntegrityError as exc:  # the SQLite fast path runs on the sqlite3 cursor
        text = str(exc)
        if text.startswith(("UNIQUE constraint failed", "PRIMARY KEY must be unique")):
            raise DuplicateKeyError(
                f"the batches for {table.name} repeat a key {key}: {exc}"
            ) from exc
        if any(text == f"NOT NULL constraint failed: {table.name}.{k}" for k in key):
            raise ValueError(f"the batches for {table.name} hold a null key: {exc}") from exc
        raise sa.exc.IntegrityError(f"INSERT INTO {table.name}", None, exc) from exc
    except sa.exc.IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == "23505":  # unique_violation
            raise DuplicateKeyError(
                f"the batches for {table.name} repeat a key {key}: {exc}"
            ) from exc
        raise


def _all_new(
    conn: sa.Connection, table: sa.Table, columns: list[str], key: tuple[str, ...], batches: Batches
) -> bool:
    """Input given as a list of tables/batches: True if no stored row has one of the input's
    values of the leading key column (then a plain bulk insert is a correct upsert).

    Holds off other writers until the transaction ends, so no row with those keys can
    appear between the check and the insert (readers go on): PostgreSQL locks the table
    (SHARE ROW EXCLUSIVE), SQLite takes its one write lock with a no-op DELETE. The first
    load of a table and a load of new symbols take this path; updates of stored symbols go
    through the staging table. Not for tables stamped with ``updated_at`` (the merge sets it).

    On SQLite this is what makes a first load fast: a load into an empty table skips the
    staging copy and the ``INSERT ... SELECT ... ON CONFLICT`` merge, about 60% of the
    load's time (``benchmarks/bench_warehouse.py``).
    """
    dialect = conn.dialect.name
    if dialect not in ("postgresql", "sqlite") or not isinstance(batches, (list, tuple)):
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
    if dialect == "sqlite":
        conn.exec_driver_sql(f"DELETE FROM {qualified} WHERE 0")  # takes the write lock
        if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is None:
            return True  # an empty table: the first load
        stored = table.c[lead]
        scope = sorted(v for v in values.to_pylist() if v is not None)
        for i in range(0, len(scope), IN_LIST):
            probe = sa.select(sa.literal(1)).where(stored.in_(scope[i : i + IN_LIST])).limit(1)
            if conn.execute(probe).first() is not None:
                return False
        return True
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
        now = bulk.utcnow()
        select_cols.append(sa.literal(now, table.c.updated_at.type).label("updated_at"))
        insert_cols.append("updated_at")
    # WHERE true: without it SQLite would parse ON CONFLICT as the join constraint of the SELECT.
    stmt = bulk.dialect_insert(conn, table).from_select(
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
        for batch in bulk.chunks(batches):
            if "run_id" in batch.schema.names:
                batch = batch.drop_columns(["run_id"])
            yield batch.append_column("run_id", pa.array([run_id] * batch.num_rows, pa.string()))

    conn.execute(sa.delete(table).where(table.c.run_id == run_id))
    chunks = with_run_id()
    first = next(chunks, None)
    if first is None:
        return 0
    columns = bulk.columns_of(first, table)
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
        for batch in bulk.chunks(batches):
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
    columns = bulk.columns_of(first, table)
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


# --------------------------------------------------------------------------- one run


class WarehouseTransaction:
    """The loads of one run on one connection, in one transaction (see ``run_transaction``).

    Each method does what the module function of the same name does, without
    committing: the block of ``run_transaction`` commits everything at its end.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def load_table(
        self, table_name: str, batches: Batches, *, key: tuple[str, ...], replace: Replace = None
    ) -> LoadStats:
        """Upsert ``batches`` into ``table_name`` (see :func:`load_table`)."""
        return _load_table(self.conn, table_name, batches, key=key, replace=replace)

    def replace_quarantine(self, batches: Batches, *, run_id: str | None = None) -> LoadStats:
        """Make ``quarantine`` hold exactly ``batches`` (see :func:`replace_quarantine`)."""
        return _replace_quarantine(self.conn, batches, run_id=run_id)

    def replace_run_rows(self, table_name: str, run_id: str, batches: Batches) -> int:
        """Replace the rows of ``run_id`` (see :func:`replace_run_rows`)."""
        return _replace_run_rows(self.conn, table_name, run_id, batches)

    def stored_values(self, table_name: str, column: str) -> set[Any]:
        """The distinct values of one column (e.g. the symbols a table holds)."""
        col = table_for(table_name).c[column]
        return set(self.conn.execute(sa.select(col).distinct()).scalars())

    def record_run(self, manifest: Mapping[str, Any]) -> None:
        """Upsert the run and its quality rows (see :func:`record_run`)."""
        records.record_run_in(self.conn, manifest)

    def audit(self, actor: str, action: str, detail: Mapping[str, Any] | None = None) -> int:
        """Append an ``audit_log`` entry (see :func:`audit`)."""
        return records.audit_in(self.conn, actor, action, detail)


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
