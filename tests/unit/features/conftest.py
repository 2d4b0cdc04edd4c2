"""Fixtures of the feature tests: hand-made silver bars and a pure-Python reference.

Every bar built here is a HAND-MADE EDGE CASE (not real market data): small
series designed so that the expected feature values can be worked out by hand.
The reference implementation below re-derives FEATURES.md section 2 with plain
Python loops (no Polars, no engine code), to cross-check the engine on longer
hand-made series.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Callable, Sequence

import polars as pl
import pytest

from stockbatch import schema

SILVER_POLARS_SCHEMA = pl.DataFrame(schema.SILVER_BARS.empty_table()).schema


def weekdays(start: dt.date, n: int) -> list[dt.date]:
    """``n`` consecutive Monday-Friday dates from ``start`` (holidays not skipped)."""
    out: list[dt.date] = []
    d = start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def make_bars(
    symbol: str,
    closes: Sequence[float],
    *,
    dates: Sequence[dt.date] | None = None,
    opens: Sequence[float] | None = None,
    highs: Sequence[float] | None = None,
    lows: Sequence[float] | None = None,
    volumes: Sequence[float] | None = None,
    adj_closes: Sequence[float | None] | None = None,
    start: dt.date = dt.date(2017, 1, 2),
) -> pl.DataFrame:
    """Silver rows (schema.SILVER_BARS) of one hand-made symbol.

    Defaults: open = close, high = close + 1, low = close - 1, volume = 1000,
    adj_close null, consecutive weekdays from ``start``.
    """
    n = len(closes)
    dates = list(dates) if dates is not None else weekdays(start, n)
    data = {
        "symbol": [symbol] * n,
        "trade_date": dates,
        "open": list(opens) if opens is not None else list(closes),
        "high": list(highs) if highs is not None else [c + 1 for c in closes],
        "low": list(lows) if lows is not None else [c - 1 for c in closes],
        "close": list(closes),
        "adj_close": list(adj_closes) if adj_closes is not None else [None] * n,
        "volume": list(volumes) if volumes is not None else [1000.0] * n,
        "source": ["hand-made"] * n,
        "is_adjusted": [False] * n,
        "superseded": [False] * n,
        "source_file": ["hand-made"] * n,
        "line_no": list(range(2, n + 2)),
    }
    return pl.DataFrame(data, schema=SILVER_POLARS_SCHEMA)


# --- pure-Python reference of FEATURES.md section 2 (one symbol, rows in date order) ------


def _rolling(
    xs: list[float | None], n: int, fn: Callable[[list[float]], float]
) -> list[float | None]:
    out: list[float | None] = []
    for t in range(len(xs)):
        window = xs[max(0, t - n + 1) : t + 1]
        vals = [x for x in window if x is not None]
        out.append(fn(vals) if len(window) == n and len(vals) == n else None)
    return out


def _ema(xs: list[float], span: int) -> list[float]:
    a = 2.0 / (span + 1.0)
    out = [xs[0]]
    for x in xs[1:]:
        out.append(a * x + (1 - a) * out[-1])
    return out


def _wilder(xs: list[float | None], first: int, n: int = 14) -> list[float | None]:
    """Seed at row ``first`` = mean of xs[first-n+1 .. first]; then (prev*(n-1) + x)/n."""
    out: list[float | None] = [None] * len(xs)
    if len(xs) <= first:
        return out
    window = xs[first - n + 1 : first + 1]
    prev = sum(x for x in window if x is not None) / n
    out[first] = prev
    for t in range(first + 1, len(xs)):
        x = xs[t]
        assert x is not None
        prev = (prev * (n - 1) + x) / n
        out[t] = prev
    return out


def reference_daily(rows: pl.DataFrame) -> dict[str, list[float | None]]:
    """Every daily feature of one symbol, straight from the contract's formulas."""
    r = rows.sort("trade_date").to_dicts()
    factor = [
        (x["adj_close"] / x["close"]) if x["adj_close"] is not None and x["close"] > 0 else 1.0
        for x in r
    ]
    c = [x["close"] * f for x, f in zip(r, factor, strict=True)]
    h = [x["high"] * f for x, f in zip(r, factor, strict=True)]
    lo = [x["low"] * f for x, f in zip(r, factor, strict=True)]
    v = [x["volume"] / f for x, f in zip(r, factor, strict=True)]
    n = len(r)
    out: dict[str, list[float | None]] = {}
    out["ret_1d"] = [None] + [c[t] / c[t - 1] - 1 for t in range(1, n)]
    out["log_ret_1d"] = [None] + [math.log(c[t] / c[t - 1]) for t in range(1, n)]
    for w in (5, 20, 50, 200):
        out[f"sma_{w}"] = _rolling(list(c), w, lambda xs: sum(xs) / len(xs))
    e12, e26 = _ema(c, 12), _ema(c, 26)
    macd = [a - b for a, b in zip(e12, e26, strict=True)]
    sig = _ema(macd, 9)
    out["ema_12"], out["ema_26"], out["macd"] = list(e12), list(e26), list(macd)
    out["macd_signal"] = list(sig)
    out["macd_hist"] = [a - b for a, b in zip(macd, sig, strict=True)]
    d: list[float | None] = [None] + [c[t] - c[t - 1] for t in range(1, n)]
    gains = [None if x is None else max(x, 0.0) for x in d]
    losses = [None if x is None else max(-x, 0.0) for x in d]
    ag, al = _wilder(gains, 14), _wilder(losses, 14)
    rsi: list[float | None] = []
    for g, lv in zip(ag, al, strict=True):
        if g is None or lv is None:
            rsi.append(None)
        elif lv == 0:
            rsi.append(100.0 if g > 0 else 50.0)
        else:
            rsi.append(100 - 100 / (1 + g / lv))
    out["rsi_14"] = rsi
    tr: list[float | None] = [h[0] - lo[0]] + [
        max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, n)
    ]
    out["true_range"] = tr
    out["atr_14"] = _wilder(tr, 13)
    out["volatility_20"] = [
        None if s is None else s * math.sqrt(252)
        for s in _rolling(out["log_ret_1d"], 20, statistics.stdev)
    ]
    mean20 = _rolling(list(c), 20, statistics.fmean)
    pstd20 = _rolling(list(c), 20, statistics.pstdev)
    out["bb_upper_20"] = [
        None if m is None or s is None else m + 2 * s for m, s in zip(mean20, pstd20, strict=True)
    ]
    out["bb_lower_20"] = [
        None if m is None or s is None else m - 2 * s for m, s in zip(mean20, pstd20, strict=True)
    ]
    vz: list[float | None] = []
    for t in range(n):
        if t < 19:
            vz.append(None)
            continue
        window = v[t - 19 : t + 1]
        if max(window) == min(window):  # std == 0
            vz.append(None)
        else:
            vz.append((v[t] - statistics.fmean(window)) / statistics.stdev(window))
    out["volume_z_20"] = vz
    out["dollar_volume"] = [x["close"] * x["volume"] for x in r]
    return out


def assert_close(
    actual: Sequence[float | None], expected: Sequence[float | None], name: str, tol: float = 1e-9
) -> None:
    """Nulls in the same places and ``|a - b| <= tol * max(|b|, 1)`` elsewhere."""
    assert len(actual) == len(expected), name
    for t, (a, b) in enumerate(zip(actual, expected, strict=True)):
        if b is None:
            assert a is None, f"{name}[{t}]: expected null, got {a}"
        else:
            assert a is not None, f"{name}[{t}]: expected {b}, got null"
            assert abs(a - b) <= tol * max(abs(b), 1.0), f"{name}[{t}]: {a} != {b}"


# --- fixtures (the tests run with --import-mode=importlib, so helpers come as fixtures) ----


@pytest.fixture
def bars_of() -> Callable[..., pl.DataFrame]:
    """:func:`make_bars`: hand-made silver rows of one symbol."""
    return make_bars


@pytest.fixture
def reference() -> Callable[[pl.DataFrame], dict[str, list[float | None]]]:
    """:func:`reference_daily`: the pure-Python reference of section 2."""
    return reference_daily


@pytest.fixture
def close_enough() -> Callable[..., None]:
    """:func:`assert_close`: nulls in the same places, values within a tolerance."""
    return assert_close
