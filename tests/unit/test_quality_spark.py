"""Validation in Spark against the Polars engine (``quality.validate``), row for row.

Both engines run on the same bronze frame; the Spark clean rows (sorted like
the Polars engine's), the quarantine rows with their reasons, the counts dict
and the winners must be equal, exactly.

Inputs: HAND-MADE EDGE CASES (not market data; `row()` builds a valid Monday
bar and each case overrides fields: every reason code, identical twins vs
conflicting duplicates, wrong arity, blanks, Unicode digits, line terminators
(Java's ``$`` vs Rust's), impossible dates, several sources for one symbol,
future dates, weekend, zero volume, an off-calendar weekday, x5 jumps), and
REAL FILES of the three shared Kaggle samples (Huge, S&P 500 5-year, NASDAQ)
parsed by the real Kaggle adapter, AAPL arriving from several sources.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from stockbatch import quality, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.quality import spark as quality_spark
from stockbatch.quality.spark import java_regex
from stockbatch.sources.kaggle_parse import parse_kaggle_bytes
from support.bronze_rows import bronze_frame as bronze_of
from support.bronze_rows import row, wrong_arity

pytestmark = [pytest.mark.spark]

AS_OF = dt.date(2017, 11, 30)
PRIORITY = ["yahoo", "kaggle-nasdaq", "kaggle-huge", "kaggle-sp500"]
CALENDAR = SessionCalendar(end=dt.date(2019, 12, 31))
CALENDAR_1885 = SessionCalendar(start=quality.EARLIEST_DATE, end=dt.date(2019, 12, 31))
"""The process stage's calendar: from the first date a clean row may have (contract v2)."""

# Field overrides that each make one symbol's single row interesting (one symbol per
# case, so the cases do not collide as duplicates).
FIELD_CASES: list[dict[str, Any]] = [
    {"trade_date": "2017-02-30"},
    {"trade_date": "2017-02-29"},
    {"trade_date": "2016-02-29", "volume": "7"},  # leap day: valid (not future)
    {"trade_date": "1900-02-29"},  # not a leap year
    {"trade_date": "2000-02-29"},  # a leap year (Tuesday)
    {"trade_date": "0000-01-01"},
    {"trade_date": "0001-01-01"},  # Monday, valid, off calendar range
    {"trade_date": "2017-13-01"},
    {"trade_date": "2017-00-10"},
    {"trade_date": "2017-11-00"},
    {"trade_date": "2017-1-6"},
    {"trade_date": "+2017-11-06"},
    {"trade_date": " 2017-11-06"},
    {"trade_date": "2017-11-06 "},
    {"trade_date": "2017-11-06\n"},  # Java's $ would match before the final \n
    {"trade_date": "2017-11-06\r\n"},
    {"trade_date": "\uff12\uff10\uff11\uff17-11-06"},  # full-width digits
    {"trade_date": "06/11/2017"},
    {"trade_date": ""},
    {"trade_date": None},
    {"open": "ten"},
    {"close": "nan"},
    {"close": "NaN"},
    {"high": "inf"},
    {"high": "Infinity"},
    {"volume": "1e400"},
    {"volume": "1e-400"},  # underflows to 0: finite, parses (zero volume)
    {"volume": "1,000"},
    {"volume": "1_000"},
    {"volume": "0x10"},
    {"volume": "10d"},  # Java's parseDouble takes it
    {"volume": "10f"},
    {"volume": "1000\n"},
    {"volume": "\u0663"},  # Arabic-Indic digit
    {"volume": "\uff11"},  # full-width digit
    {"volume": "-0"},
    {"volume": "+0.0e0"},
    {"low": " 9"},
    {"low": "9 "},
    {"open": "+1.0e1", "high": "11.", "low": ".9e1", "close": "10.50"},
    {"open": "."},
    {"open": "e5"},
    {"open": "1e"},
    {"open": "1.5E+1", "high": "15", "close": "15"},
    {"adj_close": "n/a"},
    {"adj_close": "5.25"},
    {"adj_close": "-0.5"},
    {"adj_close": "0"},
    {"symbol": ""},
    {"symbol": None},
    {"source": None},
    {"source": ""},
    {"open": ""},
    {"close": None},
    {"high": "", "open": "50", "low": "60"},
    {"volume": ""},
    {"volume": None},
    {"low": "0", "open": "1", "close": "1"},
    {"open": "-1", "high": "-1", "low": "-1", "close": "-1"},
    {"high": "9", "low": "11"},
    {"open": "11.5"},
    {"open": "8.9"},
    {"open": "11.000011"},  # within 1e-6 * 11 of high
    {"open": "11.0000111"},
    {"close": "12"},
    {"close": "1.05"},
    {"volume": "-5"},
    {"trade_date": "2017-11-04"},  # Saturday
    {"trade_date": "2017-11-05"},  # Sunday
    {"trade_date": "2017-12-01"},  # Friday after as_of: future
    {"trade_date": "2017-12-02", "open": "x", "volume": "-1"},  # several reasons
    {"trade_date": "2017-11-23"},  # Thanksgiving: off calendar, kept
    {"trade_date": "2017-11-30"},  # == as_of
    {"volume": "0"},
    {"source_file": None},
    {"line_no": None, "source_file": "hand/nulls.txt"},
    # contract v2: zero open ("not recorded"), dates before 1885, implausible values
    {"open": "0"},  # clean, open null, counted open_missing
    {"open": "-0"},
    {"open": "0.0e3"},
    {"open": "0", "high": "9", "low": "11"},  # + another fault: no reason from the open
    {"open": "0", "low": "0"},
    {"open": "0", "volume": ""},
    {"open": "-1"},  # negative: still non_positive_price
    {"open": "-0.0000001"},
    {"trade_date": "1800-01-02"},
    {"trade_date": "1884-12-31"},
    {"trade_date": "1885-01-01"},  # the first valid date (off the test calendar: off_calendar)
    {"trade_date": "1884-12-27"},  # a Saturday too
    {"trade_date": "1961-12-29"},
    {"open": "1e-7", "high": "1e-7", "low": "1e-7", "close": "1e-7"},
    {"open": "1e10", "high": "1e10", "low": "1e10", "close": "1e10"},
    {"open": "9.99999e-7", "high": "1e-6", "low": "9.99999e-7", "close": "1e-6"},
    {"adj_close": "1e-7"},
    {"adj_close": "1000000001"},
    {"volume": "1e14"},
    {"volume": "10000000000000.002"},
    {"open": "1e-6", "high": "1e-6", "low": "1e-6", "close": "1e-6", "volume": "1e13"},  # clean
    {"open": "1e9", "high": "1e9", "low": "1e9", "close": "1e9", "adj_close": "1e-6"},  # clean
]


def edge_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i, over in enumerate(FIELD_CASES):
        rows.append(row(**{"symbol": f"S{i:03d}", "source_file": f"hand/s{i:03d}.txt", **over}))
    rows += [
        wrong_arity("2017-11-06,10,11,9,10.5", symbol="ARITY"),
        wrong_arity("2017-11-06,10,11,9,10.5,1,2,3", symbol="ARITY", line_no=900),
        # identical twins, also as "4" vs "4.0" and "0" vs "-0": one kept (first by file, line)
        row(symbol="TWIN", source_file="hand/b.txt", line_no=5),
        row(symbol="TWIN", source_file="hand/a.txt", line_no=9, open="10.0"),
        row(symbol="TWIN", source_file="hand/a.txt", line_no=7),
        row(symbol="TWIN", trade_date="2017-11-07", volume="0"),
        row(symbol="TWIN", trade_date="2017-11-07", volume="-0"),
        # twins that are both quarantined for another reason: one quarantined, one collapsed
        row(symbol="TWIN", trade_date="2017-11-08", open="abc"),
        row(symbol="TWIN", trade_date="2017-11-08", open="abc"),
        # conflicting duplicates: all quarantined, other reasons kept
        row(symbol="DUP", close="10.6"),
        row(symbol="DUP", close="10.7"),
        row(symbol="DUP", close="12"),
        row(symbol="DUP", trade_date="2017-11-07", open="abc"),
        row(symbol="DUP", trade_date="2017-11-07", open=""),
        row(symbol="DUP", trade_date="2017-11-08", adj_close="5"),
        row(symbol="DUP", trade_date="2017-11-08"),
        row(symbol="DUP", trade_date="2017-11-09", open="abc"),
        row(symbol="DUP", trade_date="2017-11-09", open="abd"),
        # '0' (not recorded) vs '' (missing) disagree; '0' and '-0.0' are twins
        row(symbol="DUP", trade_date="2017-11-10", open="0"),
        row(symbol="DUP", trade_date="2017-11-10", open=""),
        row(symbol="TWIN", trade_date="2017-11-09", open="0"),
        row(symbol="TWIN", trade_date="2017-11-09", open="-0.0"),
        # same day, other source / symbol: not duplicates
        row(symbol="MULTI", source="kaggle-sp500", is_adjusted=False, source_file="hand/m1"),
        row(symbol="MULTI", source="kaggle-huge", source_file="hand/m2"),
        row(symbol="MULTI", trade_date="2017-11-07", source="yahoo", source_file="hand/m3"),
        row(symbol="MULTI", trade_date="2017-11-08", source="zzz-unlisted", source_file="hand/m4"),
        row(symbol="MULTI", trade_date="2017-11-08", source="aaa-unlisted", source_file="hand/m5"),
        # a symbol whose only yahoo row is quarantined: kaggle wins
        row(symbol="HALF", source="yahoo", open="bad", source_file="hand/h1"),
        row(symbol="HALF", source="kaggle-huge", source_file="hand/h2"),
        row(symbol="ÜNICODE", trade_date="2017-11-07", source_file="hand/ü.txt"),
        row(symbol="ÜNICODE", trade_date="2017-11-08", source_file="hand/ü.txt"),
    ]
    # jumps: x5.1 up, /5.05 down, exactly x5 (no jump), adjusted split (no jump)
    for day, close, adj, vol in [
        ("2017-11-20", "10", None, "100"),
        ("2017-11-21", "51", None, "100"),
        ("2017-11-22", "50", None, "0"),
        ("2017-11-24", "9.9", None, "100"),
        ("2017-11-27", "49.5", None, "100"),
    ]:
        c = float(close)
        rows.append(
            row(symbol="JUMP", trade_date=day, open=close, high=repr(c * 1.01),
                low=repr(c * 0.99), close=close, adj_close=adj, volume=vol)
        )  # fmt: skip
    for day, close, adj in [("2017-11-20", "100", "10"), ("2017-11-21", "20", "10")]:
        rows.append(
            row(symbol="SPLIT", trade_date=day, open=close, high=close, low=close,
                close=close, adj_close=adj)
        )  # fmt: skip
    return rows


def to_spark(spark: SparkSession, bronze: pl.DataFrame) -> Any:
    table = bronze.to_arrow().cast(schema.BRONZE_BARS)
    return spark.createDataFrame(table, schema=quality_spark.BRONZE_SPARK)


def run_both(
    spark: SparkSession,
    bronze: pl.DataFrame,
    *,
    with_calendar: bool = True,
    calendar: SessionCalendar = CALENDAR,
) -> tuple[quality.ValidationResult, quality_spark.SparkValidation]:
    expected = quality.validate(
        bronze,
        as_of=AS_OF,
        is_session=calendar.is_session if with_calendar else None,
        source_priority=PRIORITY,
    )
    got = quality_spark.validate(
        to_spark(spark, bronze),
        as_of=AS_OF,
        sessions=calendar.sessions.to_list() if with_calendar else None,
        source_priority=PRIORITY,
    )
    return expected, got


def assert_same(expected: quality.ValidationResult, got: quality_spark.SparkValidation) -> None:
    clean = pl.from_arrow(
        got.clean.orderBy(*quality_spark.SILVER_ORDER).toArrow().cast(schema.SILVER_BARS)
    )
    assert isinstance(clean, pl.DataFrame)
    assert clean.schema == expected.clean.schema
    assert clean.equals(expected.clean, null_equal=True)
    order = [
        got.quarantine[c].asc_nulls_last()
        for c in (*quality_spark.QUARANTINE_ORDER, "ingest_run_id", "raw_line")
    ]
    quarantine = pl.from_arrow(got.quarantine.orderBy(*order).toArrow().cast(schema.QUARANTINE))
    assert isinstance(quarantine, pl.DataFrame)
    assert quarantine.schema == expected.quarantine.schema
    assert quarantine.equals(expected.quarantine, null_equal=True), (
        f"\n{quarantine.select('source_file', 'line_no', 'reasons')}\n"
        f"{expected.quarantine.select('source_file', 'line_no', 'reasons')}"
    )
    assert got.counts == expected.counts
    assert got.winners == expected.winners
    got.release()


def test_java_regex_anchors() -> None:
    assert java_regex(r"^[0-9]+$") == r"^[0-9]+\z"
    for bad in (r"[0-9]+$", r"^\d+$", "^[\u0660-\u0669]$", r"^a\$"):
        with pytest.raises(ValueError):
            java_regex(bad)


def test_edge_cases_match_polars(spark: SparkSession) -> None:
    bronze = bronze_of(edge_rows())
    expected, got = run_both(spark, bronze)
    # the cases exercise what they claim
    assert all(n > 0 for n in expected.counts["reasons"].values()), expected.counts["reasons"]
    assert expected.counts["rows_deduplicated"] >= 4
    assert expected.counts["rows_superseded"] >= 3
    assert all(n > 0 for n in expected.counts["health"].values()), expected.counts["health"]
    assert_same(expected, got)


def test_edge_cases_with_the_calendar_from_1885(spark: SparkSession) -> None:
    expected, got = run_both(spark, bronze_of(edge_rows()), calendar=CALENDAR_1885)
    # 1885-01-01 (New Year's Day) is no session; 1961-12-29 is one
    assert expected.counts["health"]["off_calendar"] == (
        run_both(spark, bronze_of(edge_rows()))[0].counts["health"]["off_calendar"] - 1
    )
    assert_same(expected, got)


def test_contract_v2_cases(spark: SparkSession) -> None:
    """Zero open, dates around 1885, implausible values: the reasons the contract names."""
    expected, got = run_both(spark, bronze_of(edge_rows()), calendar=CALENDAR_1885)
    by_symbol = dict(
        zip(
            expected.quarantine["symbol"].to_list(),
            expected.quarantine["reasons"].to_list(),
            strict=True,
        )
    )
    case = {i: f"S{i:03d}" for i in range(len(FIELD_CASES))}

    def reasons(over: dict[str, Any]) -> list[str] | None:
        return by_symbol.get(case[FIELD_CASES.index(over)])

    assert reasons({"open": "0"}) is None
    assert reasons({"open": "0", "high": "9", "low": "11"}) == [
        "high_below_low",
        "close_outside_range",
    ]
    assert reasons({"open": "-1"}) == ["non_positive_price", "open_outside_range"]
    assert reasons({"trade_date": "1800-01-02"}) == ["date_out_of_range"]
    assert reasons({"trade_date": "1884-12-31"}) == ["date_out_of_range"]
    assert reasons({"trade_date": "1885-01-01"}) is None
    assert reasons({"volume": "1e14"}) == ["implausible_value"]
    assert expected.counts["health"]["open_missing"] >= 3
    assert_same(expected, got)


def test_edge_cases_without_calendar(spark: SparkSession) -> None:
    expected, got = run_both(spark, bronze_of(edge_rows()), with_calendar=False)
    assert got.counts["health"]["off_calendar"] is None
    assert_same(expected, got)


def test_empty_input(spark: SparkSession) -> None:
    expected, got = run_both(spark, bronze_of([]))
    assert got.counts["rows_in"] == 0
    assert_same(expected, got)


def test_missing_bronze_column_is_refused(spark: SparkSession) -> None:
    sdf = to_spark(spark, bronze_of([row()])).drop("line_no")
    with pytest.raises(ValueError, match="line_no"):
        quality_spark.validate(sdf, as_of=AS_OF, sessions=None, source_priority=PRIORITY)


def _real_bronze(root: Path, rels: list[str]) -> pl.DataFrame:
    parts = []
    for rel in rels:
        p = root / rel
        t = parse_kaggle_bytes(p.read_bytes(), file_name=p.name, ref=rel)
        n = t.num_rows
        t = t.append_column("ingest_run_id", pa.array(["run-real"] * n, pa.string()))
        t = t.append_column("bucket", pa.array([0] * n, pa.int16()))
        parts.append(pl.from_arrow(t.cast(schema.BRONZE_BARS)))
    return pl.concat(parts)  # type: ignore[arg-type]


def test_real_files_of_three_sources(spark: SparkSession, shared_data: Path) -> None:
    kaggle = shared_data / "kaggle"
    huge = ["epr", "bxmt", "nue", "stag", "husa", "wmlp", "sptl", "evstc", "sbt", "vist", "cclp"]
    # CCLP and DBO also come from the NASDAQ sample: the higher-priority source wins.
    huge_rels = [f"Stocks/{n}.us.txt" for n in huge] + ["ETFs/dbo.us.txt"]
    bronze = pl.concat(
        [
            _real_bronze(kaggle / "huge-stock-market-sample", huge_rels),
            _real_bronze(
                kaggle / "sp500-5yr-sample",
                sorted(
                    str(p.relative_to(kaggle / "sp500-5yr-sample"))
                    for p in (kaggle / "sp500-5yr-sample").rglob("*_data.csv")
                ),
            ),
            _real_bronze(
                kaggle / "nasdaq-sample",
                sorted(
                    str(p.relative_to(kaggle / "nasdaq-sample"))
                    for p in (kaggle / "nasdaq-sample").glob("*s/*.csv")
                ),
            ),
        ]
    )
    expected, got = run_both(spark, bronze)
    assert expected.counts["rows_in"] > 50_000
    assert expected.counts["rows_quarantined"] > 0
    assert expected.counts["rows_superseded"] > 0
    assert expected.winners["CCLP"] == expected.winners["DBO"] == "kaggle-nasdaq"
    assert_same(expected, got)
