"""The features compiled to Spark: :mod:`stockbatch.features.catalog` as PySpark plans.

Same catalog, same semantics as :mod:`stockbatch.features.polars` (the
reference); one compiler per catalog kind, so no formula is written twice.
Row and rolling kinds become window-function columns; the recursive kinds
(EMA, Wilder means) run exactly in a grouped pandas UDF, one call per symbol
(why: docs/design/spark.md). Division follows IEEE (Polars) semantics: ``x/0``
is ``±inf`` or NaN, never an error nor null. :func:`compute_daily` and
:func:`compute_quarterly` are lazy: they build the plan and run no Spark job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stockbatch import schema
from stockbatch.features.catalog import (
    ADJUSTMENT,
    ADJUSTMENT_INPUTS,
    AGGREGATE_KINDS,
    CARRY_COLUMNS,
    DAILY_FEATURES,
    QUARTERLY_FEATURES,
    STATE_COLUMNS,
    FeatureDef,
    annualization_scale,
)
from stockbatch.features.spark_udfs import (
    CARRY_DATE,
    RECURSIVE_COMPILERS,
    calendar_udfs,
    carry_col,
    recursive_pass,
    window_of,
)

SYMBOL = "symbol"
DATE = "trade_date"


# --- per-symbol primitives ----------------------------------------------------------------
# (Window specs are built at compile time: PySpark needs an active session for them.)


def _by_symbol() -> WindowSpec:
    return Window.partitionBy(SYMBOL).orderBy(DATE)


def _frame(n: int) -> WindowSpec:
    return _by_symbol().rowsBetween(-(n - 1), 0)


def _lag(x: Column, k: int) -> Column:
    # F.lag over a symbol partition is null on the symbol's first k rows.
    return F.lag(x, k).over(_by_symbol())


def _full(x: Column, n: int, e: Column) -> Column:
    """``e`` when the last ``n`` rows of the symbol hold ``n`` non-null ``x``, else null."""
    return F.when(F.count(x).over(_frame(n)) == n, e)


def _rolling_mean(x: Column, n: int) -> Column:
    return _full(x, n, F.avg(x).over(_frame(n)))


def _rolling_std(x: Column, n: int, ddof: int) -> Column:
    std = F.stddev_samp if ddof == 1 else F.stddev_pop
    if ddof not in (0, 1):
        raise ValueError(f"ddof={ddof} not supported")
    return _full(x, n, std(x).over(_frame(n)))


def _div(a: Column, b: Column) -> Column:
    """``a / b`` with IEEE results on a zero divisor (like Polars), whatever the ANSI mode."""
    inf = F.lit(float("inf"))
    on_zero = (
        F.when(a.isNull(), F.lit(None).cast("double"))
        .when((a == 0) | F.isnan(a), F.lit(float("nan")))
        .when(a > 0, inf)
        .otherwise(-inf)
    )
    return F.when(b == 0, on_zero).otherwise(a / b)


def _ln(x: Column) -> Column:
    """Natural log with IEEE results (Spark's ``ln`` is null for x <= 0)."""
    return (
        F.when(x > 0, F.log(x))
        .when(x == 0, F.lit(float("-inf")))
        .when(x < 0, F.lit(float("nan")))
        .otherwise(F.log(x))  # null stays null, NaN stays NaN
    )


# --- compilers: one per kind ---------------------------------------------------------------

Compiler = Callable[[FeatureDef], Column]


def _col(d: FeatureDef, i: int = 0) -> Column:
    return F.col(d.inputs[i])


def _c_adjustment_factor(d: FeatureDef) -> Column:
    adj, close = _col(d, 0), _col(d, 1)
    return F.when(adj.isNotNull() & (close > 0), _div(adj, close)).otherwise(F.lit(1.0))


def _c_product(d: FeatureDef) -> Column:
    return _col(d, 0) * _col(d, 1)


def _c_quotient(d: FeatureDef) -> Column:
    return _div(_col(d, 0), _col(d, 1))


def _c_difference(d: FeatureDef) -> Column:
    return _col(d, 0) - _col(d, 1)


def _c_relative_to(d: FeatureDef) -> Column:
    return _div(_col(d, 0), _col(d, 1)) - 1.0


def _c_ratio_lag(d: FeatureDef) -> Column:
    return _div(_col(d), _lag(_col(d), d.lag)) - 1.0


def _c_log_ratio_lag(d: FeatureDef) -> Column:
    return _ln(_div(_col(d), _lag(_col(d), d.lag)))


def _c_diff_lag(d: FeatureDef) -> Column:
    return _col(d) - _lag(_col(d), d.lag)


def _c_positive_part(d: FeatureDef) -> Column:
    x = _col(d)
    return F.when(x < 0, F.lit(0.0)).otherwise(x)


def _c_negative_part(d: FeatureDef) -> Column:
    x = -_col(d)
    return F.when(x < 0, F.lit(0.0)).otherwise(x)


def _c_rolling_mean(d: FeatureDef) -> Column:
    return _rolling_mean(_col(d), window_of(d))


def _c_rolling_std(d: FeatureDef) -> Column:
    return _rolling_std(_col(d), window_of(d), int(d.param("ddof"))) * annualization_scale(d)


def _c_bollinger(d: FeatureDef) -> Column:
    n, x = window_of(d), _col(d)
    return _rolling_mean(x, n) + d.param("k") * _rolling_std(x, n, int(d.param("ddof")))


def _c_rolling_zscore(d: FeatureDef) -> Column:
    n, x = window_of(d), _col(d)
    z = _div(x - _rolling_mean(x, n), _rolling_std(x, n, int(d.param("ddof"))))
    # Exact "std == 0" test: max == min over the full window (see catalog).
    constant = F.max(x).over(_frame(n)) == F.min(x).over(_frame(n))
    return F.when(constant, F.lit(None).cast("double")).otherwise(z)


def _c_rsi(d: FeatureDef) -> Column:
    gain, loss = _col(d, 0), _col(d, 1)
    return (
        F.when((loss == 0) & (gain > 0), F.lit(100.0))
        .when((loss == 0) & (gain == 0), F.lit(50.0))
        .otherwise(100.0 - _div(F.lit(100.0), 1.0 + _div(gain, loss)))
    )


def _c_true_range(d: FeatureDef) -> Column:
    h, lo, c = _col(d, 0), _col(d, 1), _col(d, 2)
    prev_c = _lag(c, 1)
    # greatest() skips nulls, so the first row (no previous close) is h - l.
    return F.greatest(h - lo, F.abs(h - prev_c), F.abs(lo - prev_c))


def _c_log1p(d: FeatureDef) -> Column:
    # log1p, not ln(1 + x): Polars uses log1p (exact for small x). IEEE at and below -1
    # (Spark's log1p is null there).
    x = _col(d)
    return (
        F.when(x > -1.0, F.log1p(x))
        .when(x == -1.0, F.lit(float("-inf")))
        .when(x < -1.0, F.lit(float("nan")))
        .otherwise(x)  # null stays null, NaN stays NaN
    )


def _c_constant(d: FeatureDef) -> Column:
    return F.lit(d.param("value"))


ROW_COMPILERS: dict[str, Compiler] = {
    "adjustment_factor": _c_adjustment_factor,
    "product": _c_product,
    "quotient": _c_quotient,
    "difference": _c_difference,
    "relative_to": _c_relative_to,
    "ratio_lag": _c_ratio_lag,
    "log_ratio_lag": _c_log_ratio_lag,
    "diff_lag": _c_diff_lag,
    "positive_part": _c_positive_part,
    "negative_part": _c_negative_part,
    "rolling_mean": _c_rolling_mean,
    "rolling_std": _c_rolling_std,
    "bollinger": _c_bollinger,
    "rolling_zscore": _c_rolling_zscore,
    "rsi": _c_rsi,
    "true_range": _c_true_range,
    "log1p": _c_log1p,
    "constant": _c_constant,
}


# --- arranging the plan --------------------------------------------------------------------


def _apply(df: DataFrame, defs: Sequence[FeatureDef], carried: bool = False) -> DataFrame:
    """Add ``defs`` in dependency order: window/row kinds as Spark columns as soon as
    their inputs exist; recursive kinds batched into as few UDF passes as possible."""
    known = set(df.columns)
    pending = list(defs)
    while pending:
        ready_rows = []
        for d in pending:  # in catalog order, so a row def may read an earlier ready one
            if d.kind in ROW_COMPILERS and all(i in known for i in d.inputs):
                ready_rows.append(d)
                known.add(d.name)
        if ready_rows:
            for d in ready_rows:
                df = df.withColumn(d.name, ROW_COMPILERS[d.kind](d))
            pending = [d for d in pending if d not in ready_rows]
            continue
        ready_rec = [
            d
            for d in pending
            if d.kind in RECURSIVE_COMPILERS and all(i in known for i in d.inputs)
        ]
        if not ready_rec:
            unknown = {d.name: d.kind for d in pending}
            raise ValueError(f"cannot compile (unknown kind or missing input): {unknown}")
        df = recursive_pass(df, ready_rec, carried)
        known.update(d.name for d in ready_rec)
        pending = [d for d in pending if d not in ready_rec]
    return df


_SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "large_string": T.StringType(),
    "date32[day]": T.DateType(),
    "double": T.DoubleType(),
    "bool": T.BooleanType(),
    "int32": T.IntegerType(),
}


def _target_columns(fields: Iterable[tuple[str, str]]) -> list[Column]:
    """The target's columns, in order, with its types; a float value that is not finite
    becomes null (the catalog's "finite or null")."""
    out = []
    for n, t in fields:
        x = F.col(n).cast(_SPARK_TYPES[t])
        if t == "double":
            x = F.when(~F.isnan(x) & (F.abs(x) != F.lit(float("inf"))), x)
        out.append(x.alias(n))
    return out


def adjusted(silver: DataFrame) -> DataFrame:
    """Add the section-1 adjusted series ``factor, o, h, l, c, v`` to bars."""
    return _apply(silver, ADJUSTMENT)


def _with_carry(df: DataFrame, carry: DataFrame) -> DataFrame:
    """Attach each symbol's carry row (date and carried values) to all its rows."""
    missing = [c for c in (SYMBOL, DATE, *CARRY_COLUMNS) if c not in carry.columns]
    if missing:
        raise ValueError(f"carry lacks columns {missing}")
    renamed = carry.select(
        F.col(SYMBOL),
        F.col(DATE).cast("date").alias(CARRY_DATE),
        *[F.col(c).cast("double").alias(carry_col(c)) for c in CARRY_COLUMNS],
    )
    # One row per symbol: small next to the bars, so broadcast (no shuffle of the bars).
    return df.join(F.broadcast(renamed), on=SYMBOL, how="left")


def compute_daily(
    bars: DataFrame, carry: DataFrame | None = None, *, with_state: bool = False
) -> DataFrame:
    """FEATURES.md section 2 for every row of ``bars`` (a Spark DataFrame), lazily.

    ``bars``: clean, non-superseded silver rows (at least
    :data:`schema.DAILY_BAR_COLUMNS`) holding *all* rows of each symbol present,
    one per (symbol, trade_date); the caller guarantees this (checking it would
    cost a Spark job). Returns exactly the :data:`schema.DAILY_FEATURES`
    columns, in order, with their types; rows are not sorted.

    Incremental use (the semantics of ``features.polars.compute_daily``):
    ``carry`` holds per symbol the ``trade_date`` of its last already computed
    row (a row of ``bars``) and the values of :data:`catalog.CARRY_COLUMNS` on
    it (non-null). The recursive features equal the carried values on that row
    and continue their recursion from them; rows before it are context (their
    recursive values are null); every other feature reads the rows given.
    Symbols without a carry row are computed from their first row. A carry row
    missing from ``bars`` fails the job. ``with_state`` appends
    :data:`catalog.STATE_COLUMNS` (``_avg_gain``, ``_avg_loss``) so the next
    carry can be taken from each symbol's last row.
    """
    df = bars.select(*schema.DAILY_BAR_COLUMNS)
    if carry is not None:
        df = _with_carry(df, carry)
    # Partition by symbol once: the windows and the grouped UDFs all reuse it.
    df = df.repartition(SYMBOL)
    df = _apply(adjusted(df), DAILY_FEATURES, carried=carry is not None)
    fields = [(f.name, str(f.type)) for f in schema.DAILY_FEATURES]
    state = [F.col(c).cast("double").alias(c) for c in STATE_COLUMNS] if with_state else []
    return df.select(*_target_columns(fields), *state)


# --- quarterly (FEATURES.md section 3) -----------------------------------------------------

_QIDX = "_qidx"  # year*4 + quarter-1: consecutive quarters differ by exactly 1
_FIRST = "_first_date"  # the symbol's first trade_date overall
_LAST = "_last_date"  # the symbol's last trade_date overall
_QFIRST = "_q_first"  # first / last row of the quarter: struct(trade_date, inputs...)
_QLAST = "_q_last"


def _first_non_null_col(name: str) -> str:
    """The quarter's first row where ``name`` is not null: struct(trade_date, name)."""
    return f"__first_nn__{name}"


def _a_first(d: FeatureDef) -> Column:
    # min of struct(trade_date, ...): the row with the earliest date, by value (Spark's
    # F.first is "any row" after a shuffle); the field may be null (a snapshot).
    return F.col(_QFIRST)[d.inputs[0]]


def _a_first_non_null(d: FeatureDef) -> Column:
    return F.col(_first_non_null_col(d.inputs[0]))[d.inputs[0]]


def _a_last(d: FeatureDef) -> Column:
    return F.col(_QLAST)[d.inputs[0]]


def _a_max(d: FeatureDef) -> Column:
    return F.max(_col(d))


def _a_min(d: FeatureDef) -> Column:
    return F.min(_col(d))


def _a_mean(d: FeatureDef) -> Column:
    return F.avg(_col(d))


def _a_sum(d: FeatureDef) -> Column:
    # Polars sums no values to 0 (Spark: null).
    return F.coalesce(F.sum(_col(d)), F.lit(0.0))


def _a_count(d: FeatureDef) -> Column:
    return F.count(F.lit(1)).cast("int")


def _a_std(d: FeatureDef) -> Column:
    x = _col(d)
    std = F.stddev_samp(x) if int(d.param("ddof")) == 1 else F.stddev_pop(x)
    return F.when(F.count(x) >= d.param("min_count"), std * annualization_scale(d))


def _drawdown_col(d: FeatureDef) -> str:
    return f"__{d.name}__dd"


def _a_max_drawdown(d: FeatureDef) -> Column:
    # The row's drawdown (x / running max within the quarter - 1) is a window column
    # computed before the aggregation; here only its minimum.
    return F.min(F.col(_drawdown_col(d)))


_SNAPSHOT_KINDS = ("first", "first_non_null", "last")
"""Aggregates read from a per-quarter struct column after the grouping."""

AGGREGATE_COMPILERS: dict[str, Compiler] = {
    "first": _a_first,
    "first_non_null": _a_first_non_null,
    "last": _a_last,
    "max": _a_max,
    "min": _a_min,
    "mean": _a_mean,
    "sum": _a_sum,
    "count": _a_count,
    "std": _a_std,
    "max_drawdown": _a_max_drawdown,
}


def _adjacent_quarter(x: Column, step: int) -> Column:
    """x of the same symbol's quarter ``step`` calendar quarters away (-1 previous,
    +1 next); null when that quarter has no row."""
    w = Window.partitionBy(SYMBOL).orderBy(_QIDX)
    other = F.lag if step < 0 else F.lead
    same = other(F.col(_QIDX), 1).over(w) == F.col(_QIDX) + step
    return F.when(same, other(x, 1).over(w))


def compute_quarterly(
    daily: DataFrame, sessions: Sequence[dt.date], dataset_last_date: dt.date
) -> DataFrame:
    """FEATURES.md section 3 from daily feature rows (the output of :func:`compute_daily`).

    Same contract as ``features.polars.compute_quarterly``: ``daily`` holds all
    rows of each symbol present; ``sessions`` the exchange sessions covering
    those dates plus the year after (e.g. ``SessionCalendar.sessions``);
    ``dataset_last_date`` the last trade_date over all symbols (``q_complete``).
    Returns exactly the :data:`schema.QUARTERLY_FEATURES` columns, lazily,
    unsorted (sort by symbol, quarter).
    """
    aggs = [d for d in QUARTERLY_FEATURES if d.kind in AGGREGATE_KINDS]
    rest = [d for d in QUARTERLY_FEATURES if d.kind not in AGGREGATE_KINDS]
    snap_first = sorted({i for d in aggs if d.kind == "first" for i in d.inputs})
    snap_last = sorted({i for d in aggs if d.kind == "last" for i in d.inputs})
    first_nn = sorted({i for d in aggs if d.kind == "first_non_null" for i in d.inputs})
    needed = {SYMBOL, DATE, *ADJUSTMENT_INPUTS, *(i for d in aggs for i in d.inputs)}
    df = daily.select(*[c for c in daily.columns if c in needed])
    date = F.col(DATE)
    df = adjusted(df.withColumn(_QIDX, F.year(date) * 4 + F.quarter(date) - 1))
    drawdowns = [d for d in aggs if d.kind == "max_drawdown"]
    if drawdowns:
        running = (
            Window.partitionBy(SYMBOL, _QIDX)
            .orderBy(DATE)
            .rowsBetween(Window.unboundedPreceding, 0)
        )
        df = df.select(
            "*",
            *[
                (_div(_col(d), F.max(_col(d)).over(running)) - 1.0).alias(_drawdown_col(d))
                for d in drawdowns
            ],
        )
    q = df.groupBy(SYMBOL, _QIDX).agg(
        F.min(date).alias(_FIRST),
        F.max(date).alias(_LAST),
        F.min(F.struct(date, *snap_first)).alias(_QFIRST),
        F.max(F.struct(date, *snap_last)).alias(_QLAST),
        # min skips nulls: the struct only exists on rows where the value does.
        *[
            F.min(F.when(F.col(i).isNotNull(), F.struct(date, F.col(i)))).alias(
                _first_non_null_col(i)
            )
            for i in first_nn
        ],
        *[
            AGGREGATE_COMPILERS[d.kind](d).alias(d.name)
            for d in aggs
            if d.kind not in _SNAPSHOT_KINDS
        ],
    )
    snapshots = {_QFIRST, _QLAST, *(_first_non_null_col(i) for i in first_nn)}
    q = q.select(
        *[c for c in q.columns if c not in snapshots],
        *[AGGREGATE_COMPILERS[d.kind](d).alias(d.name) for d in aggs if d.kind in _SNAPSHOT_KINDS],
    )
    qy = (F.col(_QIDX) / 4).cast("int")  # _QIDX >= 0 for years >= 1: floor division
    qn = F.col(_QIDX) % 4 + 1
    per_symbol = Window.partitionBy(SYMBOL)
    start = F.make_date(qy, (qn - 1) * 3 + 1, F.lit(1))
    q = q.select(
        *[c for c in q.columns if c not in (_FIRST, _LAST)],
        F.min(_FIRST).over(per_symbol).alias(_FIRST),
        F.max(_LAST).over(per_symbol).alias(_LAST),
        F.concat(qy.cast("string"), F.lit("Q"), qn.cast("string")).alias("quarter"),
        start.alias("quarter_start"),
        F.date_sub(F.add_months(start, 3), 1).alias("quarter_end"),
    )
    count, after, on_or_before = calendar_udfs(sessions)
    for d in rest:
        q = q.withColumn(
            d.name, _quarterly_column(d, dataset_last_date, count, after, on_or_before)
        )
    fields = [(f.name, str(f.type)) for f in schema.QUARTERLY_FEATURES]
    return q.select(*_target_columns(fields))


def _quarterly_column(
    d: FeatureDef,
    dataset_last_date: dt.date,
    count: Callable[..., Column],
    after: Callable[..., Column],
    on_or_before: Callable[..., Column],
) -> Column:
    """A period kind (or a row kind) of the quarterly table as a Spark column."""
    if d.kind == "period_return":
        return _div(_col(d), _adjacent_quarter(_col(d), -1)) - 1.0
    if d.kind == "next_period_value":
        return F.when(_adjacent_quarter(_col(d, 1), +1), _adjacent_quarter(_col(d, 0), +1))
    if d.kind == "next_session_after":
        return after(_col(d))
    if d.kind == "period_complete":
        return F.lit(dataset_last_date) >= on_or_before(_col(d))
    if d.kind == "expected_sessions":
        s = F.greatest(F.col("quarter_start"), F.col(_FIRST))
        e = F.least(F.col("quarter_end"), F.col(_LAST))
        return count(s, e)
    return ROW_COMPILERS[d.kind](d)


__all__ = [
    "adjusted",
    "compute_daily",
    "compute_quarterly",
]
