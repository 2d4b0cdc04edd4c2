"""Parity of the quarterly table: Spark ``compute_quarterly`` against Polars'.

Both engines read the SAME daily rows (Polars ``compute_daily`` output), so any
difference is the quarterly stage's. Inputs: REAL FILES of the shared Kaggle
Huge sample (pg: 1970-2017, 190 quarters; rsls; zbzx) plus HAND-MADE EDGE
CASES (not market data): a one-row symbol, a symbol with whole quarters
missing (gaps), one starting mid-quarter, and a dataset that ends mid-quarter
(the last quarter incomplete: ``q_complete`` false and the label of the
quarter before it null), and (contract v2) a symbol whose open is not
recorded on a quarter's first rows and on a whole quarter (``q_open`` the
first recorded one, or null), and one at the implausible_value bounds (prices
1e-6 / 1e9, volume 1e13: every value finite). Compared: every column of
schema.QUARTERLY_FEATURES,
nulls in the same places, ``|a - b| <= 1e-8 * max(|a|, 1)``.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import polars as pl
import pytest
from pyspark.sql import SparkSession

from stockbatch import lake, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.features import polars as polars_features
from stockbatch.features import spark as spark_features
from support.silver import SILVER, read_silver

pytestmark = [pytest.mark.spark]

FILES = ("Stocks/pg.us.txt", "Stocks/rsls.us.txt", "Stocks/zbzx.us.txt")
TOL = 1e-8
DAILY = lake.polars_schema(schema.DAILY_FEATURES)


def _bars(symbol: str, dates: list[dt.date], closes: list[float]) -> pl.DataFrame:
    n = len(dates)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "trade_date": dates,
            "open": closes,
            "high": [c * 1.02 for c in closes],
            "low": [c * 0.98 for c in closes],
            "close": closes,
            "adj_close": [None] * n,
            "volume": [1000.0 + i for i in range(n)],
            "source": ["hand-made"] * n,
            "is_adjusted": [False] * n,
            "superseded": [False] * n,
            "source_file": ["hand-made"] * n,
            "line_no": list(range(2, n + 2)),
        },
        schema=SILVER,
    )


def _weekdays(start: dt.date, end: dt.date) -> list[dt.date]:
    out, d = [], start
    while d <= end:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def edge_cases() -> pl.DataFrame:
    """HAND-MADE EDGE CASES (not market data)."""
    gap_days = _weekdays(dt.date(2016, 1, 4), dt.date(2016, 3, 31)) + _weekdays(
        dt.date(2016, 10, 3), dt.date(2017, 2, 15)
    )  # 2016Q2 and Q3 missing
    mid = _weekdays(dt.date(2017, 2, 14), dt.date(2017, 11, 15))  # ends mid-quarter
    no_open = _weekdays(dt.date(2016, 1, 4), dt.date(2016, 9, 30))
    opens = pl.Series(
        "open",
        # 2016Q1: not recorded on its first 5 rows; 2016Q2: on none; 2016Q3: recorded
        [None if (d.month <= 3 and i < 5) or 4 <= d.month <= 6 else 20.0 + i / 7
         for i, d in enumerate(no_open)],
        dtype=pl.Float64,
    )  # fmt: skip
    extreme = _weekdays(dt.date(2016, 1, 4), dt.date(2017, 6, 30))
    return pl.concat(
        [
            _bars("ONE", [dt.date(2017, 5, 3)], [42.0]),
            _bars("GAP", gap_days, [10 + 3 * math.sin(i / 5) for i in range(len(gap_days))]),
            _bars("MID", mid, [50 + i * 0.1 - 8 * math.cos(i / 9) for i in range(len(mid))]),
            _bars("NOOPEN", no_open, [20.0 + i / 7 for i in range(len(no_open))]).with_columns(
                opens
            ),
            _bars("EXTREME", extreme, [1e-6 if i % 2 else 1e9 for i in range(len(extreme))])
            .with_columns(pl.lit(1e9).alias("high"), pl.lit(1e-6).alias("low"))
            .with_columns(pl.lit(1e13).alias("volume")),
        ]
    )


@pytest.fixture(scope="module")
def daily(huge_sample: Path) -> pl.DataFrame:
    silver = pl.concat([*(read_silver(huge_sample, f) for f in FILES), edge_cases()])
    return polars_features.compute_daily(silver)


def _compare(expected: pl.DataFrame, got: pl.DataFrame) -> None:
    assert got.columns == list(schema.QUARTERLY_FEATURES.names)
    assert got.schema == expected.schema
    assert got.height == expected.height
    for name in got.columns:
        a, b = expected[name], got[name]
        assert a.is_null().equals(b.is_null()), f"{name}: nulls differ"
        if a.dtype == pl.Float64:
            ok = ((a - b).abs() <= TOL * a.abs().clip(lower_bound=1.0)) | a.is_null()
            ok = ok | (a.is_nan() & b.is_nan())
            assert ok.all(), f"{name}:\n{expected.filter(~ok).head(3)}\n{got.filter(~ok).head(3)}"
        else:
            assert a.equals(b, null_equal=True), name


@pytest.mark.parametrize("last", [None, dt.date(2017, 11, 15), dt.date(2017, 12, 29)])
def test_quarterly_parity(spark: SparkSession, daily: pl.DataFrame, last: dt.date | None) -> None:
    dataset_last = last or daily["trade_date"].max()
    assert isinstance(dataset_last, dt.date)
    calendar = SessionCalendar.covering(daily["trade_date"].min(), dataset_last)  # type: ignore[arg-type]
    expected = polars_features.compute_quarterly(daily, calendar, dataset_last)
    sdf = spark.createDataFrame(daily.to_arrow().cast(schema.DAILY_FEATURES))
    out = spark_features.compute_quarterly(sdf, calendar.sessions.to_list(), dataset_last)
    got = pl.from_arrow(out.orderBy("symbol", "quarter").toArrow())
    assert isinstance(got, pl.DataFrame)
    got = got.cast(dict(expected.schema))  # type: ignore[arg-type]
    _compare(expected, got)
    # the edge cases do what they claim
    gap = got.filter(pl.col("symbol") == "GAP")
    assert gap["quarter"].to_list() == ["2016Q1", "2016Q4", "2017Q1"]
    assert gap["q_return"][1] is None and gap["label_next_q_return"][0] is None
    one = got.filter(pl.col("symbol") == "ONE")
    assert one.height == 1 and one["q_volatility"][0] is None and one["q_trading_days"][0] == 1
    if last == dt.date(2017, 11, 15):
        assert not got.filter(pl.col("quarter") == "2017Q4")["q_complete"].any()
    no_open = got.filter(pl.col("symbol") == "NOOPEN")
    assert no_open["q_open"].to_list() == [pytest.approx(20 + 5 / 7), None, pytest.approx(
        20 + no_open["q_trading_days"][:2].sum() / 7)]  # fmt: skip
    floats = [n for n, t in got.schema.items() if t == pl.Float64]
    bad = got.select(pl.col(n).is_finite().not_().sum() for n in floats).row(0)
    assert not any(bad), dict(zip(floats, bad, strict=True))
    assert got.filter(pl.col("symbol") == "EXTREME")["q_return"].drop_nulls().len() > 0
