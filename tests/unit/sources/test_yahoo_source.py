"""YahooSource against recorded Yahoo responses, replayed at the HTTP layer.

``ReplaySession`` is a real ``requests.Session`` (yfinance accepts only curl_cffi
or requests sessions) whose transport adapter answers from recordings instead of
the network: yfinance's own client code runs unchanged (cookie, crumb, retry with
the other cookie strategy), and any request the replay does not know fails the
test, so no test can reach the internet. The chart response is the real
tests/fixtures/sources/yahoo/SPY_chart_1d.json (see PROVENANCE.md); the other
answers are labelled where they are built.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from stockbatch.schema import INSTRUMENTS
from stockbatch.settings import YahooSettings
from stockbatch.sources.base import (
    BRONZE_SOURCE_SCHEMA,
    RateLimitedError,
    SourceError,
    SourceUnit,
    SymbolNotFoundError,
)
from stockbatch.sources.yahoo import YAHOO_EVENTS, YahooSource
from support.yahoo_replay import (
    NOT_FOUND,
    SPY_BYTES,
    SPY_OK,
    TOO_MANY,
    ReplaySession,
)

AFTER_CLOSE = datetime(2026, 2, 21, 12, 0, tzinfo=UTC)  # Saturday after the last bar

# Exact values of the real file, one tuple per day:
# (trade_date, open, high, low, close, adj_close, volume)
SPY_ROWS = [
    ("2026-02-13", "681.6900024414062", "686.280029296875", "677.52001953125", "681.75",
     "681.75", "96267500"),
    ("2026-02-17", "680.1400146484375", "684.9400024414062", "675.780029296875",
     "682.8499755859375", "682.8499755859375", "81354700"),
    ("2026-02-18", "684.02001953125", "689.1500244140625", "682.8300170898438",
     "686.2899780273438", "686.2899780273438", "73570300"),
    ("2026-02-19", "683.8400268554688", "686.1799926757812", "681.5499877929688",
     "684.47998046875", "684.47998046875", "58649400"),
    ("2026-02-20", "682.3200073242188", "690.0599975585938", "681.72998046875",
     "689.4299926757812", "689.4299926757812", "99952100"),
]  # fmt: skip
VALUES = ("trade_date", "open", "high", "low", "close", "adj_close", "volume")


@pytest.fixture(scope="module", autouse=True)
def _yfinance_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep yfinance's cookie cache out of the user's home."""
    import yfinance

    yfinance.set_tz_cache_location(str(tmp_path_factory.mktemp("yfinance-cache")))


def make_source(
    charts: dict[str, list[tuple[int, bytes]]],
    symbols: list[str] | None = None,
    *,
    start: date | None = date(2026, 2, 13),
    end: date | None = date(2026, 2, 20),
    last_dates: dict[str, date] | None = None,
    now: datetime = AFTER_CLOSE,
    sleeps: list[float] | None = None,
    **settings: Any,
) -> tuple[YahooSource, ReplaySession]:
    session = ReplaySession(charts)
    source = YahooSource(
        symbols if symbols is not None else list(charts),
        start,
        end,
        last_dates or {},
        YahooSettings(**settings),
        session=session,
        sleep=(sleeps.append if sleeps is not None else _no_sleep),
        now=lambda: now,
    )
    return source, session


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected backoff of {seconds}s")


def one_unit(source: YahooSource) -> SourceUnit:
    (unit,) = source.units()
    return unit


def values(table: Any) -> list[tuple[Any, ...]]:
    return [tuple(row[k] for k in VALUES) for row in table.to_pylist()]


def spy_with(edit: Any) -> bytes:
    payload = json.loads(SPY_BYTES)
    edit(payload["chart"]["result"][0])
    return json.dumps(payload).encode()


# -- units -------------------------------------------------------------------------------


def test_units_are_incremental_and_deduplicated() -> None:
    source, session = make_source(
        {},
        [" spy", "AAPL", "msft", "SPY", "brk-b"],
        start=None,
        end=date(2026, 2, 20),
        last_dates={"AAPL": date(2026, 2, 20), "MSFT": date(2026, 2, 12)},
    )
    assert [u.ref for u in source.units()] == [
        "yahoo/SPY/2000-01-01..2026-02-20",  # nothing stored: settings.default_start
        "yahoo/MSFT/2026-02-13..2026-02-20",  # the day after the stored last date
        "yahoo/BRK-B/2000-01-01..2026-02-20",
    ]  # AAPL is up to date: no unit
    assert all(u.source == "yahoo" and u.path is None and u.sha256 is None for u in source.units())
    assert session.replay.requests == []  # listing is free
    assert source.describe() == "symbols SPY, AAPL, MSFT, BRK-B"


def test_units_end_defaults_to_today() -> None:
    source, _ = make_source({}, ["SPY"], start=date(2026, 2, 1), end=None)
    assert one_unit(source).ref == "yahoo/SPY/2026-02-01..2026-02-21"


# -- reading the real response -------------------------------------------------------------


def test_reads_the_real_spy_response_exactly() -> None:
    source, session = make_source({"SPY": [SPY_OK]})
    unit = one_unit(source)
    assert unit.ref == "yahoo/SPY/2026-02-13..2026-02-20"
    table = source.read(unit)
    assert table.schema == BRONZE_SOURCE_SCHEMA
    assert values(table) == SPY_ROWS
    first = table.to_pylist()[0]
    assert {k: first[k] for k in first if k not in VALUES} == {
        "symbol": "SPY",
        "source": "yahoo",
        "is_adjusted": False,
        "source_file": "yahoo/SPY/2026-02-13..2026-02-20",
        "line_no": 1,
        "n_fields": None,
        "raw_line": None,
    }
    assert table.column("line_no").to_pylist() == [1, 2, 3, 4, 5]
    (query,) = session.replay.chart_requests()
    assert query["period1"] == ["1770854400"]  # 2026-02-12T00:00Z: a day of margin
    assert query["period2"] == ["1771718400"]  # 2026-02-22T00:00Z
    assert query["interval"] == ["1d"]
    assert query["events"] == ["div,splits,capitalGains"]


def test_rows_outside_the_range_are_dropped() -> None:
    source, _ = make_source({"SPY": [SPY_OK]}, start=date(2026, 2, 17), end=date(2026, 2, 19))
    table = source.read(one_unit(source))
    assert values(table) == SPY_ROWS[1:4]
    assert table.column("line_no").to_pylist() == [2, 3, 4]  # positions in the response


def test_a_session_still_open_is_not_stored() -> None:
    # 2026-02-20 18:00Z is 13:00 in New York: that day's bar is still moving.
    during = datetime(2026, 2, 20, 18, 0, tzinfo=UTC)
    source, _ = make_source({"SPY": [SPY_OK]}, now=during)
    assert values(source.read(one_unit(source))) == SPY_ROWS[:4]
    # At the close (meta.currentTradingPeriod.regular.end = 1771621200) it is final.
    at_close = datetime.fromtimestamp(1771621200, UTC)
    source, _ = make_source({"SPY": [SPY_OK]}, now=at_close)
    assert values(source.read(one_unit(source))) == SPY_ROWS


def test_null_day_becomes_null_values() -> None:
    """Derived from the real file: every value of 2026-02-18 (index 2) set to null."""

    def null_day(result: dict[str, Any]) -> None:
        for series in result["indicators"]["quote"][0].values():
            series[2] = None
        result["indicators"]["adjclose"][0]["adjclose"][2] = None

    source, _ = make_source({"SPY": [(200, spy_with(null_day))]})
    got = values(source.read(one_unit(source)))
    assert got[2] == ("2026-02-18", None, None, None, None, None, None)
    assert got[:2] + got[3:] == SPY_ROWS[:2] + SPY_ROWS[3:]


def test_events_and_instruments_come_from_the_same_response() -> None:
    """Derived from the real file: an events block in Yahoo's shape, hand-made values."""

    def add_events(result: dict[str, Any]) -> None:
        result["events"] = {
            "dividends": {"1771338600": {"amount": 1.7421, "date": 1771338600}},
            "splits": {
                "1771425000": {
                    "date": 1771425000,
                    "numerator": 2.0,
                    "denominator": 1.0,
                    "splitRatio": "2:1",
                },
                # Outside the unit's range: dropped like the bars.
                "1770129000": {"date": 1770129000, "numerator": 3, "denominator": 1},
            },
        }

    source, session = make_source({"SPY": [(200, spy_with(add_events))]})
    unit = one_unit(source)
    assert values(source.read(unit)) == SPY_ROWS
    events = source.events(unit)
    assert events.schema == YAHOO_EVENTS
    assert events.to_pylist() == [
        {
            "symbol": "SPY",
            "event_date": "2026-02-17",
            "kind": "dividend",
            "amount": "1.7421",
            "numerator": None,
            "denominator": None,
            "split_ratio": None,
            "source_file": unit.ref,
        },
        {
            "symbol": "SPY",
            "event_date": "2026-02-18",
            "kind": "split",
            "amount": None,
            "numerator": "2.0",
            "denominator": "1.0",
            "split_ratio": "2:1",
            "source_file": unit.ref,
        },
    ]
    assert len(session.replay.chart_requests()) == 1  # events() reused read()'s response
    instruments = source.instruments()
    assert instruments is not None and instruments.schema == INSTRUMENTS
    assert instruments.to_pylist() == [
        {
            "symbol": "SPY",
            "name": "State Street SPDR S&P 500 ETF Trust",
            "exchange": "PCX",
            "is_etf": True,
            "source": "yahoo",
        }
    ]


def test_instruments_none_before_any_read() -> None:
    source, _ = make_source({"SPY": [SPY_OK]})
    assert source.instruments() is None


# -- failures ------------------------------------------------------------------------------


def test_unknown_symbol_fails_alone() -> None:
    source, _ = make_source({"NOSUCH": [NOT_FOUND], "SPY": [SPY_OK]}, ["NOSUCH", "SPY"])
    results: dict[str, Any] = {}
    for unit in source.units():  # what the pipeline does: record and carry on
        try:
            results[unit.ref] = source.read(unit).num_rows
        except SourceError as exc:
            results[unit.ref] = exc
    error = results["yahoo/NOSUCH/2026-02-13..2026-02-20"]
    assert isinstance(error, SymbolNotFoundError)
    assert error.symbol == "NOSUCH"
    assert error.ref == "yahoo/NOSUCH/2026-02-13..2026-02-20"
    assert "No data found, symbol may be delisted" in str(error)
    assert results["yahoo/SPY/2026-02-13..2026-02-20"] == 5


def test_one_429_is_absorbed_by_yfinance() -> None:
    # yfinance retries a failed request once itself (with its other cookie strategy).
    source, _ = make_source({"SPY": [TOO_MANY, SPY_OK]})
    assert values(source.read(one_unit(source))) == SPY_ROWS


def test_rate_limit_then_success_backs_off() -> None:
    sleeps: list[float] = []
    # Two 429s: yfinance's own retry fails too, so YahooSource backs off once.
    source, session = make_source(
        {"SPY": [TOO_MANY, TOO_MANY, SPY_OK]}, sleeps=sleeps, backoff_seconds=0.5
    )
    assert values(source.read(one_unit(source))) == SPY_ROWS
    assert sleeps == [0.5]
    assert len(session.replay.chart_requests()) == 3


def test_rate_limit_exhausts_retries() -> None:
    sleeps: list[float] = []
    source, _ = make_source({"SPY": [TOO_MANY]}, sleeps=sleeps, max_retries=3, backoff_seconds=0.5)
    with pytest.raises(RateLimitedError, match="rate limiting") as err:
        source.read(one_unit(source))
    assert sleeps == [0.5, 1.0, 2.0]  # exponential
    assert err.value.attempts == 4
    assert err.value.ref == "yahoo/SPY/2026-02-13..2026-02-20"


def test_server_error_is_retried() -> None:
    sleeps: list[float] = []
    source, _ = make_source(
        {"SPY": [(503, b"busy"), (503, b"busy"), SPY_OK]}, sleeps=sleeps, backoff_seconds=1.0
    )
    assert values(source.read(one_unit(source))) == SPY_ROWS
    assert sleeps == [1.0]


def test_answer_that_is_not_chart_json() -> None:
    source, _ = make_source({"SPY": [(200, b"<html>Will be right back</html>")]})
    with pytest.raises(SourceError, match="unexpected answer from Yahoo"):
        source.read(one_unit(source))


def test_other_chart_error_is_reported() -> None:
    body = b'{"chart":{"result":null,"error":{"code":"Bad Request","description":"Invalid input"}}}'
    source, _ = make_source({"SPY": [(400, body)]})
    with pytest.raises(SourceError, match=r"Bad Request: Invalid input") as err:
        source.read(one_unit(source))
    assert not isinstance(err.value, SymbolNotFoundError)


def test_no_rows_in_range_is_empty_not_an_error() -> None:
    """Derived from the real file: no timestamps (Yahoo's answer for a range without sessions)."""

    def no_sessions(result: dict[str, Any]) -> None:
        del result["timestamp"]
        result["indicators"] = {"quote": [{}], "adjclose": [{}]}

    source, _ = make_source({"SPY": [(200, spy_with(no_sessions))]})
    table = source.read(one_unit(source))
    assert table.num_rows == 0 and table.schema == BRONZE_SOURCE_SCHEMA


def test_fixture_is_the_shared_recording(shared_data: Path) -> None:
    shared = (shared_data / "yahoo" / "SPY_chart_1d.json").read_bytes()
    assert shared == SPY_BYTES


def test_provider_text_in_errors_is_escaped_and_cut() -> None:
    """Hand-made: Yahoo's error description is input too (issue "Hostile input", item 8)."""
    description = "\x1b[2J" + "x" * 10_000
    body = json.dumps(
        {"chart": {"result": None, "error": {"code": "Bad Request", "description": description}}}
    ).encode()
    source, _ = make_source({"SPY": [(400, body)]})
    with pytest.raises(SourceError) as err:
        source.read(one_unit(source))
    message = str(err.value)
    assert message.isprintable() and "\\x1b[2J" in message
    assert "x" * 101 not in message and len(message) < 300
