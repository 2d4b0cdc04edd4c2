"""Exchange sessions (trading days) from ``exchange_calendars``, with vectorised look-ups.

A :class:`SessionCalendar` holds the sorted session dates of one exchange over a
date range as a NumPy array of day numbers, so every question (is this a
session, how many sessions between two dates, the next session after a date)
is a ``searchsorted`` over whole Polars Series at once.

Known upstream defect handled here: with exchange_calendars 4.13.2 under
pandas 3, the sessions it returns ignore every *regular* holiday before
1970-01-01 (1962-01-01, 1969-12-25, ... come back as sessions), because its
``CustomBusinessDay`` asks the holiday calendar for holidays over pandas'
default range, which starts in 1970. The Kaggle Huge set starts in 1962, so we
remove the regular holidays of the requested range explicitly. From 1970 on
the result is identical to exchange_calendars' own sessions (asserted in the
tests).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import warnings
from pathlib import Path
from typing import overload

import numpy as np
import polars as pl

DEFAULT_CODE = "XNYS"
DEFAULT_START = dt.date(1962, 1, 1)
"""Default first day: the Kaggle Huge set starts on 1962-01-02. The process stage asks
for more: its calendar starts on the first date a clean row may have (contract v2,
``quality.EARLIEST_DATE``, 1885-01-01), so it covers whatever the clean data holds.
Sessions before 1962 are exchange_calendars' as they are, not verified here (the NYSE
also traded on Saturdays until 1952, which its Monday-Friday week does not model; such
a row is quarantined as ``weekend_date`` anyway)."""
_EPOCH = dt.date(1970, 1, 1)


def _to_day(d: dt.date) -> int:
    return (d - _EPOCH).days


def _from_day(n: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(n))


@functools.lru_cache(maxsize=16)
def _session_days(code: str, start: dt.date, end: dt.date) -> np.ndarray:
    """Sorted session dates of ``code`` in [start, end] as int32 days since 1970-01-01.

    Cached per (code, start, end) in memory and on disk (``$STOCKBATCH_CACHE`` or
    ``~/.cache/stockbatch``): building XNYS over a century, with the imports of
    exchange_calendars and pandas it needs, takes ~0.7 s at every command start.
    The file name carries the exchange_calendars version, so an upgrade rebuilds.
    """
    from importlib.metadata import version

    cache = _cache_dir() / f"{code}-{start}-{end}-xcals{version('exchange_calendars')}.npy"
    try:
        days = np.load(cache)
        days.setflags(write=False)
        return days
    except (OSError, ValueError):
        pass
    days = _build_session_days(code, start, end)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, days)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs the rebuild next time
    return days


def _cache_dir() -> Path:
    root = os.environ.get("STOCKBATCH_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "stockbatch") / "calendars"


def _build_session_days(code: str, start: dt.date, end: dt.date) -> np.ndarray:
    import exchange_calendars as xcals  # slow import (pandas holiday machinery); only when used

    with warnings.catch_warnings():
        # exchange_calendars 4.13 trips pandas 3 deprecation warnings internally.
        warnings.simplefilter("ignore")
        cal = xcals.get_calendar(code, start=start.isoformat(), end=end.isoformat())
        sessions = cal.sessions
        if cal.regular_holidays is not None:
            # The pre-1970 fix described in the module docstring.
            holidays = cal.regular_holidays.holidays(sessions[0], sessions[-1])
            sessions = sessions[~sessions.isin(holidays)]
    days = sessions.to_numpy().astype("datetime64[D]").astype(np.int64).astype(np.int32)
    days.setflags(write=False)
    return days


class SessionCalendar:
    """Sessions of one exchange (``exchange_calendars`` code) between ``start`` and ``end``.

    Every method accepts either one ``datetime.date`` or a Polars ``Date`` Series
    (nulls pass through as nulls). A date outside [start, end] raises
    ``ValueError`` rather than answering from a truncated calendar (except in
    :meth:`is_session` on a Series, which answers null there); use
    :meth:`covering` to get a calendar with a safe margin.
    """

    def __init__(
        self, code: str = DEFAULT_CODE, *, start: dt.date = DEFAULT_START, end: dt.date
    ) -> None:
        if end < start:
            raise ValueError(f"calendar end {end} is before start {start}")
        self.code = code
        self.start = start
        self.end = end
        self._days = _session_days(code, start, end)
        self._lo = _to_day(start)
        self._hi = _to_day(end)

    @classmethod
    def covering(cls, first: dt.date, last: dt.date, code: str = DEFAULT_CODE) -> SessionCalendar:
        """A calendar for data from ``first`` to ``last``: whole years, plus one more year.

        The extra year lets quarters still in progress at ``last`` ask for their
        last session and for the first session after them. Rounding to whole
        years keeps the cache key stable from one daily run to the next.
        """
        return cls(code, start=dt.date(first.year, 1, 1), end=dt.date(last.year + 1, 12, 31))

    def __repr__(self) -> str:
        return f"SessionCalendar({self.code!r}, start={self.start}, end={self.end})"

    @property
    def sessions(self) -> pl.Series:
        """All sessions of the range, sorted, as a ``Date`` Series."""
        return pl.Series("session", self._days, dtype=pl.Int32).cast(pl.Date)

    # -- internals -------------------------------------------------------------------------

    def _days_of(self, dates: pl.Series, *, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(day numbers with nulls as the range start, validity mask); checks the range."""
        ints = dates.cast(pl.Date).cast(pl.Int32)
        valid = ints.is_not_null().to_numpy()
        days = ints.fill_null(self._lo).to_numpy().astype(np.int64)
        if check and days.size and (days.min() < self._lo or days.max() > self._hi):
            raise ValueError(
                f"date outside the calendar range {self.start}..{self.end} of {self!r}: "
                f"{_from_day(int(days.min()))}..{_from_day(int(days.max()))}"
            )
        return days, valid

    def _result(
        self, name: str, values: np.ndarray, valid: np.ndarray, dtype: type[pl.DataType]
    ) -> pl.Series:
        out = pl.Series(name, values)
        if not valid.all():
            out = pl.select(
                pl.when(pl.Series(valid)).then(out).otherwise(None).alias(name)
            ).to_series()
        if dtype is pl.Date:
            return out.cast(pl.Int32).cast(pl.Date)
        return out.cast(dtype)

    def _session_at(self, idx: np.ndarray, what: str) -> np.ndarray:
        if idx.size and (idx.min() < 0 or idx.max() >= self._days.size):
            raise ValueError(f"{what} falls outside the calendar range of {self!r}")
        return self._days[idx]

    # -- public look-ups -------------------------------------------------------------------

    @overload
    def is_session(self, dates: dt.date) -> bool: ...
    @overload
    def is_session(self, dates: pl.Series) -> pl.Series: ...
    def is_session(self, dates: dt.date | pl.Series) -> bool | pl.Series:
        """Whether each date is an exchange session.

        A Series may hold dates outside the calendar's range (this is also asked of
        raw, not yet validated rows): the answer there is null, "unknown". A single
        date outside the range raises ``ValueError``.
        """
        if isinstance(dates, dt.date):
            self._days_of(pl.Series([dates], dtype=pl.Date))  # range check
            return bool(self.is_session(pl.Series([dates], dtype=pl.Date))[0])
        days, valid = self._days_of(dates, check=False)
        valid = valid & (days >= self._lo) & (days <= self._hi)
        idx = np.searchsorted(self._days, days, side="left")
        hit = np.zeros(days.size, dtype=bool)
        inside = idx < self._days.size
        hit[inside] = self._days[idx[inside]] == days[inside]
        return self._result(dates.name, hit, valid, pl.Boolean)

    def sessions_between(self, start: dt.date, end: dt.date) -> int:
        """Sessions in [start, end], both ends included; 0 when end < start."""
        s = pl.Series([start], dtype=pl.Date)
        e = pl.Series([end], dtype=pl.Date)
        return int(self.count_sessions(s, e)[0])

    def count_sessions(self, starts: pl.Series, ends: pl.Series) -> pl.Series:
        """Vectorised :meth:`sessions_between` (Int32; null where either bound is null)."""
        if starts.len() != ends.len():
            raise ValueError("starts and ends must have the same length")
        s, sv = self._days_of(starts)
        e, ev = self._days_of(ends)
        n = np.searchsorted(self._days, e, side="right") - np.searchsorted(
            self._days, s, side="left"
        )
        return self._result("sessions", np.maximum(n, 0), sv & ev, pl.Int32)

    @overload
    def next_session_after(self, dates: dt.date) -> dt.date: ...
    @overload
    def next_session_after(self, dates: pl.Series) -> pl.Series: ...
    def next_session_after(self, dates: dt.date | pl.Series) -> dt.date | pl.Series:
        """The first session strictly after each date."""
        if isinstance(dates, dt.date):
            return self.next_session_after(pl.Series([dates], dtype=pl.Date))[0]
        days, valid = self._days_of(dates)
        idx = np.searchsorted(self._days, days, side="right")
        idx[~valid] = 0
        out = self._session_at(idx, "the next session after a date")
        return self._result(dates.name, out, valid, pl.Date)

    @overload
    def last_session_on_or_before(self, dates: dt.date) -> dt.date: ...
    @overload
    def last_session_on_or_before(self, dates: pl.Series) -> pl.Series: ...
    def last_session_on_or_before(self, dates: dt.date | pl.Series) -> dt.date | pl.Series:
        """The last session on or before each date."""
        if isinstance(dates, dt.date):
            return self.last_session_on_or_before(pl.Series([dates], dtype=pl.Date))[0]
        days, valid = self._days_of(dates)
        idx = np.searchsorted(self._days, days, side="right") - 1
        idx[~valid] = 0
        out = self._session_at(idx, "the last session on or before a date")
        return self._result(dates.name, out, valid, pl.Date)
