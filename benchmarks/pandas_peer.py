"""The plain-pandas peer of stockbatch's process stage (CSV -> silver -> gold).

What a pandas user would otherwise write for the same contract
(the FEATURES.md data contract, sections 1-5): read every CSV with ``pd.read_csv``,
concatenate, validate (section 4), keep one source per symbol (section 5),
compute the daily features with ``groupby`` + ``rolling``/``ewm`` (section 2)
and the quarterly table (section 3), and write Parquet. It is idiomatic pandas,
neither deliberately slow nor hand-optimised, and it imports nothing from
stockbatch, so it doubles as an independent reference for correctness checks.

Input layouts (detected per ``--path``; several ``--path`` may be given):

- Kaggle Huge (``**/*.us.txt``: ``Date,Open,High,Low,Close,Volume,OpenInt``),
  source ``kaggle-huge``, symbol = file name without ``.us.txt``, upper-cased.
- Kaggle S&P 500 5-year (``**/*_data.csv``: ``date,open,high,low,close,volume,Name``),
  source ``kaggle-sp500``, symbol = file name without ``_data.csv``.
- Kaggle NASDAQ (``stocks/*.csv``, ``etfs/*.csv``: ``Date,Open,High,Low,Close,Adj Close,Volume``),
  source ``kaggle-nasdaq``, symbol = file stem.

Decisions where the contract leaves room. The peer was written from the
contract alone; where stockbatch's quality.py / sources/kaggle.py documented a
reading before the cross-check, the peer follows the same reading so the two
can be compared row for row (marked *):

- Blank lines are not rows; the first non-blank line is the header (*).
- Fields are stripped of surrounding ASCII whitespace; an empty field is
  *missing* (``missing_price``/``missing_volume``), not unparseable (*).
- A line whose field count differs from the header is ``unparseable`` only (*).
- A number parses when it matches ``NUMBER_GRAMMAR`` and is finite; a date
  when it is exactly ``YYYY-MM-DD`` and a real date (*). Rules needing a value
  that is missing or unparseable do not fire.
- ``non_positive_price`` also looks at ``adj_close`` when present (*).
- open/close outside range: beyond ``1e-6 * max(|low|, |high|)`` (*).
- Duplicates: rows of one (source, symbol, trade_date) that all agree (same
  parsed numbers, same text where a field did not parse, missing equals
  missing) collapse into the first by file then line, which is then validated
  like any row; if any row of the group disagrees, every row of it is
  quarantined as ``duplicate`` (*). Rows without a parsed date take part in neither.
- Section 5: per symbol, the highest-priority source among its *clean* rows wins (*).
- Health counts (summary.json) are over the clean rows of the winning source (*).
- Symbols: the file name minus its layout's suffix, upper-cased, a share-class
  dot turned into a dash (``BRK.B_data.csv`` -> ``BRK-B``) (*).

Run: ``python benchmarks/pandas_peer.py --path DIR --out OUTDIR --as-of 2017-11-30``.
Writes ``OUTDIR/silver/{bars,quarantine}.parquet``,
``OUTDIR/gold/{daily_features,quarterly_features}.parquet`` and ``OUTDIR/summary.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import exchange_calendars as xcals
import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

FEATURE_SET_VERSION = 1
SOURCE_PRIORITY = ("yahoo", "kaggle-nasdaq", "kaggle-huge", "kaggle-sp500")
REASON_CODES = (
    "unparseable",
    "missing_price",
    "missing_volume",
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "negative_volume",
    "weekend_date",
    "duplicate",
    "future_date",
)
PRICES = ["open", "high", "low", "close"]
VALUES = [*PRICES, "adj_close", "volume"]
RANGE_TOL = 1e-6  # relative to the bar's scale, max(|low|, |high|)
WHITESPACE = " \t\r\n\x0b\x0c"  # ASCII only: what "blank" and "stripped" mean
NUMBER_GRAMMAR = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
SQRT_252 = float(np.sqrt(252.0))

DAILY_FEATURE_COLUMNS = [
    "ret_1d",
    "log_ret_1d",
    "sma_5",
    "sma_20",
    "sma_50",
    "sma_200",
    "ema_12",
    "ema_26",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi_14",
    "true_range",
    "atr_14",
    "volatility_20",
    "bb_upper_20",
    "bb_lower_20",
    "volume_z_20",
    "dollar_volume",
]
END_FEATURES = ["sma_50", "sma_200", "rsi_14", "macd", "atr_14", "volatility_20"]


# ----------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """One Kaggle file layout: its header and how it maps onto the canonical bar."""

    source: str
    is_adjusted: bool
    header: tuple[str, ...]
    columns: dict[str, str]  # canonical name -> header name

    def symbol(self, path: Path) -> str:
        """Symbol of one file: its name minus the layout's suffix, upper-cased, ``.`` -> ``-``."""
        name = path.name
        if self.source == "kaggle-huge":
            stem = name.removesuffix(".us.txt")
        elif self.source == "kaggle-sp500":
            stem = name.removesuffix("_data.csv")
        else:
            stem = path.stem
        return stem.upper().replace(".", "-")


HUGE = Layout(
    "kaggle-huge",
    True,
    ("Date", "Open", "High", "Low", "Close", "Volume", "OpenInt"),
    {
        "trade_date": "Date",
        "open": "Open",
        "high": "High",
        "low": "Low",
        "close": "Close",
        "volume": "Volume",
    },
)
SP500 = Layout(
    "kaggle-sp500",
    False,
    ("date", "open", "high", "low", "close", "volume", "Name"),
    {
        "trade_date": "date",
        "open": "open",
        "high": "high",
        "low": "low",
        "close": "close",
        "volume": "volume",
    },
)
NASDAQ = Layout(
    "kaggle-nasdaq",
    False,
    ("Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"),
    {
        "trade_date": "Date",
        "open": "Open",
        "high": "High",
        "low": "Low",
        "close": "Close",
        "adj_close": "Adj Close",
        "volume": "Volume",
    },
)


def discover(root: Path) -> tuple[Layout, list[Path]]:
    """The layout of a dataset folder and its data files, sorted by relative path."""
    huge = sorted(root.rglob("*.us.txt"))
    if huge:
        return HUGE, huge
    sp = sorted(root.rglob("*_data.csv"))
    if sp:
        return SP500, sp
    nasdaq = sorted(p for d in ("stocks", "etfs") for p in (root / d).glob("*.csv"))
    if nasdaq:
        return NASDAQ, nasdaq
    raise SystemExit(f"no Kaggle Huge, S&P 500 or NASDAQ files found under {root}")


# ----------------------------------------------------------------------------- reading


def read_file(layout: Layout, path: Path) -> pd.DataFrame:
    """All data rows of one file: canonical value columns parsed, plus line numbers.

    Fast path: ``pd.read_csv`` with type inference. Any irregularity (a field
    that is empty or not numeric, a line with the wrong field count) sends the
    file down the careful path, which reads it line by line as text and adds
    per-row parse status columns.
    """
    rename = {h: c for c, h in layout.columns.items()}
    value_headers = [layout.columns[c] for c in VALUES if c in layout.columns]
    if path.stat().st_size > 0:
        try:
            raw = pd.read_csv(
                path,
                dtype={layout.columns["trade_date"]: str},
                na_values=[""],
                keep_default_na=False,
                skip_blank_lines=False,
                index_col=False,
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
            raw = None
        if (
            raw is not None
            and tuple(raw.columns) == layout.header
            and len(raw) > 0
            and not raw.isna().to_numpy().any()
            and all(pd.api.types.is_numeric_dtype(raw[c]) for c in value_headers)
            and np.isfinite(raw[value_headers].to_numpy(dtype="float64")).all()
        ):
            # The header is line 1 and there is no blank line (it would be a NaN row).
            frame = raw[list(rename)].rename(columns=rename)
            frame["line_no"] = raw.index.to_numpy(dtype="int32") + 2
            return frame
    return read_file_careful(layout, path)


def read_file_careful(layout: Layout, path: Path) -> pd.DataFrame:
    """Line-by-line reading of a file with irregular rows (few files, rarely used).

    Blank lines are skipped, the first other line is the header; fields are
    stripped of ASCII whitespace; a number must match ``NUMBER_GRAMMAR`` and be
    finite; the text of a field that does not parse is kept in ``bad_text``
    (two rows with different garbage are not identical twins).
    """
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    width = len(layout.header)
    rows: list[list[str]] = []
    numbers: list[int] = []
    arity: list[int] = []
    raw_lines: list[str | None] = []
    header_seen = False
    for no, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line.strip(WHITESPACE):
            continue
        if not header_seen:
            header_seen = True
            continue
        parts = line.split(",")
        numbers.append(no)
        arity.append(len(parts))
        if len(parts) == width:
            rows.append([p.strip(WHITESPACE) for p in parts])
            raw_lines.append(None)
        else:
            rows.append([""] * width)
            raw_lines.append(line)
    text = pd.DataFrame(rows, columns=list(layout.header), dtype=str)
    frame = pd.DataFrame({"trade_date": text[layout.columns["trade_date"]]})
    frame["line_no"] = np.asarray(numbers, dtype="int32")
    frame["n_fields"] = np.asarray(arity, dtype="int16")
    frame["raw_line"] = pd.Series(raw_lines, dtype=object)
    frame["arity_ok"] = frame["n_fields"] == width
    frame["bad_value"] = False
    frame["bad_text"] = ""
    for col in VALUES:
        if col not in layout.columns:
            continue
        field = text[layout.columns[col]]
        grammar = field.str.fullmatch(NUMBER_GRAMMAR)
        parsed = pd.to_numeric(field.where(grammar), errors="coerce").astype("float64")
        empty = (field == "") & frame["arity_ok"]
        unparsed = ~empty & ~np.isfinite(parsed) & frame["arity_ok"]
        frame[col] = parsed.where(~unparsed)
        frame[f"_missing_{col}"] = empty
        frame["bad_value"] |= unparsed
        frame["bad_text"] += (col + "=" + field + ";").where(unparsed, "")
    frame["miss_price"] = frame[[f"_missing_{c}" for c in PRICES]].any(axis=1)
    frame["miss_volume"] = frame["_missing_volume"]
    frame["trade_date"] = frame["trade_date"].where(frame["arity_ok"])
    return frame.drop(columns=[c for c in frame.columns if c.startswith("_missing_")])


def read_sources(roots: Iterable[Path]) -> tuple[pd.DataFrame, int]:
    """Every data row of every file under the roots, in file then line order."""
    frames = []
    files = []
    for root in roots:
        layout, paths = discover(root)
        for path in paths:
            frame = read_file(layout, path)
            files.append(
                {
                    "symbol": layout.symbol(path),
                    "source": layout.source,
                    "is_adjusted": layout.is_adjusted,
                    "source_file": path.relative_to(root).as_posix(),
                    "width": len(layout.header),
                }
            )
            if len(frame):
                frames.append(frame.assign(file_id=len(files) - 1))
    bars = pd.concat(frames, ignore_index=True)
    # Rows of the fast path have no parse-status columns: they parsed cleanly.
    for col, default in (
        ("arity_ok", True),
        ("bad_value", False),
        ("miss_price", False),
        ("miss_volume", False),
        ("bad_text", ""),
    ):
        bars[col] = bars[col].fillna(default) if col in bars else default
    bars = bars.astype(
        {
            "arity_ok": bool,
            "bad_value": bool,
            "miss_price": bool,
            "miss_volume": bool,
            "bad_text": "category",
        }
    )
    if "raw_line" not in bars:
        bars["raw_line"] = None
    if "adj_close" not in bars:
        bars["adj_close"] = np.nan
    # One row per file; its repeated text columns become categoricals (pandas' advice for
    # low-cardinality strings), the per-row join then copies small integer codes.
    file_table = pd.DataFrame(files)
    for col in ("symbol", "source", "source_file"):
        file_table[col] = file_table[col].astype(
            pd.CategoricalDtype(sorted(file_table[col].unique()))
        )
    bars = bars.join(file_table, on="file_id").drop(columns="file_id")
    width = bars.pop("width")
    bars["n_fields"] = (bars["n_fields"].fillna(width) if "n_fields" in bars else width).astype(
        "int16"
    )
    bars = bars.rename(columns={"trade_date": "date_text"})
    # YYYY-MM-DD exactly: the length test refuses the "2017-1-5" that %Y-%m-%d would take.
    # read_csv keeps blanks around a date; strip them on the (rare) texts of another length.
    date_text = bars["date_text"]
    odd = date_text.str.len() != 10
    if odd.any():
        date_text = date_text.mask(odd, date_text[odd].str.strip(WHITESPACE))
    bars["trade_date"] = pd.to_datetime(
        date_text.where(date_text.str.len() == 10), format="%Y-%m-%d", errors="coerce"
    )
    return bars, len(files)


# ----------------------------------------------------------------------------- validation


def validate(
    bars: pd.DataFrame, as_of: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Section 4: split rows into clean, quarantined (with reasons) and collapsed twins."""
    key = ["source", "symbol", "trade_date"]
    keyed = bars["arity_ok"] & bars["trade_date"].notna()
    # Rows sharing a key are rare: find them first, then look for identical twins among them.
    shared = keyed & bars.duplicated(subset=key, keep=False)
    twin = pd.Series(False, index=bars.index)
    duplicate = pd.Series(False, index=bars.index)
    if shared.any():
        # Equal = same parsed numbers, same garbage text where a field did not parse,
        # missing equals missing. A group whose rows all agree collapses into its first
        # row (file, then line order); a group with any disagreement is all quarantined.
        group = bars[shared].assign(**{c: bars.loc[shared, c].replace(-0.0, 0.0) for c in VALUES})
        versions = ~group.duplicated(subset=[*key, *VALUES, "bad_text"])
        disagree = versions.groupby([group[k] for k in key], observed=True).transform("sum") > 1
        duplicate[shared] = disagree
        twin[shared] = ~disagree & group.duplicated(subset=key, keep="first")
    n_twins = int(twin.sum())
    if n_twins:
        bars, duplicate = bars[~twin], duplicate[~twin]

    o, h, lo, c, v = (bars[n] for n in ("open", "high", "low", "close", "volume"))
    date = bars["trade_date"]
    tol = RANGE_TOL * np.maximum(lo.abs(), h.abs())
    reasons = pd.DataFrame(
        {
            "unparseable": ~bars["arity_ok"] | (bars["arity_ok"] & date.isna()) | bars["bad_value"],
            "missing_price": bars["miss_price"],
            "missing_volume": bars["miss_volume"],
            "non_positive_price": (bars[[*PRICES, "adj_close"]] <= 0).any(axis=1),
            "high_below_low": h < lo,
            "open_outside_range": (o < lo - tol) | (o > h + tol),
            "close_outside_range": (c < lo - tol) | (c > h + tol),
            "negative_volume": v < 0,
            "weekend_date": date.dt.day_of_week >= 5,
            "duplicate": duplicate,
            "future_date": date > pd.Timestamp(as_of),
        }
    )
    bad = reasons.any(axis=1)

    quarantine = bars[bad].copy()
    flags = reasons[bad].to_numpy()
    codes = np.array(REASON_CODES)
    quarantine["reasons"] = [list(codes[row]) for row in flags]
    clean = bars.loc[
        ~bad, ["symbol", "trade_date", *VALUES, "source", "is_adjusted", "source_file", "line_no"]
    ]

    # Section 5: one source per symbol; the others stay in silver, flagged.
    rank = clean["source"].map({s: i for i, s in enumerate(SOURCE_PRIORITY)}).astype("float64")
    rank = rank.fillna(len(SOURCE_PRIORITY))
    clean["superseded"] = rank != rank.groupby(clean["symbol"]).transform("min")

    counts: dict[str, Any] = {
        "rows_in": len(bars) + n_twins,
        "rows_clean": len(clean),
        "rows_quarantined": len(quarantine),
        "rows_deduplicated": n_twins,
        "rows_superseded": int(clean["superseded"].sum()),
    }
    counts["reasons"] = {code: int(reasons[code].sum()) for code in REASON_CODES}
    assert (
        counts["rows_in"]
        == counts["rows_clean"] + counts["rows_quarantined"] + counts["rows_deduplicated"]
    )
    return clean, quarantine, counts


# ----------------------------------------------------------------------------- features


def _wilder(x: pd.Series, t: pd.Series, by: pd.Series, first: int) -> pd.Series:
    """Wilder average: at row ``first`` the mean of the last 14 values, then (prev*13 + x)/14."""
    seed = x.groupby(by).rolling(14).mean().droplevel(0)
    seeded = x.where(t > first, seed.where(t == first))
    return seeded.groupby(by).ewm(alpha=1 / 14, adjust=False).mean().droplevel(0)


def rolling_std(x: pd.Series, by: pd.Series, n: int, ddof: int) -> pd.Series:
    """Standard deviation of the last ``n`` rows per group, two-pass over each window.

    Not ``.rolling(n).std()``: pandas updates one running sum of squares as
    rows enter and leave the window, and on real data (a symbol whose price
    falls from 31,000 to 1.6, e.g. RSLS in the Huge sample) that drifts to a
    1e-5 relative error, 1,000 times the contract's tolerance. A window that
    holds one repeated value gets exactly 0 (tested with max == min, because
    a two-pass mean of equal non-integers can be off by an ulp).
    """

    def per_symbol(values: pd.Series) -> pd.Series:
        out = np.full(len(values), np.nan)
        if len(values) >= n:
            windows = sliding_window_view(values.to_numpy(dtype="float64"), n)
            std = windows.std(axis=1, ddof=ddof)
            out[n - 1 :] = np.where(windows.max(axis=1) == windows.min(axis=1), 0.0, std)
        return pd.Series(out, index=values.index)

    return x.groupby(by, sort=False).transform(per_symbol)


def daily_features(clean: pd.DataFrame) -> pd.DataFrame:
    """Section 2 on the winning source's clean rows, one row per bar."""
    bar_cols = ["symbol", "trade_date", *VALUES, "source"]
    df = clean.loc[~clean["superseded"], bar_cols].sort_values(
        ["symbol", "trade_date"], ignore_index=True
    )
    factor = (df["adj_close"] / df["close"]).where(df["adj_close"].notna() & (df["close"] > 0), 1.0)
    o, h, lo, c = (df[p] * factor for p in PRICES)
    v = df["volume"] / factor
    sym = df["symbol"]
    g = c.groupby(sym)
    t = sym.groupby(sym).cumcount()

    prev_c = g.shift()
    feats = df  # features become columns of this sorted copy (no concat copy at the end)
    feats["ret_1d"] = c / prev_c - 1
    feats["log_ret_1d"] = np.log(c / prev_c)
    for n in (5, 20, 50, 200):
        feats[f"sma_{n}"] = g.rolling(n).mean().droplevel(0)
    for n in (12, 26):
        feats[f"ema_{n}"] = g.ewm(span=n, adjust=False).mean().droplevel(0)
    feats["macd"] = feats["ema_12"] - feats["ema_26"]
    feats["macd_signal"] = feats["macd"].groupby(sym).ewm(span=9, adjust=False).mean().droplevel(0)
    feats["macd_hist"] = feats["macd"] - feats["macd_signal"]

    d = c - prev_c
    avg_gain = _wilder(d.clip(lower=0), t, sym, first=14)
    avg_loss = _wilder((-d).clip(lower=0), t, sym, first=14)
    rsi = 100 - 100 / (1 + avg_gain / avg_loss.where(avg_loss != 0))
    rsi = rsi.mask(avg_loss == 0, np.where(avg_gain > 0, 100.0, 50.0))
    feats["rsi_14"] = rsi.where(avg_gain.notna())

    tr = pd.concat([h - lo, (h - prev_c).abs(), (lo - prev_c).abs()], axis=1).max(axis=1)
    feats["true_range"] = tr
    feats["atr_14"] = _wilder(tr, t, sym, first=13)

    feats["volatility_20"] = rolling_std(feats["log_ret_1d"], sym, 20, ddof=1) * SQRT_252
    band = rolling_std(c, sym, 20, ddof=0)
    feats["bb_upper_20"] = feats["sma_20"] + 2 * band
    feats["bb_lower_20"] = feats["sma_20"] - 2 * band
    v_mean = v.groupby(sym).rolling(20).mean().droplevel(0)
    v_std = rolling_std(v, sym, 20, ddof=1)
    feats["volume_z_20"] = (v - v_mean) / v_std.where(v_std != 0)
    feats["dollar_volume"] = df["close"] * df["volume"]

    # Adjusted series the quarterly table needs; not written.
    df["_o"], df["_h"], df["_l"], df["_c"] = o, h, lo, c
    return df


def xnys_sessions(first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """XNYS sessions from ``first`` to a month past the quarter of ``last`` (for available_at)."""
    end = last.to_period("Q").end_time.normalize() + pd.Timedelta(days=31)
    cal = xcals.get_calendar("XNYS", start=first.normalize(), end=end)
    return cal.sessions


def quarterly_features(daily: pd.DataFrame, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """Section 3: one row per symbol and calendar quarter."""
    df = daily
    period = df["trade_date"].dt.to_period("Q")
    qidx = (df["trade_date"].dt.year * 4 + (df["trade_date"].dt.month - 1) // 3).rename("qidx")
    gq = df.groupby([df["symbol"], qidx], sort=True)

    drawdown = df["_c"] / df["_c"].groupby([df["symbol"], qidx]).cummax() - 1
    q = gq.agg(
        q_high=("_h", "max"),
        q_low=("_l", "min"),
        q_volatility=("log_ret_1d", "std"),
        q_avg_volume=("volume", "mean"),
        q_dollar_volume=("dollar_volume", "sum"),
        q_trading_days=("trade_date", "size"),
    )
    q["q_volatility"] *= SQRT_252
    q["q_max_drawdown"] = drawdown.groupby([df["symbol"], qidx]).min()
    q.index = q.index.set_names(["symbol", "qidx"])

    firsts = df.assign(qidx=qidx).drop_duplicates(["symbol", "qidx"], keep="first")
    lasts = df.assign(qidx=qidx, period=period).drop_duplicates(["symbol", "qidx"], keep="last")
    q["q_open"] = firsts.set_index(["symbol", "qidx"])["_o"]
    lasts = lasts.set_index(["symbol", "qidx"])
    q["q_close"] = lasts["_c"]
    for name in END_FEATURES:
        q[f"{name}_end"] = lasts[name]
    q["period"] = lasts["period"]
    q = q.reset_index()

    prev_close = q.groupby("symbol")["q_close"].shift()
    prev_q = q.groupby("symbol")["qidx"].shift()
    q["q_return"] = (q["q_close"] / prev_close - 1).where(q["qidx"] - prev_q == 1)
    q["q_log_return"] = np.log1p(q["q_return"])

    q["quarter"] = q["period"].astype(str)
    q["quarter_start"] = q["period"].dt.start_time.dt.normalize()
    q["quarter_end"] = q["period"].dt.end_time.dt.normalize()

    # Sessions in the quarter between the symbol's first and last row overall.
    span = df.groupby("symbol", observed=True)["trade_date"].agg(first="min", last="max")
    bounds = q[["symbol"]].join(span, on="symbol")
    lo = q["quarter_start"].where(q["quarter_start"] > bounds["first"], bounds["first"])
    hi = q["quarter_end"].where(q["quarter_end"] < bounds["last"], bounds["last"])
    s = sessions.to_numpy(dtype="datetime64[ns]")
    q["q_expected_days"] = s.searchsorted(
        hi.to_numpy(dtype="datetime64[ns]"), side="right"
    ) - s.searchsorted(lo.to_numpy(dtype="datetime64[ns]"))
    q["q_missing_days"] = q["q_expected_days"] - q["q_trading_days"]
    q["close_to_sma_200_end"] = q["q_close"] / q["sma_200_end"] - 1

    after = s.searchsorted(q["quarter_end"].to_numpy(dtype="datetime64[ns]"), side="right")
    q["available_at"] = s[after]
    last_session = s[after - 1]
    q["q_complete"] = df["trade_date"].max() >= last_session
    q["feature_set_version"] = FEATURE_SET_VERSION

    nxt = q.groupby("symbol")[["qidx", "q_return", "q_complete"]].shift(-1)
    q["label_next_q_return"] = nxt["q_return"].where(
        (nxt["qidx"] - q["qidx"] == 1) & nxt["q_complete"].fillna(False).astype(bool)
    )
    return q[
        [
            "symbol",
            "quarter",
            "quarter_start",
            "quarter_end",
            "q_open",
            "q_high",
            "q_low",
            "q_close",
            "q_return",
            "q_log_return",
            "q_volatility",
            "q_max_drawdown",
            "q_avg_volume",
            "q_dollar_volume",
            "q_trading_days",
            "q_expected_days",
            "q_missing_days",
            *[f"{n}_end" for n in END_FEATURES],
            "close_to_sma_200_end",
            "available_at",
            "q_complete",
            "feature_set_version",
            "label_next_q_return",
        ]
    ]


def health(daily: pd.DataFrame, sessions: pd.DatetimeIndex) -> dict[str, int]:
    """Kept-but-counted conditions of section 4, over the winning source's clean rows."""
    ratio = daily["_c"] / daily["_c"].groupby(daily["symbol"]).shift()
    return {
        "zero_volume": int((daily["volume"] == 0).sum()),
        # Weekends are quarantined already, so "not a session" means a weekday holiday.
        "off_calendar": int((~daily["trade_date"].isin(sessions)).sum()),
        "suspect_jump": int(((ratio > 5) | (ratio < 0.2)).sum()),
    }


# ----------------------------------------------------------------------------- output


def _dates(frame: pd.DataFrame, cols: Iterable[str]) -> pd.DataFrame:
    """Calendar-date columns as Arrow date32 (what the contract's schemas use)."""
    return frame.assign(**{c: frame[c].astype("date32[pyarrow]") for c in cols})


def write_outputs(
    out: Path,
    clean: pd.DataFrame,
    quarantine: pd.DataFrame,
    daily: pd.DataFrame,
    quarterly: pd.DataFrame,
) -> None:
    """Parquet files of the silver and gold layers (zstd, like stockbatch's lake)."""
    (out / "silver").mkdir(parents=True, exist_ok=True)
    (out / "gold").mkdir(parents=True, exist_ok=True)
    silver_cols = [
        "symbol",
        "trade_date",
        *VALUES,
        "source",
        "is_adjusted",
        "superseded",
        "source_file",
        "line_no",
    ]
    silver = clean.sort_values(["symbol", "trade_date", "source"])[silver_cols]
    _dates(silver, ["trade_date"]).to_parquet(
        out / "silver" / "bars.parquet", index=False, compression="zstd"
    )
    quarantine_cols = [
        "symbol",
        "source",
        "source_file",
        "line_no",
        "n_fields",
        "raw_line",
        "date_text",
        *VALUES,
        "reasons",
    ]
    quarantine[quarantine_cols].rename(columns={"date_text": "trade_date"}).to_parquet(
        out / "silver" / "quarantine.parquet", index=False, compression="zstd"
    )
    daily_cols = ["symbol", "trade_date", *VALUES, "source", *DAILY_FEATURE_COLUMNS]
    _dates(daily[daily_cols], ["trade_date"]).to_parquet(
        out / "gold" / "daily_features.parquet", index=False, compression="zstd"
    )
    _dates(quarterly, ["quarter_start", "quarter_end", "available_at"]).to_parquet(
        out / "gold" / "quarterly_features.parquet", index=False, compression="zstd"
    )


def run(paths: list[Path], out: Path, as_of: dt.date) -> dict[str, Any]:
    """The whole peer: read, validate, features, write. Returns the summary."""
    timings: dict[str, float] = {}
    t0 = last = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        timings[name] = round(now - last, 3)
        last = now

    bars, files = read_sources(paths)
    lap("read")
    clean, quarantine, counts = validate(bars, as_of)
    del bars
    lap("validate")
    daily = daily_features(clean)
    lap("daily_features")
    sessions = xnys_sessions(clean["trade_date"].min(), clean["trade_date"].max())
    quarterly = quarterly_features(daily, sessions)
    lap("quarterly_features")
    checks = health(daily, sessions)
    write_outputs(out, clean, quarantine, daily, quarterly)
    lap("write")
    timings["total"] = round(time.perf_counter() - t0, 3)
    summary = {
        "as_of": as_of.isoformat(),
        "paths": [str(p) for p in paths],
        "files": files,
        **counts,
        "health": checks,
        "symbols": int(daily["symbol"].nunique()),
        "daily_rows": len(daily),
        "quarterly_rows": len(quarterly),
        "timings_s": timings,
        "pandas": pd.__version__,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--path",
        type=Path,
        action="append",
        required=True,
        help="dataset folder (repeat for several sources)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--as-of",
        type=dt.date.fromisoformat,
        required=True,
        help="YYYY-MM-DD; later rows are quarantined as future_date",
    )
    args = parser.parse_args(argv)
    s = run(args.path, args.out, args.as_of)
    print(
        f"pandas peer: rows_in={s['rows_in']} rows_clean={s['rows_clean']} "
        f"rows_quarantined={s['rows_quarantined']} rows_deduplicated={s['rows_deduplicated']} "
        f"rows_superseded={s['rows_superseded']} symbols={s['symbols']} "
        f"quarterly_rows={s['quarterly_rows']} in {s['timings_s']['total']:.1f}s"
    )
    print(json.dumps(s["timings_s"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
