"""Yahoo Finance daily bars, fetched through yfinance's HTTP client.

One unit per symbol: ``yahoo/<SYMBOL>/<start>..<end>`` (both dates inclusive,
exchange-local session dates). Incremental: a symbol with a stored last date
starts the day after it, and a symbol already up to date yields no unit.

Why not ``yf.Ticker(...).history()``: it rewrites what arrived. It fills a
missing volume with 0, drops days whose values are all missing (``keepna``
keeps the prices but still zeroes the volume), may "repair" prices, and caches
past ranges in-process. Bronze must hold exactly what Yahoo sent, so this module
uses yfinance only for what it is good at: the HTTP session (curl_cffi browser
impersonation, cookie and crumb, consent pages, rate-limit detection) via
``yfinance.data.YfData.get``, and reads the documented chart JSON itself
(``/v8/finance/chart/<SYMBOL>``: ``meta``, ``timestamp[]``,
``indicators.quote[0].{open,high,low,close,volume}[]``,
``indicators.adjclose[0].adjclose[]``, ``events.{dividends,splits,capitalGains}``).

Mapping to bronze: raw open/high/low/close, ``adjclose`` -> ``adj_close``,
volume; values as text via ``repr()`` (so they round-trip exactly), JSON
``null``/NaN -> null; ``trade_date`` = the session date in the exchange's time
zone (``meta.exchangeTimezoneName``); ``source='yahoo'``, ``is_adjusted=False``,
``source_file`` = the unit's ref, ``line_no`` = position in the response's
arrays + 1, ``n_fields`` and ``raw_line`` null (a JSON response has no lines).
Rows outside the unit's date range are dropped (Yahoo appends the latest price
even past ``period2``), and so is a session that has not closed yet at fetch
time: storing a partial day would freeze it, because the next run starts the
day after it.

Splits, dividends and capital gains come from ``events(unit)`` (schema
``YAHOO_EVENTS``); call it after ``read(unit)``, which already holds the
response, so no second request is made.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa

from stockbatch.schema import INSTRUMENTS
from stockbatch.settings import YahooSettings
from stockbatch.sources.base import (
    BRONZE_SOURCE_SCHEMA,
    RateLimitedError,
    ScanProgress,
    Source,
    SourceError,
    SourceUnit,
    SymbolNotFoundError,
    echo,
)
from stockbatch.sources.symbols import yahoo_symbol

log = logging.getLogger(__name__)

YAHOO_EVENTS = pa.schema(
    [
        ("symbol", pa.string()),
        ("event_date", pa.string()),  # exchange-local date, YYYY-MM-DD
        ("kind", pa.string()),  # dividend | split | capital_gain
        ("amount", pa.string()),  # per share, dividends and capital gains
        ("numerator", pa.string()),  # splits: new shares ...
        ("denominator", pa.string()),  # ... per old shares
        ("split_ratio", pa.string()),  # splits, as Yahoo spells it ("4:1")
        ("source_file", pa.string()),  # the unit's ref
    ]
)
"""Corporate actions returned alongside the bars, values as text like bronze."""

_EVENT_KINDS = (("dividends", "dividend"), ("splits", "split"), ("capitalGains", "capital_gain"))
_TRANSIENT_NAMES = frozenset(
    {"Timeout", "ConnectionError", "ConnectTimeout", "ReadTimeout", "ChunkedEncodingError"}
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Fetched:
    ref: str
    bars: pa.Table
    events: pa.Table


class YahooSource(Source):
    """Daily bars of ``symbols`` from Yahoo Finance.

    ``start``/``end`` bound every request (inclusive; ``start`` defaults to
    ``settings.default_start``, ``end`` to today in UTC). ``last_dates`` maps a
    symbol (as ``yahoo_symbol`` spells it) to the last stored trade date.
    ``session`` is handed to yfinance (a curl_cffi or requests Session); None lets
    yfinance make its own. ``sleep`` and ``now`` exist so tests run without
    waiting and at a fixed time.
    """

    name = "yahoo"
    allows_no_units = True

    def __init__(
        self,
        symbols: Sequence[str],
        start: date | None,
        end: date | None,
        last_dates: Mapping[str, date],
        settings: YahooSettings,
        session: Any = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        # Yahoo's spelling, each symbol once, in the order given.
        self.symbols = list(dict.fromkeys(s for s in map(yahoo_symbol, symbols) if s))
        self.start = start
        self.end = end
        self.last_dates = dict(last_dates)
        self.settings = settings
        self._session = session
        self._sleep = sleep
        self._now = now
        self._last: _Fetched | None = None  # the latest response, for events()
        self._instruments: dict[str, dict[str, Any]] = {}

    def describe(self) -> str:
        """``symbols A, B, C`` (the first ten)."""
        shown = ", ".join(self.symbols[:10]) + (", ..." if len(self.symbols) > 10 else "")
        return f"symbols {shown}" if self.symbols else "no symbols"

    def units(self, on_scan: ScanProgress | None = None) -> Iterator[SourceUnit]:
        """One unit per distinct symbol that is not up to date, in the given order.

        Listing is instant (no request), so ``on_scan`` is not called.
        """
        end = self.end or self._now().astimezone(UTC).date()
        for symbol in self.symbols:
            start = self.start or self.settings.default_start
            last = self.last_dates.get(symbol)
            if last is not None:
                start = max(start, last + timedelta(days=1))
            if start > end:
                continue  # already up to date
            ref = f"yahoo/{symbol}/{start.isoformat()}..{end.isoformat()}"
            yield SourceUnit(source="yahoo", ref=ref, path=None, sha256=None, size=None)

    def read(self, unit: SourceUnit) -> pa.Table:
        """Fetch one symbol's bars (see the module docstring for the mapping).

        Raises ``SymbolNotFoundError`` for an unknown or delisted symbol,
        ``RateLimitedError`` when Yahoo still answers 429 after
        ``settings.max_retries`` retries, ``SourceError`` for other failures.
        """
        return self._fetch(unit).bars

    def events(self, unit: SourceUnit) -> pa.Table:
        """Splits, dividends and capital gains of the unit's range (``YAHOO_EVENTS``)."""
        return self._fetch(unit).events

    def instruments(self) -> pa.Table | None:
        """Instruments of the symbols fetched so far by this source (None before any).

        name = ``meta.longName`` (else ``shortName``), exchange = Yahoo's exchange
        code (``meta.exchangeName``, e.g. ``PCX``), is_etf = instrumentType == ETF.
        """
        if not self._instruments:
            return None
        return pa.Table.from_pylist(list(self._instruments.values()), schema=INSTRUMENTS)

    # -- internals -------------------------------------------------------------

    def _fetch(self, unit: SourceUnit) -> _Fetched:
        if self._last is not None and self._last.ref == unit.ref:
            return self._last
        symbol, start, end = _parse_ref(unit.ref)
        result = self._request(symbol, start, end, unit.ref)
        meta = result.get("meta") or {}
        if not isinstance(meta, dict):
            meta = {}
        try:
            tz = _exchange_zone(meta)
            fetched = _Fetched(
                ref=unit.ref,
                bars=self._bars(result, symbol, start, end, tz, unit.ref),
                events=_events(result, symbol, start, end, tz, unit.ref),
            )
        except (AttributeError, TypeError, ValueError, OverflowError, OSError) as exc:
            # A node of the wrong type, or a timestamp/offset out of any calendar: the
            # unit fails like any other unreadable answer (read_many carries on).
            raise SourceError(
                "unexpected answer from Yahoo (the chart JSON does not have the documented "
                f"shape: {type(exc).__name__}: {_said(exc)}); Yahoo may have changed its API: "
                "try again later, or update yfinance.",
                ref=unit.ref,
            ) from exc
        self._last = fetched
        self._instruments[symbol] = {
            "symbol": symbol,
            "name": _str(meta.get("longName")) or _str(meta.get("shortName")),
            "exchange": _str(meta.get("exchangeName")),
            "is_etf": (meta["instrumentType"] == "ETF") if meta.get("instrumentType") else None,
            "source": "yahoo",
        }
        return self._last

    def _request(self, symbol: str, start: date, end: date, ref: str) -> dict[str, Any]:
        """GET the chart JSON, retrying 429s and transient errors with backoff."""
        # Imported here: yfinance pulls in pandas, seconds that a Kaggle-only run skips.
        from yfinance.const import _BASE_URL_
        from yfinance.data import YfData
        from yfinance.exceptions import YFRateLimitError

        client = YfData(session=self._session)
        url = f"{_BASE_URL_}/v8/finance/chart/{symbol}"
        # A day of margin on each side: a session's timestamp is its opening time
        # in UTC, which for Asia-Pacific exchanges falls on the previous UTC day.
        params = {
            "period1": _utc_seconds(start - timedelta(days=1)),
            "period2": _utc_seconds(end + timedelta(days=2)),
            "interval": "1d",
            "includePrePost": "false",
            "events": "div,splits,capitalGains",
            "includeAdjustedClose": "true",
        }
        attempts = self.settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            problem: str
            try:
                response = client.get(url, params=params, timeout=30)
            except YFRateLimitError:
                problem = "HTTP 429 (rate limited)"
            except Exception as exc:
                if not _is_transient(exc):
                    raise SourceError(
                        f"the request to Yahoo failed ({type(exc).__name__}: {_said(exc)})",
                        ref=ref,
                    ) from exc
                problem = f"network error ({type(exc).__name__}: {_said(exc)})"
            else:
                status = response.status_code
                if status == 429:
                    problem = "HTTP 429 (rate limited)"
                elif status >= 500:
                    problem = f"HTTP {status} (server error)"
                else:
                    return _chart_result(response, symbol, ref)
            if attempt == attempts:
                if problem.startswith("HTTP 429"):
                    raise RateLimitedError(
                        f"Yahoo is rate limiting this client ({attempts} attempts). Wait a "
                        "while and run the ingest again, or raise "
                        "STOCKBATCH_YAHOO__MAX_RETRIES / STOCKBATCH_YAHOO__BACKOFF_SECONDS.",
                        attempts=attempts,
                        ref=ref,
                    )
                raise SourceError(
                    f"Yahoo could not be reached: {problem} after {attempts} attempts. "
                    "Check the network connection and run the ingest again.",
                    ref=ref,
                )
            delay = self.settings.backoff_seconds * 2 ** (attempt - 1)
            log.warning("%s: %s; retry %d/%d in %.1fs", ref, problem, attempt, attempts - 1, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _bars(
        self, result: dict[str, Any], symbol: str, start: date, end: date, tz: tzinfo, ref: str
    ) -> pa.Table:
        timestamps = result.get("timestamp") or []
        if not isinstance(timestamps, list):  # rows would be made of its characters or keys
            raise TypeError(f"timestamp is a {type(timestamps).__name__}, not an array")
        indicators = result.get("indicators") or {}
        quote = _first(indicators.get("quote"))
        adjclose = _first(indicators.get("adjclose")).get("adjclose")
        series = {
            "open": quote.get("open"),
            "high": quote.get("high"),
            "low": quote.get("low"),
            "close": quote.get("close"),
            "adj_close": adjclose,
            "volume": quote.get("volume"),
        }
        now = self._now()
        is_final = _session_is_final(result.get("meta") or {}, now, tz)
        columns: dict[str, list[Any]] = {name: [] for name in BRONZE_SOURCE_SCHEMA.names}
        for i, ts in enumerate(timestamps):
            day = _local_date(ts, tz)
            if day is not None and not (start <= day <= end and is_final(day)):
                continue
            columns["symbol"].append(symbol)
            columns["trade_date"].append(day.isoformat() if day is not None else None)
            for name, values in series.items():
                columns[name].append(_text(_at(values, i)))
            columns["source"].append("yahoo")
            columns["is_adjusted"].append(False)
            columns["source_file"].append(ref)
            columns["line_no"].append(i + 1)
            columns["n_fields"].append(None)
            columns["raw_line"].append(None)
        return pa.Table.from_pydict(columns, schema=BRONZE_SOURCE_SCHEMA)


def _events(
    result: dict[str, Any], symbol: str, start: date, end: date, tz: tzinfo, ref: str
) -> pa.Table:
    rows: list[dict[str, Any]] = []
    events = result.get("events") or {}
    for key, kind in _EVENT_KINDS:
        for stamp, event in (events.get(key) or {}).items():
            ts = event.get("date", stamp)
            day = _local_date(ts, tz)
            if day is None or not start <= day <= end:
                continue
            rows.append(
                {
                    "symbol": symbol,
                    "event_date": day.isoformat(),
                    "kind": kind,
                    "amount": _text(event.get("amount")),
                    "numerator": _text(event.get("numerator")),
                    "denominator": _text(event.get("denominator")),
                    "split_ratio": _text(event.get("splitRatio")),
                    "source_file": ref,
                }
            )
    rows.sort(key=lambda r: (r["event_date"], r["kind"]))
    return pa.Table.from_pylist(rows, schema=YAHOO_EVENTS)


def _chart_result(response: Any, symbol: str, ref: str) -> dict[str, Any]:
    """The ``chart.result[0]`` object, or the right SourceError."""
    status = response.status_code
    try:
        payload = response.json()
    except ValueError:
        payload = None
    chart = payload.get("chart") if isinstance(payload, dict) else None
    error = chart.get("error") if isinstance(chart, dict) else None
    if status == 404 or (isinstance(error, dict) and error.get("code") == "Not Found"):
        reason = _said(error.get("description")) if isinstance(error, dict) else f"HTTP {status}"
        raise SymbolNotFoundError(
            symbol,
            f"Yahoo does not know {symbol} ({reason}): check the spelling (Yahoo writes "
            "share classes with a dash, BRK-B) or drop it from the symbol list.",
            ref=ref,
        )
    if isinstance(error, dict) and error:
        raise SourceError(
            f"Yahoo refused the request ({_said(error.get('code'))}: "
            f"{_said(error.get('description'))}).",
            ref=ref,
        )
    results = chart.get("result") if isinstance(chart, dict) else None
    if status >= 400 or not isinstance(results, list) or not results:
        raise SourceError(
            f"unexpected answer from Yahoo (HTTP {status}, no chart result); Yahoo may be "
            "down or have changed its API: try again later, or update yfinance.",
            ref=ref,
        )
    first = results[0]
    return first if isinstance(first, dict) else {}


def _session_is_final(meta: dict[str, Any], now: datetime, tz: tzinfo) -> Callable[[date], bool]:
    """Whether a session date had closed at ``now`` (today's only after the close)."""
    today = now.astimezone(tz).date()
    regular = (meta.get("currentTradingPeriod") or {}).get("regular") or {}
    close = regular.get("end")
    closed_today = (
        isinstance(close, int | float)
        and now.timestamp() >= close
        and datetime.fromtimestamp(close, tz).date() == today
    )
    return lambda day: day < today or (day == today and closed_today)


def _parse_ref(ref: str) -> tuple[str, date, date]:
    try:
        prefix, symbol, span = ref.split("/")
        first, last = span.split("..")
        if prefix != "yahoo" or not symbol:
            raise ValueError(ref)
        return symbol, date.fromisoformat(first), date.fromisoformat(last)
    except ValueError:
        raise SourceError(
            "not a Yahoo unit (expected yahoo/<SYMBOL>/<start>..<end>)", ref=ref
        ) from None


def _exchange_zone(meta: dict[str, Any]) -> tzinfo:
    name = meta.get("exchangeTimezoneName")
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    offset = meta.get("gmtoffset")
    if isinstance(offset, int):
        return timezone(timedelta(seconds=offset))
    return UTC


def _local_date(ts: Any, tz: tzinfo) -> date | None:
    if isinstance(ts, str) and ts.lstrip("-").isdigit():
        ts = int(ts)  # event keys are timestamps as strings
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return None
    return datetime.fromtimestamp(ts, tz).date()


def _utc_seconds(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _first(items: Any) -> dict[str, Any]:
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return items[0]
    return {}


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def _str(value: Any) -> str | None:
    """A JSON value that should be text, or None when it is not."""
    return value if isinstance(value, str) else None


def _text(value: Any) -> str | None:
    """A JSON value as text that round-trips: repr() of numbers, null/NaN -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    return repr(value)


def _said(value: Any) -> str:
    """Text from Yahoo (or an exception about it) for a message: escaped, cut short."""
    return echo(str(value), quote=False)


def _is_transient(exc: BaseException) -> bool:
    """Network trouble worth a retry (OS errors, timeouts, dropped connections)."""
    if isinstance(exc, OSError | TimeoutError):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)
