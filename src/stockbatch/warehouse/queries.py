"""Read queries used by the API, the dashboard and the ML export.

Tables come back as Arrow with the canonical schemas of ``stockbatch.schema``
(the warehouse gives back exactly the types the engines produced), plain
Python values for small results.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from stockbatch import schema
from stockbatch.warehouse import models

NUL = "\x00"
"""PostgreSQL text cannot hold it (psycopg refuses the parameter): a value asked for
that contains one matches nothing, on either warehouse, instead of failing."""

SYMBOLS_PER_QUERY = 500
"""Symbols per ``IN (...)`` list (SQLite caps bound parameters per statement)."""


def _raw(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Select ``col`` without SQLAlchemy's per-value result processing (``_to_arrow`` converts)."""
    return sa.type_coerce(col, sa.types.NullType()).label(col.key)


def _array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """Driver values of one column -> an Arrow array of ``type_``."""
    if pa.types.is_floating(type_):
        # numpy turns None into NaN at C speed; from_pandas makes NaN null again (the warehouse
        # stores no NaN: the loader writes NaN as NULL).
        return pa.array(np.array(values, dtype=np.float64), type=type_, from_pandas=True)
    if pa.types.is_date(type_):
        sample = next((v for v in values if v is not None), None)
        if isinstance(sample, str):  # SQLite keeps dates as ISO text
            return pa.array(values, pa.string()).cast(type_)
        return pa.array(values, type=type_)
    if pa.types.is_boolean(type_):  # SQLite returns 0/1
        return pa.array([None if v is None else bool(v) for v in values], type=type_)
    return pa.array(values, type=type_)


def _no_nan(array: pa.Array) -> pa.Array:
    """NaN as null, as ``_array`` reads floats (the warehouse stores no NaN: a guard)."""
    if pa.types.is_floating(array.type) and pc.any(pc.is_nan(array)).as_py():
        return pc.if_else(pc.is_nan(array), pa.scalar(None, array.type), array)
    return array


def _to_arrow(rows: Sequence[Sequence[Any]], target: pa.Schema) -> pa.Table:
    """Rows (in ``target``'s column order, raw driver values) -> a table of exactly ``target``."""
    if not rows:
        return target.empty_table()
    if isinstance(rows[0], tuple):  # the driver's own rows (daily_page), not Row objects
        try:
            # One pass of Arrow's C++ converter over the row tuples, when the driver's values
            # already have the target types (PostgreSQL): faster than the column by column
            # path below, which SQLite needs (dates as text, booleans as 0/1).
            struct = pa.array(rows, type=pa.struct(list(target)))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        else:
            arrays = [_no_nan(a) for a in struct.flatten()]
            return pa.Table.from_arrays(arrays, schema=target)
    columns = list(zip(*rows, strict=True))
    arrays = [_array(values, f.type) for values, f in zip(columns, target, strict=True)]
    return pa.Table.from_arrays(arrays, schema=target)


def next_quarter(quarter: str) -> str:
    """``"2017Q4"`` -> ``"2018Q1"``."""
    year, q = int(quarter[:4]), int(quarter[5])
    return f"{year + 1}Q1" if q == 4 else f"{year}Q{q + 1}"


def quarterly_table(
    engine: sa.Engine,
    quarters: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    *,
    first: str | None = None,
    last: str | None = None,
    as_of: dt.date | None = None,
    after: tuple[str, str] | None = None,
    limit: int | None = None,
) -> pa.Table:
    """The quarterly feature table, exactly ``schema.QUARTERLY_FEATURES``, by symbol and quarter.

    ``quarters`` / ``symbols`` restrict the rows (the ``quarter`` index serves the first);
    ``first`` / ``last`` bound the quarter (inclusive, ``"2019Q1"``); ``after`` is a
    (symbol, quarter) cursor and ``limit`` a page size.

    ``as_of`` makes the table point-in-time (no look-ahead): only rows with
    ``available_at <= as_of``, and ``label_next_q_return`` null where the next
    quarter's row was not available yet on ``as_of``.
    """
    t = models.quarterly_features
    stmt = sa.select(*[_raw(t.c[n]) for n in schema.QUARTERLY_FEATURES.names]).order_by(
        t.c.symbol, t.c.quarter
    )
    if quarters is not None:
        stmt = stmt.where(t.c.quarter.in_(list(quarters)))
    if symbols is not None:
        stmt = stmt.where(t.c.symbol.in_(list(symbols)))
    if first is not None:
        stmt = stmt.where(t.c.quarter >= first)  # YYYYQn sorts as text
    if last is not None:
        stmt = stmt.where(t.c.quarter <= last)
    if as_of is not None:
        stmt = stmt.where(t.c.available_at <= as_of)
    if after is not None:
        stmt = stmt.where(sa.tuple_(t.c.symbol, t.c.quarter) > sa.tuple_(*after))
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        table = _to_arrow(rows, schema.QUARTERLY_FEATURES)
        if as_of is not None and table.num_rows:
            table = _labels_known_on(conn, table, as_of)
    return table


def _labels_known_on(conn: sa.Connection, table: pa.Table, as_of: dt.date) -> pa.Table:
    """Null ``label_next_q_return`` where the next quarter's row is not available on
    ``as_of`` (the label is that quarter's return: unknown before it is published)."""
    t = models.quarterly_features
    keys = list(zip(table["symbol"].to_pylist(), table["quarter"].to_pylist(), strict=True))
    wanted = {(sym, next_quarter(q)) for sym, q in keys}
    known: set[tuple[str, str]] = set()
    syms = sorted({sym for sym, _ in wanted})
    nexts = sorted({q for _, q in wanted})
    for i in range(0, len(syms), SYMBOLS_PER_QUERY):
        stmt = sa.select(t.c.symbol, t.c.quarter).where(
            t.c.symbol.in_(syms[i : i + SYMBOLS_PER_QUERY]),
            t.c.quarter.in_(nexts),
            t.c.available_at <= as_of,
        )
        known.update((sym, q) for sym, q in conn.execute(stmt))
    mask = pa.array([(sym, next_quarter(q)) in known for sym, q in keys])
    label = "label_next_q_return"
    idx = table.schema.get_field_index(label)
    masked = pc.if_else(mask, table[label], pa.scalar(None, pa.float64()))
    return table.set_column(idx, table.schema.field(idx), masked)


def _daily_select() -> sa.Select[Any]:
    bars, feats = models.daily_bars, models.daily_features
    on = sa.and_(bars.c.symbol == feats.c.symbol, bars.c.trade_date == feats.c.trade_date)
    cols = [_raw(bars.c[n]) for n in schema.DAILY_BAR_COLUMNS] + [
        _raw(feats.c[n]) for n in schema.DAILY_FEATURE_COLUMNS
    ]
    # LEFT JOIN: a bar whose features are not loaded yet still shows, with null features.
    return (
        sa.select(*cols)
        .select_from(bars.outerjoin(feats, on))
        .order_by(bars.c.symbol, bars.c.trade_date)
    )


def daily_table(
    engine: sa.Engine,
    symbols: Sequence[str] | None = None,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    batch_rows: int = 100_000,
) -> Iterator[pa.Table]:
    """Stream bars joined with their daily features (``schema.DAILY_FEATURES``).

    Ordered by symbol, then trade_date; at most ``batch_rows`` rows per table.
    ``symbols=None`` streams every symbol; ``start``/``end`` bound trade_date
    (inclusive). The connection stays open until the iterator is exhausted or closed.
    """
    bars = models.daily_bars
    base = _daily_select()
    if start is not None:
        base = base.where(bars.c.trade_date >= start)
    if end is not None:
        base = base.where(bars.c.trade_date <= end)
    if symbols is None:
        statements = [base]
    else:
        wanted = sorted(set(symbols))  # sorted, so the chunks keep the global symbol order
        statements = [
            base.where(bars.c.symbol.in_(wanted[i : i + SYMBOLS_PER_QUERY]))
            for i in range(0, len(wanted), SYMBOLS_PER_QUERY)
        ]
    with engine.connect() as conn:
        for stmt in statements:
            result = conn.execution_options(yield_per=batch_rows).execute(stmt)
            for part in result.partitions():
                yield _to_arrow(part, schema.DAILY_FEATURES)


def daily_page(
    engine: sa.Engine,
    symbols: Sequence[str] | None = None,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    after: tuple[str, dt.date] | None = None,
    limit: int = 5_000,
) -> pa.Table:
    """One page of :func:`daily_table`'s rows: at most ``limit`` rows after the
    (symbol, trade_date) cursor ``after``, in the same order."""
    bars = models.daily_bars
    stmt = _daily_select()
    if symbols is not None:
        stmt = stmt.where(bars.c.symbol.in_(sorted(set(symbols))))
    if start is not None:
        stmt = stmt.where(bars.c.trade_date >= start)
    if end is not None:
        stmt = stmt.where(bars.c.trade_date <= end)
    if after is not None:
        stmt = stmt.where(sa.tuple_(bars.c.symbol, bars.c.trade_date) > sa.tuple_(*after))
    with engine.connect() as conn:
        result = conn.execute(stmt.limit(limit))
        rows = result.cursor.fetchall()  # the driver's tuples: no Row objects
        result.close()
    return _to_arrow(rows, schema.DAILY_FEATURES)


def known_symbols(engine: sa.Engine, symbols: Sequence[str]) -> set[str]:
    """Those of ``symbols`` that the warehouse has (every symbol in gold is an instrument)."""
    t = models.instruments
    wanted = sorted(set(symbols))
    found: set[str] = set()
    with engine.connect() as conn:
        for i in range(0, len(wanted), SYMBOLS_PER_QUERY):
            stmt = sa.select(t.c.symbol).where(t.c.symbol.in_(wanted[i : i + SYMBOLS_PER_QUERY]))
            found.update(conn.execute(stmt).scalars())
    return found


def instrument(engine: sa.Engine, symbol: str) -> dict[str, Any] | None:
    """One instrument with the span of its data (first/last trade date, bars, quarters),
    or None when the warehouse does not have it."""
    t, bars, q = models.instruments, models.daily_bars, models.quarterly_features
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.symbol == symbol)).first()
        if row is None:
            return None
        first, last, n = conn.execute(
            sa.select(
                sa.func.min(bars.c.trade_date), sa.func.max(bars.c.trade_date), sa.func.count()
            ).where(bars.c.symbol == symbol)
        ).one()
        quarters = conn.execute(
            sa.select(sa.func.count()).select_from(q).where(q.c.symbol == symbol)
        ).scalar_one()
    out = dict(row._mapping)
    out["updated_at"] = _utc(out.get("updated_at"))
    out |= {
        "first_date": _date(first),
        "last_date": _date(last),
        "bars": int(n),
        "quarters": int(quarters),
    }
    return out


def _date(value: Any) -> dt.date | None:
    if isinstance(value, str):  # SQLite aggregates give back ISO text
        return dt.date.fromisoformat(value)
    return cast(dt.date | None, value)


def freshness(engine: sa.Engine) -> list[dict[str, Any]]:
    """Per source: symbols and the last trade date stored (how fresh each source is)."""
    bars = models.daily_bars
    stmt = (
        sa.select(
            bars.c.source,
            sa.func.count(sa.distinct(bars.c.symbol)),
            sa.func.max(bars.c.trade_date),
        )
        .group_by(bars.c.source)
        .order_by(bars.c.source)
    )
    with engine.connect() as conn:
        return [
            {"source": src, "symbols": int(n), "last_trade_date": _date(last)}
            for src, n, last in conn.execute(stmt)
        ]


def quarters(engine: sa.Engine) -> list[str]:
    """Every quarter of the quarterly table, newest first."""
    t = models.quarterly_features
    stmt = sa.select(t.c.quarter).distinct().order_by(t.c.quarter.desc())
    with engine.connect() as conn:
        return [str(q) for q in conn.execute(stmt).scalars()]


def last_dates(engine: sa.Engine) -> dict[str, dt.date]:
    """The last stored trade_date of every symbol (where an incremental update starts)."""
    bars = models.daily_bars
    stmt = sa.select(bars.c.symbol, sa.func.max(bars.c.trade_date)).group_by(bars.c.symbol)
    with engine.connect() as conn:
        return {symbol: last for symbol, last in conn.execute(stmt)}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def instruments(
    engine: sa.Engine, search: str | None = None, limit: int | None = None, after: str | None = None
) -> pa.Table:
    """Instruments (``schema.INSTRUMENTS``) ordered by symbol (``after``: a symbol cursor).

    ``search``: the SQL fallback of the search index: case-insensitive prefix
    of the symbol or substring of the name (``%`` and ``_`` match literally).
    """
    t = models.instruments
    stmt = sa.select(*[_raw(t.c[n]) for n in schema.INSTRUMENTS.names]).order_by(t.c.symbol)
    if search and NUL in search:
        stmt = stmt.where(sa.false())
    elif search:
        needle = _like_escape(search.lower())
        symbol = sa.func.lower(t.c.symbol)
        by_symbol = symbol.like(needle + "%", escape="\\")
        stmt = stmt.where(
            sa.or_(by_symbol, sa.func.lower(t.c.name).like("%" + needle + "%", escape="\\"))
        )
        # Best first, as the search index ranks: the exact symbol, symbol prefixes, names.
        rank = sa.case((symbol == search.lower(), 0), (by_symbol, 1), else_=2)
        stmt = stmt.order_by(None).order_by(rank, t.c.symbol)
    if after is not None:
        stmt = stmt.where(t.c.symbol > after)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return _to_arrow(rows, schema.INSTRUMENTS)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite keeps no zone; the loader stores UTC, so a naive value read back is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def runs(engine: sa.Engine, last: int = 20, before: str | None = None) -> list[dict[str, Any]]:
    """The ``last`` pipeline runs, newest first, each with its ``quality`` metrics.

    Each run is a dict of the ``pipeline_runs`` columns but the manifest
    (timestamps aware, UTC) plus ``quality``: ``{metric: value}`` from
    ``data_quality``. ``before``: a run id cursor (run ids sort by start time).
    """
    r, q = models.pipeline_runs, models.data_quality
    cols = [c for c in r.c if c.key != "manifest"]
    stmt = sa.select(*cols).order_by(r.c.run_id.desc()).limit(last)
    if before is not None:
        stmt = stmt.where(r.c.run_id < before)
    with engine.connect() as conn:
        result = [dict(row._mapping) for row in conn.execute(stmt)]
        ids = [row["run_id"] for row in result]
        quality: dict[str, dict[str, float]] = {run_id: {} for run_id in ids}
        if ids:
            for run_id, metric, value in conn.execute(
                sa.select(q.c.run_id, q.c.metric, q.c.value)
                .where(q.c.run_id.in_(ids))
                .order_by(q.c.run_id, q.c.metric)
            ):
                quality[run_id][metric] = value
    for row in result:
        row["started_at"] = _utc(row["started_at"])
        row["finished_at"] = _utc(row["finished_at"])
        row["quality"] = quality[row["run_id"]]
    return result


def run(engine: sa.Engine, run_id: str) -> dict[str, Any] | None:
    """One run: its ``pipeline_runs`` row, ``quality`` and the whole ``manifest``."""
    r, q = models.pipeline_runs, models.data_quality
    if NUL in run_id:
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(r).where(r.c.run_id == run_id)).first()
        if row is None:
            return None
        quality = {
            m: v
            for m, v in conn.execute(
                sa.select(q.c.metric, q.c.value).where(q.c.run_id == run_id).order_by(q.c.metric)
            )
        }
    out = dict(row._mapping)
    out["started_at"] = _utc(out["started_at"])
    out["finished_at"] = _utc(out["finished_at"])
    out["quality"] = quality
    return out


def last_run_id(engine: sa.Engine, with_quality: bool = False) -> str | None:
    """The newest run id (``with_quality``: the newest that recorded quality metrics)."""
    r, q = models.pipeline_runs, models.data_quality
    stmt = sa.select(sa.func.max(r.c.run_id))
    if with_quality:
        stmt = sa.select(sa.func.max(q.c.run_id))
    with engine.connect() as conn:
        value = conn.execute(stmt).scalar_one()
    return None if value is None else str(value)


def table_counts(engine: sa.Engine) -> dict[str, int]:
    """Row count of every data table (health page, tests).

    The account tables (``models.SECRET_TABLES``) are left out: the reader role
    may not read them, and they are not data.
    """
    with engine.connect() as conn:
        return {
            name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for name, t in models.metadata.tables.items()
            if name not in models.SECRET_TABLES
        }


def symbol_daily(engine: sa.Engine, symbol: str, last: int) -> pa.Table:
    """The ``last`` newest daily rows of one symbol (bars + features), oldest first."""
    bars = models.daily_bars
    newest = _daily_select().where(bars.c.symbol == symbol)
    stmt = newest.order_by(None).order_by(bars.c.trade_date.desc()).limit(last)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return _to_arrow(rows[::-1], schema.DAILY_FEATURES)


def symbol_quarterly(engine: sa.Engine, symbol: str, last: int) -> pa.Table:
    """The ``last`` newest quarterly rows of one symbol, oldest first."""
    t = models.quarterly_features
    stmt = (
        sa.select(*[_raw(t.c[n]) for n in schema.QUARTERLY_FEATURES.names])
        .where(t.c.symbol == symbol)
        .order_by(t.c.quarter.desc())
        .limit(last)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return _to_arrow(rows[::-1], schema.QUARTERLY_FEATURES)


QUARANTINE_GROUPS = {
    "reason": "reasons",
    "group": "reasons",
    "symbol": "symbol",
    "file": "source_file",
}
"""What ``quarantine_counts`` can group by, and the column behind each (``group``: the
exact combination of reasons of a row)."""


def _quarantine_filter(
    stmt: sa.Select[Any], run_id: str | None, reason: str | None, symbol: str | None
) -> sa.Select[Any]:
    t = models.quarantine
    if any(NUL in v for v in (run_id, reason, symbol) if v is not None):
        return stmt.where(sa.false())
    if run_id is not None:
        # The process run that refused the row, or the landing that brought it.
        stmt = stmt.where(sa.or_(t.c.run_id == run_id, t.c.ingest_run_id == run_id))
    if reason is not None:
        # ``reasons`` is comma-joined: match a whole code, not a substring of another.
        padded = sa.literal(",") + t.c.reasons + sa.literal(",")
        stmt = stmt.where(padded.like(f"%,{_like_escape(reason)},%", escape="\\"))
    if symbol is not None:
        stmt = stmt.where(t.c.symbol == symbol)
    return stmt


def quarantine_counts(
    engine: sa.Engine,
    by: str = "reason",
    *,
    run_id: str | None = None,
    reason: str | None = None,
    symbol: str | None = None,
) -> list[tuple[str, int]]:
    """Quarantined rows per reason code (a row with two reasons counts for both), per
    reason group (the combination a row carries: every row counted once), symbol or
    source file; most first."""
    t = models.quarantine
    col = t.c[QUARANTINE_GROUPS[by]]
    stmt = _quarantine_filter(sa.select(col, sa.func.count()).group_by(col), run_id, reason, symbol)
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for key, n in conn.execute(stmt):
            if by == "reason":
                keys = str(key).split(",")
            else:
                keys = [str(key).replace(",", " + ") if by == "group" else str(key)]
            for k in keys:
                counts[k] = counts.get(k, 0) + int(n)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def quarantine_rows(
    engine: sa.Engine,
    *,
    run_id: str | None = None,
    reason: str | None = None,
    symbol: str | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[dict[str, Any]]:
    """Refused rows with their reasons and where they came from (file and line), in
    storage order (``id``); ``after_id`` is the cursor of the next page."""
    t = models.quarantine
    cols = [
        t.c.id, t.c.symbol, t.c.trade_date, t.c.open, t.c.high, t.c.low, t.c.close, t.c.adj_close,
        t.c.volume, t.c.reasons, t.c.source, t.c.source_file, t.c.line_no, t.c.raw_line,
        t.c.run_id, t.c.ingest_run_id,
    ]  # fmt: skip
    stmt = _quarantine_filter(sa.select(*cols), run_id, reason, symbol)
    if after_id is not None:
        stmt = stmt.where(t.c.id > after_id)
    stmt = stmt.order_by(t.c.id).limit(limit)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(stmt)]
