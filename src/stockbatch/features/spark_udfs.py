"""The pandas UDFs of the Spark features: the exact recursions and the calendar look-ups.

The recursive kinds (``ema``, ``wilder_mean``) are not bounded window frames
(``ema_t`` depends on every earlier row), so they run in a grouped pandas UDF,
one call per symbol, with pandas' compiled ``ewm(adjust=False)``: exact, O(n)
(the alternatives are discussed in docs/design/spark.md). The quarterly
table's session look-ups are vectorised ``searchsorted`` UDFs over the
exchange sessions, the arithmetic of :class:`stockbatch.calendar.SessionCalendar`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stockbatch.features.catalog import FeatureDef

SYMBOL = "symbol"
DATE = "trade_date"


def window_of(d: FeatureDef) -> int:
    """The window of a windowed kind (a ValueError when the definition lacks one)."""
    if d.window is None:
        raise ValueError(f"{d.name} ({d.kind}) needs a window")
    return d.window


# --- recursive kinds: pandas compilers, run per symbol inside applyInPandas ----------------
# Each takes one symbol's rows (sorted by trade_date) and returns the feature as a
# float64 array. Inputs have leading nulls only (see catalog).

PandasCompiler = Callable[[FeatureDef, pd.DataFrame], np.ndarray]


def _r_ema(d: FeatureDef, pdf: pd.DataFrame) -> np.ndarray:
    # y_t = a*x_t + (1-a)*y_{t-1}, seeded with the first non-null x; leading nulls stay null.
    x = pdf[d.inputs[0]].astype("float64")
    return x.ewm(span=window_of(d), adjust=False).mean().to_numpy(dtype="float64")


def _r_wilder_mean(d: FeatureDef, pdf: pd.DataFrame) -> np.ndarray:
    # Seed = mean of the first full window of n non-null values, on its last row;
    # then (prev*(n-1) + x_t)/n, i.e. an adjust=False EWM with alpha=1/n from the seed.
    n = window_of(d)
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


CARRY_DATE = "__carry_date"
"""Column of the date of a symbol's carry row (null: no carry, start from the first row)."""


def carry_col(name: str) -> str:
    """Column of a symbol's carried value of recursive feature ``name``."""
    return f"__carry__{name}"


def _r_carried(d: FeatureDef, pdf: pd.DataFrame, k: int) -> np.ndarray:
    """The recursion of ``d`` restarted from the carried value on row ``k``: null before
    it (context rows), the carried value on it, the recursion from it after it."""
    n = window_of(d)
    alpha = 2.0 / (n + 1.0) if d.kind == "ema" else 1.0 / n
    z = pdf[d.inputs[0]].astype("float64").reset_index(drop=True).copy()
    z.iloc[:k] = np.nan
    z.iloc[k] = float(pdf[carry_col(d.name)].iloc[0])
    # adjust=False from the first non-null value: y_k = carry, y_t = a*x_t + (1-a)*y_{t-1}
    # (EMA) or (y_{t-1}*(n-1) + x_t)/n (Wilder, a = 1/n), as the full run computes them.
    return z.ewm(alpha=alpha, adjust=False).mean().to_numpy(dtype="float64")


def recursive_pass(df: DataFrame, defs: Sequence[FeatureDef], carried: bool) -> DataFrame:
    """Append the recursive features ``defs`` (inputs all present) with one grouped UDF.

    ``carried``: ``df`` holds the carry columns (null for symbols without a carry row).

    An Arrow UDF (``applyInArrow``): the symbol's rows stay Arrow, only the
    recursion's inputs become pandas. (It was ``applyInPandas``: converting every
    column to pandas and back cost ~2/3 of the Spark job on the Huge sample,
    measured.) A float NaN in a passed-through column becomes null, as the
    pandas round trip made it, so downstream windows see what they saw before.
    """
    out_schema = T.StructType(
        [*df.schema.fields, *(T.StructField(d.name, T.DoubleType(), True) for d in defs)]
    )
    floats = {f.name for f in df.schema.fields if isinstance(f.dataType, T.DoubleType)}
    needed = sorted(
        {d.inputs[0] for d in defs} | ({carry_col(d.name) for d in defs} if carried else set())
    )

    def per_symbol(table: pa.Table) -> pa.Table:
        table = table.take(pc.sort_indices(table, [(DATE, "ascending")]))  # stable
        pdf = pd.DataFrame(
            {c: table.column(c).to_numpy(zero_copy_only=False) for c in needed}, copy=False
        )
        k: int | None = None
        if carried and table.column(CARRY_DATE)[0].is_valid:
            carry_date = table.column(CARRY_DATE)[0]
            hits = np.flatnonzero(
                pc.fill_null(pc.equal(table.column(DATE), carry_date), False).to_numpy()
            )
            if len(hits) == 0:
                raise ValueError(
                    f"carry row of {table.column(SYMBOL)[0].as_py()!r} ({carry_date}) is not "
                    "a row of bars: every carry row must be a row of bars"
                )
            k = int(hits[0])
        columns = [
            pc.if_else(pc.is_nan(c), pa.scalar(None, c.type), c) if name in floats else c
            for name, c in zip(table.column_names, table.columns, strict=True)
        ]
        for d in defs:
            values = RECURSIVE_COMPILERS[d.kind](d, pdf) if k is None else _r_carried(d, pdf, k)
            columns.append(pa.array(values, type=pa.float64(), from_pandas=True))
        return pa.Table.from_arrays(columns, names=[f.name for f in out_schema.fields])

    return df.groupBy(SYMBOL).applyInArrow(per_symbol, schema=out_schema)


_EPOCH = dt.date(1970, 1, 1)


def calendar_udfs(
    sessions: Sequence[dt.date],
) -> tuple[Callable[..., Column], Callable[..., Column], Callable[..., Column]]:
    """pandas UDFs over the exchange ``sessions``: count_sessions(s, e),
    next_session_after(d), last_session_on_or_before(d).

    The sessions travel as sorted day numbers; each UDF is one ``searchsorted``
    per batch (the arithmetic of :class:`stockbatch.calendar.SessionCalendar`).
    """
    days = np.array(sorted({(d - _EPOCH).days for d in sessions}), dtype=np.int64)
    if days.size == 0:
        raise ValueError("sessions is empty")
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
