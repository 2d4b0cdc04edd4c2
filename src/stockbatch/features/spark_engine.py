"""The Spark feature engine: compiles :mod:`stockbatch.features.catalog` to PySpark.

Same catalog, same semantics as :mod:`stockbatch.features.polars_engine` (the
reference); one compiler per catalog kind, so no formula is written twice.

* Row kinds and rolling kinds compile to Spark ``Column`` expressions; rolling
  ones are window functions over ``Window.partitionBy(symbol).orderBy(trade_date)``
  with a ``rowsBetween(-(n-1), 0)`` frame ("rows", not calendar days). A rolling
  value is null until the frame holds ``n`` non-null values (``count == n``).
  Spark recomputes a sliding aggregate over its frame instead of adding and
  subtracting, so the rolling mean has no drift; std uses Spark's
  central-moment aggregate (differences to Polars stay ~1e-12 relative).
* Recursive kinds (``ema``, ``wilder_mean``) are NOT expressible as bounded
  window frames: ``ema_t`` depends on every earlier row. The alternatives are
  (a) an unbounded frame collecting the whole history per row and folding it
  (O(n^2) per symbol: 12,000-row symbols cost 72 M steps per feature), or
  (b) an approximation truncated after k rows (not exact, breaks the 1e-8
  parity). So they run in a grouped pandas UDF (``applyInPandas``, one call
  per symbol) that computes the exact recursions with pandas'
  ``ewm(adjust=False)`` (compiled, O(n)). It scales like the window functions:
  both need all rows of one symbol in one task (the same hash partitioning by
  symbol, so the UDF adds no extra shuffle once the frame is partitioned), and
  one symbol's full history is small (< 20 k rows). All recursive features
  whose inputs are ready run in the same UDF pass; the catalog needs two
  passes (``ema_12, ema_26, _avg_gain, _avg_loss, atr_14``, then
  ``macd_signal``, which reads ``macd``).

Division follows IEEE (Polars) semantics: ``x/0`` is ``±inf`` or NaN, never an
error (Spark's ANSI mode would raise) nor null (Spark's legacy mode).

:func:`compute_daily` is lazy: it builds the plan and runs no Spark job.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window, WindowSpec
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stockbatch import schema
from stockbatch.calendar import SessionCalendar
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

SYMBOL = "symbol"
DATE = "trade_date"


class SparkUnavailableError(RuntimeError):
    """No Java runtime, or the Spark session could not start."""


_JAVA_HINT = (
    "the Spark engine needs a Java 17 runtime (Debian/Ubuntu: `apt-get install "
    "openjdk-17-jre-headless`; or set JAVA_HOME) and PySpark (`pip install -e '.[spark]'`, "
    "pinned in requirements.lock)"
)


def spark_session(
    master: str = "local[*]",
    app_name: str = "stockbatch",
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """A SparkSession for the Spark engine (local by default; a cluster URL works too).

    Python workers run this interpreter (``PYSPARK_PYTHON``/``PYSPARK_DRIVER_PYTHON``
    are set to ``sys.executable`` when unset: the ``spark.pyspark.python``
    setting alone is not honoured in local mode, measured). Arrow transfers on,
    UTC session time zone (dates must not shift), UI off, shuffle partitions
    ``2 * cores`` in local mode, quiet logs. ``conf`` overrides any of these
    (e.g. ``spark.driver.memory``, which only applies to a new JVM). Raises
    :class:`SparkUnavailableError` with what to install when Java is missing
    or the session does not start.
    """
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise SparkUnavailableError(f"no `java` on PATH and JAVA_HOME unset: {_JAVA_HINT}")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings: dict[str, str] = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if master.startswith("local"):
        cores = _local_cores(master)
        settings.update(
            {
                "spark.sql.shuffle.partitions": str(2 * cores),
                "spark.default.parallelism": str(cores),
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
            }
        )
    settings.update(conf or {})
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in settings.items():
        builder = builder.config(k, v)
    try:
        session = builder.getOrCreate()
    except Exception as e:  # the JVM gateway raises plain Exceptions/RuntimeErrors
        raise SparkUnavailableError(f"could not start Spark ({e}); {_JAVA_HINT}") from e
    session.sparkContext.setLogLevel("ERROR")
    return session


def _local_cores(master: str) -> int:
    inner = master[len("local") :].strip("[]").split(",")[0]
    if inner in ("", "*"):
        return os.cpu_count() or 1
    try:
        return max(1, int(inner))
    except ValueError:
        return os.cpu_count() or 1


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


def _window(d: FeatureDef) -> int:
    if d.window is None:
        raise ValueError(f"{d.name} ({d.kind}) needs a window")
    return d.window


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
    return _rolling_mean(_col(d), _window(d))


def _c_rolling_std(d: FeatureDef) -> Column:
    return _rolling_std(_col(d), _window(d), int(d.param("ddof"))) * annualization_scale(d)


def _c_bollinger(d: FeatureDef) -> Column:
    n, x = _window(d), _col(d)
    return _rolling_mean(x, n) + d.param("k") * _rolling_std(x, n, int(d.param("ddof")))


def _c_rolling_zscore(d: FeatureDef) -> Column:
    n, x = _window(d), _col(d)
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


# --- recursive kinds: pandas compilers, run per symbol inside applyInPandas ----------------
# Each takes one symbol's rows (sorted by trade_date) and returns the feature as a
# float64 array. Inputs have leading nulls only (see catalog).

PandasCompiler = Callable[[FeatureDef, pd.DataFrame], np.ndarray]


def _r_ema(d: FeatureDef, pdf: pd.DataFrame) -> np.ndarray:
    # y_t = a*x_t + (1-a)*y_{t-1}, seeded with the first non-null x; leading nulls stay null.
    x = pdf[d.inputs[0]].astype("float64")
    return x.ewm(span=_window(d), adjust=False).mean().to_numpy(dtype="float64")


def _r_wilder_mean(d: FeatureDef, pdf: pd.DataFrame) -> np.ndarray:
    # Seed = mean of the first full window of n non-null values, on its last row;
    # then (prev*(n-1) + x_t)/n, i.e. an adjust=False EWM with alpha=1/n from the seed.
    n = _window(d)
    x = pdf[d.inputs[0]].astype("float64").reset_index(drop=True)
    out = np.full(len(x), np.nan)
    full = x.notna().astype("int64").rolling(n, min_periods=n).sum().to_numpy() == n
    hits = np.flatnonzero(full)
    if len(hits) == 0:
        return out
    first = int(hits[0])
    seeded = x.copy()
    seeded.iloc[:first] = np.nan
    seeded.iloc[first] = float(np.mean(x.iloc[first - n + 1 : first + 1].to_numpy()))
    ewm = seeded.ewm(alpha=1.0 / n, adjust=False).mean().to_numpy(dtype="float64")
    out[first:] = ewm[first:]
    return out


RECURSIVE_COMPILERS: dict[str, PandasCompiler] = {
    "ema": _r_ema,
    "wilder_mean": _r_wilder_mean,
}


_CARRY_DATE = "__carry_date"


def _carry_col(name: str) -> str:
    return f"__carry__{name}"


def _r_carried(d: FeatureDef, pdf: pd.DataFrame, k: int) -> np.ndarray:
    """The recursion of ``d`` restarted from the carried value on row ``k``: null before
    it (context rows), the carried value on it, the recursion from it after it."""
    n = _window(d)
    alpha = 2.0 / (n + 1.0) if d.kind == "ema" else 1.0 / n
    z = pdf[d.inputs[0]].astype("float64").reset_index(drop=True).copy()
    z.iloc[:k] = np.nan
    z.iloc[k] = float(pdf[_carry_col(d.name)].iloc[0])
    # adjust=False from the first non-null value: y_k = carry, y_t = a*x_t + (1-a)*y_{t-1}
    # (EMA) or (y_{t-1}*(n-1) + x_t)/n (Wilder, a = 1/n), as the full run computes them.
    return z.ewm(alpha=alpha, adjust=False).mean().to_numpy(dtype="float64")


def _recursive_pass(df: DataFrame, defs: Sequence[FeatureDef], carried: bool) -> DataFrame:
    """Append the recursive features ``defs`` (inputs all present) with one grouped UDF.

    ``carried``: ``df`` holds the carry columns (null for symbols without a carry row).
    """
    out_schema = T.StructType(
        [*df.schema.fields, *(T.StructField(d.name, T.DoubleType(), True) for d in defs)]
    )
    names = [f.name for f in out_schema.fields]

    def per_symbol(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values(DATE, kind="stable").reset_index(drop=True)
        k: int | None = None
        if carried and pdf[_CARRY_DATE].notna().iloc[0]:
            hits = np.flatnonzero((pdf[DATE] == pdf[_CARRY_DATE].iloc[0]).to_numpy())
            if len(hits) == 0:
                raise ValueError(
                    f"carry row of {pdf[SYMBOL].iloc[0]!r} ({pdf[_CARRY_DATE].iloc[0]}) is not "
                    "a row of bars: every carry row must be a row of bars"
                )
            k = int(hits[0])
        for d in defs:
            if k is None:
                pdf[d.name] = RECURSIVE_COMPILERS[d.kind](d, pdf)
            else:
                pdf[d.name] = _r_carried(d, pdf, k)
        return pdf[names]

    return df.groupBy(SYMBOL).applyInPandas(per_symbol, schema=out_schema)


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
        df = _recursive_pass(df, ready_rec, carried)
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
    return [F.col(n).cast(_SPARK_TYPES[t]).alias(n) for n, t in fields]


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
        F.col(DATE).cast("date").alias(_CARRY_DATE),
        *[F.col(c).cast("double").alias(_carry_col(c)) for c in CARRY_COLUMNS],
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

    Incremental use (the semantics of ``polars_engine.compute_daily``):
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


def _a_first(d: FeatureDef) -> Column:
    # min of struct(trade_date, ...): the row with the earliest date, by value (Spark's
    # F.first is "any row" after a shuffle); the field may be null (a snapshot).
    return F.col(_QFIRST)[d.inputs[0]]


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


AGGREGATE_COMPILERS: dict[str, Compiler] = {
    "first": _a_first,
    "last": _a_last,
    "max": _a_max,
    "min": _a_min,
    "mean": _a_mean,
    "sum": _a_sum,
    "count": _a_count,
    "std": _a_std,
    "max_drawdown": _a_max_drawdown,
}


class _Sessions:
    """Exchange sessions as sorted int32 day numbers, for the vectorised look-ups
    (the same ``searchsorted`` arithmetic as :class:`stockbatch.calendar.SessionCalendar`)."""

    def __init__(self, sessions: Sequence[dt.date]) -> None:
        days = np.array(sorted({(d - _EPOCH).days for d in sessions}), dtype=np.int64)
        if days.size == 0:
            raise ValueError("sessions is empty")
        self.days = days

    def udfs(self) -> tuple[Callable[..., Column], Callable[..., Column], Callable[..., Column]]:
        """pandas UDFs: count_sessions(s, e), next_session_after(d), last_session_on_or_before."""
        days = self.days
        lo, hi = int(days[0]), int(days[-1])

        def to_days(s: pd.Series) -> np.ndarray:
            return pd.to_datetime(s).to_numpy().astype("datetime64[D]").astype(np.int64)

        def from_days(x: np.ndarray) -> pd.Series:
            return pd.Series(x.astype("datetime64[D]")).dt.date

        def count(s: pd.Series, e: pd.Series) -> pd.Series:
            a, b = to_days(s), to_days(e)
            n = np.searchsorted(days, b, side="right") - np.searchsorted(days, a, side="left")
            return pd.Series(np.maximum(n, 0).astype("int32"))

        def after(d: pd.Series) -> pd.Series:
            idx = np.searchsorted(days, to_days(d), side="right")
            if idx.size and idx.max() >= days.size:
                raise ValueError(
                    f"the sessions end on {_EPOCH + dt.timedelta(days=hi)}: no next session "
                    "after a quarter end (pass sessions covering a year past the data)"
                )
            return from_days(days[idx])

        def on_or_before(d: pd.Series) -> pd.Series:
            idx = np.searchsorted(days, to_days(d), side="right") - 1
            if idx.size and idx.min() < 0:
                raise ValueError(
                    f"the sessions start on {_EPOCH + dt.timedelta(days=lo)}: a quarter "
                    "ends before them"
                )
            return from_days(days[idx])

        return (
            F.pandas_udf(count, T.IntegerType()),  # type: ignore[call-overload]
            F.pandas_udf(after, T.DateType()),  # type: ignore[call-overload]
            F.pandas_udf(on_or_before, T.DateType()),  # type: ignore[call-overload]
        )


_EPOCH = dt.date(1970, 1, 1)


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

    Same contract as ``polars_engine.compute_quarterly``: ``daily`` holds all
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
        *[
            AGGREGATE_COMPILERS[d.kind](d).alias(d.name)
            for d in aggs
            if d.kind not in ("first", "last")
        ],
    )
    q = q.select(
        *[c for c in q.columns if c not in (_QFIRST, _QLAST)],
        *[
            AGGREGATE_COMPILERS[d.kind](d).alias(d.name)
            for d in aggs
            if d.kind in ("first", "last")
        ],
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
    count, after, on_or_before = _Sessions(sessions).udfs()
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


# --- the whole-lake job -------------------------------------------------------------------


@dataclass
class SparkProcessResult:
    """Outcome of :func:`process_lake` (the figures ``pipeline.process`` reports)."""

    counts: dict[str, Any]
    winners: dict[str, str]
    daily_rows: int
    quarterly_rows: int
    symbols: int
    dataset_last_date: dt.date
    written: list[Path] = field(default_factory=list)
    bucket_counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The counts of each bucket alone (what an incremental update adds to)."""


_PART = "part-00000.parquet"
_ROW = "__row"


def _bucket_writer(
    root: Path, target: Any, compression: str, tail_root: Path | None = None
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """``mapInArrow`` function: writes the rows of each bucket (contiguous in its partition,
    sorted) to ``root/bucket=NNN/part-00000.parquet`` with the Polars path's writer.

    ``tail_root``: also write each bucket's incremental-update tail there (daily rows
    with the carried state columns; :func:`stockbatch.processing.tail_of`).
    """

    def write(batches: Iterator[Any]) -> Iterator[Any]:
        import polars as pl
        import pyarrow as pa

        from stockbatch import lake

        pending: list[Any] = []
        current: int | None = None

        def flush() -> Any:
            table = pa.Table.from_batches(pending)
            frame = pl.from_arrow(table.drop_columns(["bucket"]))
            assert isinstance(frame, pl.DataFrame)
            path = lake.bucket_dir(root, int(current or 0)) / _PART
            lake.write_parquet_atomic(lake.conform(frame, target), path, compression)
            if tail_root is not None:
                from stockbatch.process import update as processing

                tail = lake.bucket_dir(tail_root, int(current or 0)) / _PART
                lake.write_parquet_atomic(processing.tail_of(frame), tail, compression)
            return pa.RecordBatch.from_pydict(
                {"bucket": [current], "path": [str(path)], "rows": [table.num_rows]},
                schema=pa.schema([("bucket", pa.int32()), ("path", pa.string()),
                                  ("rows", pa.int64())]),
            )  # fmt: skip

        for batch in batches:
            if batch.num_rows == 0:
                continue
            buckets = batch.column("bucket").to_pylist()
            start = 0
            for i in range(1, len(buckets) + 1):
                if i == len(buckets) or buckets[i] != buckets[start]:
                    if current is not None and buckets[start] != current:
                        yield flush()
                        pending = []
                    current = buckets[start]
                    pending.append(batch.slice(start, i - start))
                    start = i
        if pending:
            yield flush()

    return write


def _write_buckets(
    df: DataFrame,
    *,
    root: Path,
    target: Any,
    order: Sequence[Column],
    buckets: int,
    compression: str,
    tail_root: Path | None = None,
) -> list[Path]:
    """Write ``df`` (with a ``bucket`` column) as one sorted file per bucket under ``root``.

    Why workers write, not Spark's Parquet writer nor the driver: Spark's writer
    gives Spark's Parquet types (non-null fields ``required``, 3-level lists
    named ``element``, Spark metadata), not the lake's (Polars' writer:
    large strings, ``item`` lists); and one ``toArrow()`` to the driver holds the
    whole layer in driver memory at once (~0.5 GB of daily rows for the Huge
    sample, 10x for the full set). Here the rows are shuffled by bucket (each
    bucket in one task), sorted within partitions, and each task writes its
    buckets with ``lake.write_parquet_atomic`` (temp file + rename), bounded by
    one bucket's rows. Needs a filesystem shared by driver and executors (local
    mode; a cluster needs ``root`` on a shared mount). Buckets without rows get
    an empty file, as in the Polars path.
    """
    out = (
        df.repartition(max(1, buckets), "bucket")
        .sortWithinPartitions(F.col("bucket"), *order)
        .mapInArrow(
            _bucket_writer(root, target, compression, tail_root),
            "bucket int, path string, rows long",
        )
        .collect()
    )
    written = {int(r["bucket"]): Path(r["path"]) for r in out}
    import polars as pl

    from stockbatch import lake

    empty = pl.DataFrame(schema=lake.polars_schema(target))
    for b in range(buckets):
        if b not in written:
            path = lake.bucket_dir(root, b) / _PART
            lake.write_parquet_atomic(empty, path, compression)
            written[b] = path
            if tail_root is not None:
                from stockbatch.process import update as processing

                tail = pl.DataFrame(schema=processing.TAIL_SCHEMA)
                lake.write_parquet_atomic(tail, lake.bucket_dir(tail_root, b) / _PART, compression)
    return [written[b] for b in sorted(written)]


def _replace_layer(root: Path, written: Iterable[Path]) -> None:
    """Remove the layer's files this run did not write (e.g. buckets that vanished)."""
    from stockbatch import lake

    keep = set(written)
    for p in lake.parquet_files(root):
        if p not in keep:
            p.unlink()


def process_lake(
    spark: SparkSession,
    *,
    bronze_files: list[str],
    active_keys: list[tuple[str, str]] | None,
    as_of: dt.date,
    calendar: SessionCalendar,
    source_priority: list[str],
    buckets: int,
    silver_root: Path,
    gold_root: Path,
    compression: str,
    state_root: Path | None = None,
) -> SparkProcessResult:
    """The process stage (bronze -> silver -> gold) as one Spark application.

    Reads the bronze Parquet ``bronze_files`` directly; ``active_keys``: keep only
    rows whose ``(source_file, ingest_run_id)`` is listed (None: every row).
    Validates (:func:`stockbatch.quality_spark.validate`'s compiler), computes
    the daily and quarterly features and writes the lake layout of the Polars
    path, file for file (``silver_root/bars``, ``silver_root/quarantine``,
    ``gold_root/daily_features``: ``bucket=NNN/part-00000.parquet`` per bucket;
    ``gold_root/quarterly_features/part-00000.parquet``), rows sorted and typed
    as there. Buckets are the bronze rows' ``bucket``. Counts have the
    structure and values of the Polars path's summed per-bucket counts.

    Spark jobs: one pass validates and counts (the flagged rows are persisted);
    silver, quarantine and daily are each one shuffle-by-bucket write; the
    quarterly table reads the daily files just written back (cheaper than
    keeping the daily rows cached) and is written by the driver (one small file).
    """
    from stockbatch import quality_spark as qs

    if not bronze_files:
        raise ValueError("process_lake: no bronze files")
    try:
        spark.sparkContext.defaultParallelism  # noqa: B018 - fails fast on a dead session
    except Exception as e:
        raise SparkUnavailableError(f"the Spark session is not usable ({e}); {_JAVA_HINT}") from e
    bronze = spark.read.schema(qs.BRONZE_SPARK).parquet(*bronze_files)
    if active_keys is not None:
        keys = spark.createDataFrame(
            list(active_keys), "source_file string, ingest_run_id string"
        ).distinct()
        bronze = bronze.join(F.broadcast(keys), ["source_file", "ingest_run_id"], "left_semi")
    # One shuffle by symbol: the duplicate window, the jump window and the counts group
    # by keys that include the symbol, so they all reuse this partitioning.
    bronze = bronze.repartition(SYMBOL)
    sessions = calendar.sessions.to_list()
    work = qs.flagged(bronze, as_of=as_of).persist()
    try:
        rows = [r.asDict() for r in qs.counts_frame(work, sessions).collect()]
        summary = qs.summarize(rows, with_calendar=True, source_priority=source_priority)
        bucket_counts = _bucket_counts(rows, buckets, source_priority)
        dataset_last = summary.last_date or as_of
        written: list[Path] = []
        clean = qs.clean_rows(work, summary.losers, extra=["bucket"])
        bars_root, quarantine_root = silver_root / "bars", silver_root / "quarantine"
        written += _write_buckets(
            clean,
            root=bars_root,
            target=schema.SILVER_BARS,
            order=[F.col(c).asc() for c in qs.SILVER_ORDER],
            buckets=buckets,
            compression=compression,
        )
        written += _write_buckets(
            qs.quarantine_rows(work, extra=["bucket"]),
            root=quarantine_root,
            target=schema.QUARANTINE,
            order=[F.col(c).asc_nulls_last() for c in (*qs.QUARANTINE_ORDER, _ROW)],
            buckets=buckets,
            compression=compression,
        )
        _replace_layer(bars_root, written)
        _replace_layer(quarantine_root, written)
        live = clean.filter(~F.col("superseded"))
        symbol_bucket = [
            (r["symbol"], int(r["bucket"]))
            for r in rows
            if r["rows_clean"] and summary.winners.get(r["symbol"]) == r["source"]
        ]
        bucket_of = spark.createDataFrame(
            sorted(set(symbol_bucket)), "symbol string, bucket short"
        ).dropDuplicates([SYMBOL])
        daily = compute_daily(live, with_state=state_root is not None).join(
            F.broadcast(bucket_of), SYMBOL, "left"
        )
        daily_root = gold_root / "daily_features"
        daily_files = _write_buckets(
            daily,
            root=daily_root,
            target=schema.DAILY_FEATURES,
            order=[F.col(SYMBOL).asc(), F.col(DATE).asc()],
            buckets=buckets,
            compression=compression,
            tail_root=None if state_root is None else state_root / "tail",
        )
        written += daily_files
        _replace_layer(daily_root, written)
    finally:
        work.unpersist()
    daily_rows = summary.counts["rows_clean"] - summary.counts["rows_superseded"]
    quarterly = _quarterly_table(spark, daily_files, sessions, dataset_last, daily_rows)
    qpath = gold_root / "quarterly_features" / _PART
    from stockbatch import lake

    lake.write_parquet_atomic(
        lake.conform(quarterly, schema.QUARTERLY_FEATURES), qpath, compression
    )
    written.append(qpath)
    return SparkProcessResult(
        counts=summary.counts,
        winners=summary.winners,
        daily_rows=daily_rows,
        quarterly_rows=quarterly.height,
        symbols=len(summary.winners),
        dataset_last_date=dataset_last,
        written=written,
        bucket_counts=bucket_counts,
    )


def _bucket_counts(
    rows: list[dict[str, Any]], buckets: int, source_priority: list[str]
) -> dict[str, dict[str, Any]]:
    """Counts per bucket (a symbol's rows are all in its bucket, so each sums alone)."""
    from stockbatch import lake
    from stockbatch import quality_spark as qs

    by: dict[int, list[dict[str, Any]]] = {b: [] for b in range(buckets)}
    for r in rows:
        b = lake.symbol_bucket(r["symbol"], buckets) if r["symbol"] is not None else 0
        by[b].append(r)
    return {
        str(b): qs.summarize(part, with_calendar=True, source_priority=source_priority).counts
        for b, part in by.items()
    }


def bucket_counts(
    rows: list[dict[str, Any]], present: list[int], source_priority: list[str], bronze: Any
) -> dict[int, dict[str, Any]]:
    """Counts of each bucket in ``present`` from :func:`quality_spark.counts_frame` rows,
    the bucket of a row taken from the bronze rows' own ``bucket`` (``bronze``: a Polars
    frame with ``symbol`` and ``bucket``); ``__symbols`` lists each bucket's symbols."""
    from stockbatch import quality_spark as qs

    owner = dict(bronze.select("symbol", "bucket").unique("symbol").iter_rows())
    by: dict[int, list[dict[str, Any]]] = {b: [] for b in present}
    for r in rows:
        by[int(owner.get(r["symbol"], present[0]))].append(r)
    out: dict[int, dict[str, Any]] = {}
    for b, part in by.items():
        counts = qs.summarize(part, with_calendar=True, source_priority=source_priority).counts
        out[b] = {**counts, "__symbols": {r["symbol"] for r in part}}
    return out


def _quarterly_table(
    spark: SparkSession,
    daily_files: list[Path],
    sessions: Sequence[dt.date],
    dataset_last: dt.date,
    daily_rows: int,
) -> Any:
    """The quarterly table (Polars frame, sorted by symbol, quarter) from the daily files."""
    import polars as pl

    from stockbatch import lake
    from stockbatch import quality_spark as qs

    if daily_rows == 0:
        return pl.DataFrame(schema=lake.polars_schema(schema.QUARTERLY_FEATURES))
    daily = spark.read.schema(qs.spark_schema(schema.DAILY_FEATURES)).parquet(
        *[str(p) for p in daily_files]
    )
    q = pl.from_arrow(compute_quarterly(daily, sessions, dataset_last).toArrow())
    assert isinstance(q, pl.DataFrame)
    return q.sort("symbol", "quarter")


__all__ = [
    "SparkProcessResult",
    "SparkUnavailableError",
    "adjusted",
    "compute_daily",
    "compute_quarterly",
    "process_lake",
    "spark_session",
]
