"""Parity: the Spark engine against the Polars engine, on the same silver input.

Input: three REAL files of the shared Kaggle Huge sample (pg: 12,075 rows from
1970, long EWMs; rsls: prices from ~31,000 down to ~1.6 and zero-volume days;
zbzx: mostly zero volume, flat stretches), plus HAND-MADE EDGE CASES (not market
data): a one-row symbol, a zero-volume symbol, a flat-price symbol (RSI 50,
std 0, null volume_z_20), a symbol with an adj_close (factor != 1), a
symbol with fewer rows than the 14-row Wilder windows, and (contract v2) a
symbol whose open is not recorded on some rows (null), symbols at the
implausible_value bounds (prices 1e-6 and 1e9, volume 1e13, factors 1e-15 and
1e15: every feature finite) and one far beyond them (1e300: overflows, which
both engines publish as null).

Every column of schema.DAILY_FEATURES is compared: same rows, nulls in the same
places, ``|a - b| <= 1e-8 * max(|a|, 1)`` (FEATURES.md).

Needs PySpark (pinned in requirements.lock, installed by scripts/setup.sh) and Java 17; the local
SparkSession (``local[2]``) is the run's shared ``spark`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

# PySpark is pinned in requirements.lock (extra `spark`): a missing install must fail
# the run, not skip the parity check quietly.
from pyspark.sql import SparkSession

from stockbatch import schema
from stockbatch.features.polars import compute_daily as polars_daily
from stockbatch.features.spark import compute_daily as spark_daily
from support.silver import SILVER, read_silver

pytestmark = [pytest.mark.spark]

FILES = ("Stocks/pg.us.txt", "Stocks/rsls.us.txt", "Stocks/zbzx.us.txt")
TOL = 1e-8


def _edge_cases() -> pl.DataFrame:
    """HAND-MADE EDGE CASES (not market data)."""

    def bars(symbol: str, closes: list[float], **cols: list[float | None]) -> pl.DataFrame:
        n = len(closes)
        dates: list[date] = []
        d = date(2017, 1, 2)
        while len(dates) < n:
            if d.weekday() < 5:
                dates.append(d)
            d += timedelta(days=1)
        data = {
            "symbol": [symbol] * n,
            "trade_date": dates,
            "open": cols.get("opens", closes),
            "high": cols.get("highs", [c + 1 for c in closes]),
            "low": cols.get("lows", [c - 1 for c in closes]),
            "close": closes,
            "adj_close": cols.get("adj_closes", [None] * n),
            "volume": cols.get("volumes", [1000.0] * n),
            "source": ["hand-made"] * n,
            "is_adjusted": [False] * n,
            "superseded": [False] * n,
            "source_file": ["hand-made"] * n,
            "line_no": list(range(2, n + 2)),
        }
        return pl.DataFrame(data, schema=SILVER)

    wave = [10 + 3 * math.sin(t / 3) + t / 10 for t in range(60)]
    n = 260
    alt = [1e-6 if t % 2 else 1e9 for t in range(n)]
    vols = [1e13 if t % 3 else 0.0 for t in range(n)]
    return pl.concat(
        [
            bars("ONE", [42.0]),
            bars("ZEROVOL", wave, volumes=[0.0] * 60),
            bars("FLAT", [7.0] * 40, highs=[7.0] * 40, lows=[7.0] * 40),
            bars("ADJ", wave, adj_closes=[w * 0.5 for w in wave]),
            bars("SHORT", wave[:13]),
            bars("NOOPEN", wave, opens=[None if t % 3 else w for t, w in enumerate(wave)]),
            bars("ALT", alt, highs=[1e9] * n, lows=[1e-6] * n, volumes=vols),
            bars("HIGH", [1e9] * n, highs=[1e9] * n, lows=[1e9] * n, volumes=[1e13] * n),
            bars("LOW", [1e-6] * n, highs=[1e-6] * n, lows=[1e-6] * n, volumes=vols),
            bars("ADJDN", [1e9] * n, highs=[1e9] * n, lows=[1e9] * n, adj_closes=[1e-6] * n,
                 volumes=[1e13] * n),
            bars("ADJUP", alt, highs=[1e9] * n, lows=[1e-6] * n,
                 adj_closes=[1e9 if t % 2 else 1e-6 for t in range(n)], volumes=vols),
            bars("BEYOND", [1e300 if t % 2 else 1e-300 for t in range(30)],
                 highs=[1e300] * 30, lows=[1e-300] * 30, volumes=[1e300] * 30),
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def silver(huge_sample: Path) -> pl.DataFrame:
    return pl.concat([*(read_silver(huge_sample, f) for f in FILES), _edge_cases()])


@pytest.fixture(scope="module")
def both(spark: SparkSession, silver: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    expected = polars_daily(silver)
    sdf = spark.createDataFrame(silver.to_pandas(), schema=SPARK_SILVER)
    got = pl.from_arrow(spark_daily(sdf).toArrow())
    assert isinstance(got, pl.DataFrame)
    key = ["symbol", "trade_date"]
    return expected.sort(key), got.sort(key)


SPARK_SILVER = (
    "symbol string, trade_date date, open double, high double, low double, "
    "close double, adj_close double, volume double, source string, "
    "is_adjusted boolean, superseded boolean, source_file string, line_no int"
)


def test_same_columns_and_types(both: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    expected, got = both
    assert got.columns == list(schema.DAILY_FEATURES.names)
    assert got.schema == expected.schema


def test_same_rows(both: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    expected, got = both
    assert got.height == expected.height
    for col in schema.DAILY_BAR_COLUMNS:
        assert got[col].equals(expected[col], null_equal=True), col


@pytest.mark.parametrize("name", schema.DAILY_FEATURE_COLUMNS)
def test_feature_parity(both: tuple[pl.DataFrame, pl.DataFrame], name: str) -> None:
    expected, got = both
    a, b = expected[name], got[name]
    assert a.is_null().equals(b.is_null()), (
        f"{name}: nulls differ at rows {(a.is_null() != b.is_null()).arg_true().head(5).to_list()}"
    )
    both_nan = a.is_nan() & b.is_nan()
    ok = ((a - b).abs() <= TOL * a.abs().clip(lower_bound=1.0)) | both_nan | a.is_null()
    if not ok.all():
        bad = expected.with_columns(b.alias("spark")).filter(~ok)
        sample = bad.select("symbol", "trade_date", name, "spark").head(5)
        pytest.fail(f"{name}: {bad.height} values differ, e.g.\n{sample}")


def test_edge_case_values(both: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    """Spot checks that the edge cases really exercise what they are meant to."""
    _, got = both
    one = got.filter(pl.col("symbol") == "ONE")
    assert one.height == 1 and one["true_range"][0] == 2.0 and one["ema_12"][0] == 42.0
    flat = got.filter(pl.col("symbol") == "FLAT")
    assert flat["rsi_14"].drop_nulls().unique().to_list() == [50.0]
    assert flat["volume_z_20"].null_count() == flat.height
    zero = got.filter(pl.col("symbol") == "ZEROVOL")
    assert zero["volume_z_20"].null_count() == zero.height
    assert zero["dollar_volume"].unique().to_list() == [0.0]
    short = got.filter(pl.col("symbol") == "SHORT")
    assert short["atr_14"].null_count() == short.height
    noopen = got.filter(pl.col("symbol") == "NOOPEN")
    assert noopen["open"].null_count() == 40 and noopen["rsi_14"].null_count() == 14


def test_every_value_is_finite_or_null(both: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    """Contract v2: no feature value is infinite or NaN, on either engine."""
    for frame in both:
        floats = [n for n, t in frame.schema.items() if t == pl.Float64]
        bad = frame.select(pl.col(n).is_finite().not_().sum() for n in floats).row(0)
        assert not any(bad), dict(zip(floats, bad, strict=True))
    _, got = both
    extreme = got.filter(pl.col("symbol").is_in(["ALT", "HIGH", "LOW", "ADJDN", "ADJUP"]))
    assert extreme["volume_z_20"].drop_nulls().len() > 0  # values, not only nulls
    # 1e300 / 1e-300 overflows (null); 1e-300 / 1e300 - 1 is -1; the first row has none
    assert got.filter(pl.col("symbol") == "BEYOND")["ret_1d"].null_count() == 1 + 15
