"""Incremental carry of the Spark engine: a run from a carried state equals the full run.

For REAL FILES of the shared Kaggle Huge sample (pg, rsls, zbzx) and a
HAND-MADE flat symbol (not market data), the full daily features are computed
first; then, per symbol, only rows [k-250, end) are given as context with the
recursive columns carried from the full run's row k-1 (the carry row). On
every row >= k all features must equal the full run's within 1e-8 relative
(nulls in the same places), the carry row must hold the carried values, and
the Polars engine given the same carry must agree.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from pyspark.sql import SparkSession

from stockbatch import schema
from stockbatch.features import polars as polars_features
from stockbatch.features import spark as spark_features
from stockbatch.features.catalog import CARRY_COLUMNS, STATE_COLUMNS
from support.silver import SILVER, read_silver

pytestmark = [pytest.mark.spark]

FILES = ("Stocks/pg.us.txt", "Stocks/rsls.us.txt", "Stocks/zbzx.us.txt")
TOL = 1e-8
CONTEXT = 250
# per symbol: the first new row k (several positions: early, middle, the last row)
SPLITS = {"PG": 9_000, "RSLS": 400, "ZBZX": -1, "FLAT": 260}


def _flat() -> pl.DataFrame:
    """HAND-MADE: 300 rows of a constant price (RSI 50, zero std windows)."""
    n = 300
    return pl.DataFrame(
        {
            "symbol": ["FLAT"] * n,
            "trade_date": pl.date_range(
                pl.date(2015, 1, 1), pl.date(2016, 12, 31), "1d", eager=True
            ).head(n),
            "open": [7.0] * n,
            "high": [7.0] * n,
            "low": [7.0] * n,
            "close": [7.0] * n,
            "adj_close": [None] * n,
            "volume": [100.0] * n,
            "source": ["hand-made"] * n,
            "is_adjusted": [False] * n,
            "superseded": [False] * n,
            "source_file": ["hand-made"] * n,
            "line_no": list(range(2, n + 2)),
        },
        schema=SILVER,
    )


def _to_spark(spark: SparkSession, df: pl.DataFrame) -> object:
    return spark.createDataFrame(df.to_arrow())


def _collect(sdf: object) -> pl.DataFrame:
    out = pl.from_arrow(sdf.toArrow())  # type: ignore[attr-defined]
    assert isinstance(out, pl.DataFrame)
    return out.sort("symbol", "trade_date")


def _assert_close(expected: pl.DataFrame, got: pl.DataFrame, what: str) -> None:
    assert got.height == expected.height, what
    for c in schema.DAILY_BAR_COLUMNS:
        assert got[c].equals(expected[c], null_equal=True), (what, c)
    for name in schema.DAILY_FEATURE_COLUMNS:
        a, b = expected[name], got[name]
        assert a.is_null().equals(b.is_null()), f"{what} {name}: nulls differ"
        ok = ((a - b).abs() <= TOL * a.abs().clip(lower_bound=1.0)) | a.is_null()
        assert ok.all(), (
            f"{what} {name}: {expected.filter(~ok).select('symbol', 'trade_date', name).head(3)}"
        )


def test_carry_continues_the_full_run(spark: SparkSession, huge_sample: Path) -> None:
    silver = pl.concat([*(read_silver(huge_sample, f) for f in FILES), _flat()])
    full = _collect(spark_features.compute_daily(_to_spark(spark, silver), with_state=True))  # type: ignore[arg-type]
    assert full.columns == [*schema.DAILY_FEATURES.names, *STATE_COLUMNS]

    context, carry, new = [], [], []
    for sym, k in SPLITS.items():
        rows = full.filter(pl.col("symbol") == sym)
        k = k % rows.height
        assert k >= 1
        carry.append(rows.slice(k - 1, 1).select("symbol", "trade_date", *CARRY_COLUMNS))
        bars = silver.filter(pl.col("symbol") == sym).sort("trade_date")
        context.append(bars.slice(max(0, k - CONTEXT), None))
        new.append(rows.slice(k - 1, None))
    carry_df = pl.concat(carry)
    bars_df = pl.concat(context)
    expected = pl.concat(new).select(schema.DAILY_FEATURES.names).sort("symbol", "trade_date")

    got = _collect(
        spark_features.compute_daily(
            _to_spark(spark, bars_df),  # type: ignore[arg-type]
            _to_spark(spark, carry_df),  # type: ignore[arg-type]
            with_state=True,
        )
    )
    got_new = got.join(carry_df.select("symbol", pl.col("trade_date").alias("__c")), on="symbol")
    got_new = (
        got_new.filter(pl.col("trade_date") >= pl.col("__c"))
        .drop("__c")
        .sort("symbol", "trade_date")
    )
    # the carry row holds the carried values
    on_carry = got_new.join(carry_df, on=["symbol", "trade_date"], suffix="_carried")
    assert on_carry.height == len(SPLITS)
    for c in CARRY_COLUMNS:
        assert (on_carry[c] == on_carry[f"{c}_carried"]).all(), c
    _assert_close(expected, got_new.select(schema.DAILY_FEATURES.names), "spark carry vs full")
    # rows before the carry row are context: their recursive values are null
    before = got.join(carry_df.select("symbol", pl.col("trade_date").alias("__c")), on="symbol")
    assert before.filter(pl.col("trade_date") < pl.col("__c"))["ema_12"].null_count() == (
        bars_df.height - got_new.height
    )

    # the Polars engine, given the same context and carry, agrees
    polars_got = polars_features.compute_daily(bars_df, carry_df, with_state=True)
    polars_new = polars_got.join(
        carry_df.select("symbol", pl.col("trade_date").alias("__c")), on="symbol"
    ).filter(pl.col("trade_date") >= pl.col("__c"))
    _assert_close(
        polars_new.select(schema.DAILY_FEATURES.names).sort("symbol", "trade_date"),
        got_new.select(schema.DAILY_FEATURES.names),
        "spark carry vs polars carry",
    )


def test_carry_row_missing_from_bars_fails(spark: SparkSession) -> None:
    bars = _flat()
    carry = pl.DataFrame(
        {"symbol": ["FLAT"], "trade_date": [dt.date(2030, 1, 1)]}
        | {c: [1.0] for c in CARRY_COLUMNS}
    )
    out = spark_features.compute_daily(_to_spark(spark, bars), _to_spark(spark, carry))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="carry row"):
        out.collect()
