"""Quarterly features of the Polars engine (FEATURES.md section 3) on HAND-MADE bars.

The bars here are hand-made edge cases, not market data; expected values are
worked out by hand in the comments (session counts from the 2017 NYSE calendar).
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Callable

import polars as pl
import pytest

from stockbatch import schema
from stockbatch.calendar import SessionCalendar
from stockbatch.features.polars import compute_daily, compute_quarterly

BarsOf = Callable[..., pl.DataFrame]  # the bars_of fixture (conftest.py)
D = dt.date
CAL = SessionCalendar.covering(D(2016, 1, 1), D(2017, 12, 31))
SQRT_252 = math.sqrt(252)


@pytest.fixture
def daily(bars_of: BarsOf) -> pl.DataFrame:
    # Symbol A: adj_close = close / 2 on every row (factor 0.5); rows in 2017 Q1, Q2 and Q4,
    # none in Q3 (a gap). Symbol B: one row in Q3, one in Q4.
    # Q1's last row (Mar 30) and Q2's first (Apr 5) are not the quarters' edge sessions.
    a_dates = [D(2017, 2, 1), D(2017, 2, 2), D(2017, 3, 15), D(2017, 3, 30),  # Q1
               D(2017, 4, 5), D(2017, 6, 30),  # Q2
               D(2017, 10, 2), D(2017, 11, 10)]  # Q4  # fmt: skip
    a_close = [10.0, 8.0, 12.0, 11.0, 12.0, 13.2, 14.0, 15.0]
    a = bars_of(
        "A",
        a_close,
        dates=a_dates,
        opens=[9.0, 8.0, 12.0, 11.0, 11.0, 13.0, 14.0, 15.0],
        highs=[11.0, 9.0, 13.0, 12.0, 13.0, 14.0, 15.0, 16.0],
        lows=[8.0, 7.0, 11.0, 10.0, 11.0, 12.0, 13.0, 14.0],
        volumes=[100.0, 200.0, 300.0, 400.0, 10.0, 30.0, 5.0, 5.0],
        adj_closes=[c / 2 for c in a_close],
    )
    b = bars_of("B", [20.0, 22.0], dates=[D(2017, 9, 29), D(2017, 10, 2)], volumes=[7.0, 9.0])
    return compute_daily(pl.concat([b, a]))


def rows(q: pl.DataFrame, symbol: str) -> dict[str, dict[str, object]]:
    return {r["quarter"]: r for r in q.filter(pl.col("symbol") == symbol).iter_rows(named=True)}


def test_aggregates_of_one_quarter(daily: pl.DataFrame) -> None:
    q = rows(compute_quarterly(daily, CAL, D(2017, 11, 10)), "A")
    assert list(q) == ["2017Q1", "2017Q2", "2017Q4"]  # no row for a quarter without bars
    q1 = q["2017Q1"]
    assert (q1["quarter_start"], q1["quarter_end"]) == (D(2017, 1, 1), D(2017, 3, 31))
    assert q1["q_open"] == 4.5  # adjusted open of the first row: 9 * 0.5
    assert q1["q_high"] == 6.5  # max high 13 * 0.5
    assert q1["q_low"] == 3.5  # min low 7 * 0.5
    assert q1["q_close"] == 5.5  # adjusted close of the last row: 11 * 0.5
    # Adjusted closes 5, 4, 6, 5.5; running max 5, 5, 6, 6 -> ratios 0, -0.2, 0, -1/12:
    # -0.2 (the drop before the quarter's high counts against the running max, not the high).
    assert q1["q_max_drawdown"] == pytest.approx(-0.2)
    # Log returns in Q1: the first row has none; ln(8/10), ln(12/8), ln(11/12).
    lr = [math.log(8 / 10), math.log(12 / 8), math.log(11 / 12)]
    assert q1["q_volatility"] == pytest.approx(statistics.stdev(lr) * SQRT_252, rel=1e-12)
    assert q1["q_avg_volume"] == 250.0  # raw volume (100+200+300+400)/4, not volume/factor
    assert q1["q_dollar_volume"] == 10 * 100 + 8 * 200 + 12 * 300 + 11 * 400  # raw close*volume
    assert q1["q_trading_days"] == 4
    # Sessions 2017-02-01..2017-03-31 (A's first row is Feb 1; the quarter's end counts, as A
    # has later rows): February 20 weekdays minus Presidents' Day (Feb 20) = 19, March 23 -> 42.
    assert q1["q_expected_days"] == 42
    assert q1["q_missing_days"] == 38
    assert q1["q_return"] is None and q1["q_log_return"] is None  # no previous quarter
    assert q1["available_at"] == D(2017, 4, 3)  # Mar 31 is a Friday -> Monday Apr 3
    assert q1["q_complete"] is True
    assert q1["feature_set_version"] == schema.FEATURE_SET_VERSION == 2


def test_returns_gaps_and_labels(daily: pl.DataFrame) -> None:
    q = rows(compute_quarterly(daily, CAL, D(2017, 11, 10)), "A")
    q1, q2, q4 = q["2017Q1"], q["2017Q2"], q["2017Q4"]
    assert q2["q_close"] == pytest.approx(6.6)
    assert q2["q_return"] == pytest.approx(6.6 / 5.5 - 1)  # = 0.2
    assert q2["q_log_return"] == pytest.approx(math.log(1.2))
    # Q2 volatility: ln(12/11), ln(13.2/12): two values, enough for a sample std.
    lr = [math.log(12 / 11), math.log(13.2 / 12)]
    assert q2["q_volatility"] == pytest.approx(statistics.stdev(lr) * SQRT_252, rel=1e-12)
    # Q2 2017 sessions: April 20 weekdays - Good Friday = 19, May 23 - Memorial Day = 22,
    # June 22 -> 63 (all of them: A has rows before and after Q2).
    assert q2["q_expected_days"] == 63
    assert q2["q_missing_days"] == 61
    assert q2["available_at"] == D(2017, 7, 3)
    assert q4["q_return"] is None  # previous calendar quarter (Q3) has no row
    assert q1["label_next_q_return"] == pytest.approx(0.2)  # Q2's q_return
    assert q2["label_next_q_return"] is None  # Q3 has no row
    assert q4["label_next_q_return"] is None  # no next quarter at all
    # Q4 is in progress on 2017-11-10: its last session is Dec 29.
    assert q4["q_complete"] is False
    assert q4["available_at"] == D(2018, 1, 2)
    # Sessions 2017-10-02..2017-11-10 (A's last row): October 22, November 8 -> 30.
    assert q4["q_expected_days"] == 30


def test_single_rows_and_an_incomplete_next_quarter(daily: pl.DataFrame) -> None:
    q = rows(compute_quarterly(daily, CAL, D(2017, 11, 10)), "B")
    q3, q4 = q["2017Q3"], q["2017Q4"]
    assert q3["q_volatility"] is None  # B's first row: no log return at all
    assert q4["q_volatility"] is None  # one log return < 2 values
    assert q3["q_max_drawdown"] == 0.0
    assert (q3["q_trading_days"], q3["q_expected_days"], q3["q_missing_days"]) == (1, 1, 0)
    assert q4["q_expected_days"] == 1  # B's last row is Oct 2
    assert q4["q_return"] == pytest.approx(0.1)
    assert q3["label_next_q_return"] is None  # Q4 exists but is not complete


def test_completeness_follows_the_last_session_not_the_calendar_end(daily: pl.DataFrame) -> None:
    # 2017-12-29 (Friday) is the last session of 2017 Q4: the quarter is complete on it,
    # although quarter_end is Sunday Dec 31.
    q = compute_quarterly(daily, CAL, D(2017, 12, 29))
    b = rows(q, "B")
    assert b["2017Q4"]["q_complete"] is True
    assert b["2017Q3"]["label_next_q_return"] == pytest.approx(0.1)
    q = compute_quarterly(daily, CAL, D(2017, 12, 28))
    assert rows(q, "B")["2017Q4"]["q_complete"] is False


def test_snapshots_year_boundary_and_close_to_sma_200(bars_of: BarsOf) -> None:
    # 210 rising closes 1..210 on consecutive XNYS sessions from 2016-06-01.
    sessions = CAL.sessions.filter(CAL.sessions >= D(2016, 6, 1))[:210].to_list()
    daily = compute_daily(bars_of("C", [float(i) for i in range(1, 211)], dates=sessions))
    q = compute_quarterly(daily, CAL, D(2017, 11, 10))
    label = pl.format("{}Q{}", pl.col("trade_date").dt.year(), pl.col("trade_date").dt.quarter())
    last = {  # the daily row of each quarter's last session
        r["quarter"]: r
        for r in daily.with_columns(label.alias("quarter"))
        .group_by("quarter")
        .agg(pl.all().sort_by("trade_date").last())
        .iter_rows(named=True)
    }
    assert q.height == len(last) == 4  # 2016Q2 .. 2017Q1
    for r in q.iter_rows(named=True):
        ref = last[r["quarter"]]
        for name in ("sma_50", "sma_200", "rsi_14", "macd", "atr_14", "volatility_20"):
            assert r[f"{name}_end"] == ref[name], (r["quarter"], name)
        assert r["q_close"] == ref["close"]
        assert r["q_missing_days"] == 0
    final = q.row(-1, named=True)
    assert final["quarter"] == "2017Q1"
    # Last row: sma_200 = mean(11..210) = 110.5, q_close = 210.
    assert final["sma_200_end"] == pytest.approx(110.5)
    assert final["close_to_sma_200_end"] == pytest.approx(210 / 110.5 - 1)
    assert q.row(0, named=True)["close_to_sma_200_end"] is None  # sma_200 still null
    # 2016Q4 -> 2017Q1 are adjacent calendar quarters across the year boundary.
    q4 = q.filter(pl.col("quarter") == "2016Q4").row(0, named=True)
    assert final["q_return"] == pytest.approx(210 / q4["q_close"] - 1)
    assert q4["label_next_q_return"] == final["q_return"]


def test_q_open_skips_rows_whose_open_was_not_recorded(bars_of: BarsOf) -> None:
    # contract v2: open null = not recorded. Q1: the first two rows lack it -> the third's;
    # Q2: no row has it -> null; Q3: the first row has it.
    dates = [D(2017, 1, 3), D(2017, 1, 4), D(2017, 1, 5), D(2017, 4, 3), D(2017, 4, 4),
             D(2017, 7, 3)]  # fmt: skip
    bars = bars_of(
        "Z",
        [10.0, 11.0, 12.0, 13.0, 14.0, 15.0],
        dates=dates,
        opens=[None, None, 11.5, None, None, 14.5],
        adj_closes=[5.0, 5.5, 6.0, 6.5, 7.0, 7.5],  # factor 0.5
    )
    q = rows(compute_quarterly(compute_daily(bars), CAL, D(2017, 7, 3)), "Z")
    assert q["2017Q1"]["q_open"] == 5.75  # 11.5 * 0.5
    assert q["2017Q2"]["q_open"] is None
    assert q["2017Q3"]["q_open"] == 7.25
    assert q["2017Q2"]["q_high"] == 7.5  # the rest of the quarter as usual: 15 * 0.5


def test_output_schema_and_order(daily: pl.DataFrame) -> None:
    q = compute_quarterly(daily, CAL, D(2017, 11, 10))
    assert q.schema == pl.DataFrame(schema.QUARTERLY_FEATURES.empty_table()).schema
    assert q.select("symbol", "quarter").rows() == [
        ("A", "2017Q1"),
        ("A", "2017Q2"),
        ("A", "2017Q4"),
        ("B", "2017Q3"),
        ("B", "2017Q4"),
    ]
    # Row order of the input does not matter.
    shuffled = daily.sample(fraction=1.0, shuffle=True, seed=3)
    assert compute_quarterly(shuffled, CAL, D(2017, 11, 10)).equals(q)
    assert compute_quarterly(daily.lazy(), CAL, D(2017, 11, 10)).equals(q)


def test_calendar_must_cover_the_data(daily: pl.DataFrame) -> None:
    short = SessionCalendar(start=D(2017, 1, 1), end=D(2017, 12, 31))
    with pytest.raises(ValueError, match="calendar range"):
        compute_quarterly(daily, short, D(2017, 11, 10))  # available_at of Q4 is in 2018


def test_empty_input(bars_of: BarsOf) -> None:
    q = compute_quarterly(compute_daily(bars_of("A", [])), CAL, D(2017, 11, 10))
    assert q.height == 0
    assert q.columns == list(schema.QUARTERLY_FEATURES.names)
