"""XNYS sessions (stockbatch.calendar) against known NYSE holidays and closings."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import exchange_calendars as xcals
import numpy as np
import polars as pl
import pytest

from stockbatch.calendar import SessionCalendar

D = dt.date


@pytest.fixture(scope="module")
def cal() -> SessionCalendar:
    return SessionCalendar(start=D(1962, 1, 1), end=D(2018, 12, 31))


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # before 1970: regular holidays that exchange_calendars 4.13 + pandas 3 miss
        (D(1962, 1, 1), False),  # New Year's Day
        (D(1962, 1, 2), True),
        (D(1962, 2, 22), False),  # Washington's Birthday (pre-1971 rule: Feb 22)
        (D(1965, 12, 31), True),
        (D(1969, 12, 25), False),  # Christmas
        (D(1968, 11, 5), False),  # Election Day
        # ad hoc closings (already right in exchange_calendars)
        (D(1963, 11, 25), False),  # President Kennedy's funeral
        (D(1965, 12, 24), False),  # Christmas Eve 1965 closing
        (D(1968, 6, 12), False),  # 1968 paperwork crisis Wednesday
        (D(1977, 7, 14), False),  # New York City blackout
        (D(2001, 9, 11), False),
        (D(2001, 9, 14), False),
        (D(2001, 9, 17), True),  # reopening
        (D(2012, 10, 29), False),  # Hurricane Sandy
        # regular holidays after 1970
        (D(2017, 1, 2), False),  # New Year's Day observed (Jan 1 was a Sunday)
        (D(2017, 1, 16), False),  # Martin Luther King Jr. Day
        (D(2017, 4, 14), False),  # Good Friday
        (D(2017, 7, 3), True),
        (D(2017, 7, 4), False),
        (D(2017, 11, 23), False),  # Thanksgiving
        (D(2017, 11, 24), True),  # Black Friday: an early close, still a session
        (D(2017, 12, 25), False),
        (D(2017, 9, 30), False),  # a Saturday
    ],
)
def test_is_session_known_days(cal: SessionCalendar, day: dt.date, expected: bool) -> None:
    assert cal.is_session(day) is expected


def test_same_as_exchange_calendars_from_1970(cal: SessionCalendar) -> None:
    # The pre-1970 fix must not change anything where exchange_calendars is right.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = xcals.get_calendar("XNYS", start="1970-01-01", end="2018-12-31").sessions
    ref_days = ref.to_numpy().astype("datetime64[D]")
    ours = cal.sessions.filter(cal.sessions >= D(1970, 1, 1)).to_numpy().astype("datetime64[D]")
    np.testing.assert_array_equal(ours, ref_days)


def test_sessions_between_inclusive(cal: SessionCalendar) -> None:
    # 2017 Q3 by hand: July 21 weekdays - Independence Day = 20; August 23;
    # September 21 - Labor Day = 20 -> 63.
    assert cal.sessions_between(D(2017, 7, 1), D(2017, 9, 30)) == 63
    assert cal.sessions_between(D(2017, 7, 3), D(2017, 7, 3)) == 1  # both ends included
    assert cal.sessions_between(D(2017, 7, 4), D(2017, 7, 4)) == 0  # a holiday
    assert cal.sessions_between(D(2017, 7, 5), D(2017, 7, 3)) == 0  # end before start
    # 1962: 261 weekdays (it starts and ends on a Monday) minus 9 weekday holidays: Jan 1,
    # Feb 22, Good Friday Apr 20, May 30, Jul 4, Labor Day Sep 3, Election Day Nov 6,
    # Thanksgiving Nov 22, Dec 25 -> 252.
    assert cal.sessions_between(D(1962, 1, 1), D(1962, 12, 31)) == 252


def test_vectorised_lookups_with_nulls(cal: SessionCalendar) -> None:
    days = pl.Series("d", [D(2017, 7, 1), None, D(2017, 9, 29), D(2017, 12, 31)])
    assert cal.is_session(days).to_list() == [False, None, True, False]
    assert cal.next_session_after(days).to_list() == [
        D(2017, 7, 3),
        None,
        D(2017, 10, 2),
        D(2018, 1, 2),
    ]
    assert cal.last_session_on_or_before(days).to_list() == [
        D(2017, 6, 30),
        None,
        D(2017, 9, 29),
        D(2017, 12, 29),
    ]
    starts = pl.Series([D(2017, 7, 1), D(2017, 7, 1), None])
    ends = pl.Series([D(2017, 9, 30), D(2017, 6, 30), D(2017, 9, 30)])
    counts = cal.count_sessions(starts, ends)
    assert counts.dtype == pl.Int32
    assert counts.to_list() == [63, 0, None]


def test_scalar_lookups(cal: SessionCalendar) -> None:
    assert cal.next_session_after(D(2017, 7, 3)) == D(2017, 7, 5)  # skips July 4
    assert cal.next_session_after(D(1962, 1, 1)) == D(1962, 1, 2)
    assert cal.last_session_on_or_before(D(2017, 11, 23)) == D(2017, 11, 22)
    assert cal.last_session_on_or_before(D(2017, 11, 24)) == D(2017, 11, 24)


def test_out_of_range_raises(cal: SessionCalendar) -> None:
    with pytest.raises(ValueError, match="outside the calendar range"):
        cal.is_session(D(1961, 12, 29))
    with pytest.raises(ValueError, match="outside the calendar range"):
        cal.next_session_after(D(2018, 12, 31))  # the next session is in 2019
    with pytest.raises(ValueError, match="outside the calendar range"):
        cal.last_session_on_or_before(D(1962, 1, 1))  # no session on or before it in range
    with pytest.raises(ValueError, match="before start"):
        SessionCalendar(start=D(2018, 1, 1), end=D(2017, 1, 1))


def test_is_session_on_a_series_answers_null_outside_the_range(cal: SessionCalendar) -> None:
    # Validation asks this of raw rows, whose dates may be anything: unknown, not a crash.
    days = pl.Series([D(1961, 12, 29), D(1962, 1, 2), D(2019, 1, 2), None])
    assert cal.is_session(days).to_list() == [None, True, None, None]


def test_default_start_is_1962() -> None:
    c = SessionCalendar("XNYS", end=D(2018, 12, 31))
    assert c.start == D(1962, 1, 1)
    assert c.sessions[0] == D(1962, 1, 2)


def test_covering_whole_years_plus_one_and_cache() -> None:
    c = SessionCalendar.covering(D(1962, 1, 2), D(2017, 11, 10))
    assert (c.start, c.end) == (D(1962, 1, 1), D(2018, 12, 31))
    again = SessionCalendar.covering(D(1962, 5, 1), D(2017, 2, 1))
    assert again._days is c._days  # built once per (code, range)
    assert c.next_session_after(D(2017, 12, 29)) == D(2018, 1, 2)


def test_every_real_pg_date_is_a_session(huge_sample: Path) -> None:
    # Real data: P&G in the Kaggle Huge sample, 1970-01-02 .. 2017-11-10, 12,075 rows.
    dates = pl.read_csv(huge_sample / "Stocks" / "pg.us.txt", columns=["Date"])["Date"]
    dates = dates.str.to_date()
    cal = SessionCalendar.covering(dates.min(), dates.max())  # type: ignore[arg-type]
    assert cal.is_session(dates).all()
    sessions = cal.sessions.filter(cal.sessions.is_between(dates.min(), dates.max()))
    missing = sorted(set(sessions.to_list()) - set(dates.to_list()))
    # The file lacks exactly two sessions (gaps in the dataset, both ordinary trading days).
    assert missing == [D(1970, 11, 16), D(1999, 11, 16)]
    assert cal.sessions_between(dates.min(), dates.max()) == dates.len() + 2  # type: ignore[arg-type]
