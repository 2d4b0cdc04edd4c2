"""What an incremental update starts from, and what the stage records of each run.

Under ``lake/_state/`` (paths from :class:`stockbatch.lake.LakeLayout`): the
tails (each symbol's last gold rows with the recursive features' state) and
the symbol state (per symbol: bucket, winning source, newest dates, row
count). In ``gold/_state.json``: the fingerprints, the units and files
processed, the per-bucket counts and the :class:`Totals`. Why each piece is
kept: docs/design/process.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from stockbatch import __version__, lake, quality, schema
from stockbatch.features.catalog import STATE_COLUMNS, lookback_rows
from stockbatch.lake.layout import bucket_dir
from stockbatch.settings import Settings

SYMBOL = "symbol"
DATE = "trade_date"

CONTEXT_ROWS = lookback_rows() + 1
"""Rows of a symbol an update reads before its first new row (the carry row included)."""

SYMBOLS_SCHEMA = pl.Schema(
    {
        SYMBOL: pl.String,
        "bucket": pl.Int32,
        "winner": pl.String,
        "last_seen": pl.Date,
        "future_min": pl.Date,
        "last_date": pl.Date,
        "n_rows": pl.Int64,
    }
)
"""The symbol state: per symbol its bucket, winning source, newest date of any of its
rows, oldest quarantined ``future_date``, newest clean date and clean row count."""

DAILY_SCHEMA = lake.polars_schema(schema.DAILY_FEATURES)
TAIL_SCHEMA = pl.Schema([*DAILY_SCHEMA.items(), *((c, pl.Float64()) for c in STATE_COLUMNS)])
"""Columns of the tail store: gold daily plus the unpublished carried state."""


@dataclass
class Totals:
    """What the processed lake holds after a run: the figures the state records and the
    stage's :class:`stockbatch.results.ProcessResult` reports."""

    counts: dict[str, Any]
    """The validation counts of the whole lake."""
    bucket_counts: dict[str, dict[str, Any]]
    """The counts of each bucket alone (what an incremental update adds to)."""
    winners: dict[str, str]
    daily_rows: int
    quarterly_rows: int
    symbols: int
    dataset_last: dt.date


# ----------------------------------------------------------------------------- fingerprints


def _config_payload(settings: Settings) -> dict[str, Any]:
    """Every setting and version that decides the stage's output for given bronze rows."""
    return {
        "feature_set_version": schema.FEATURE_SET_VERSION,
        "code_version": __version__,
        "source_priority": settings.process.source_priority,
        "buckets": settings.lake.buckets,
        "calendar": settings.process.calendar,
    }


def _sha256(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()


def process_fingerprint(settings: Settings, as_of: dt.date, active: pl.DataFrame) -> str:
    """Hash of everything that decides the silver and gold content: the active bronze
    units, the as-of date, the configuration and the engine (equal: nothing to do)."""
    units = active.select(["source", "ref", "sha256", "batch"]).rows() if len(active) else []
    return _sha256(
        {
            "units": units,
            "as_of": as_of.isoformat(),
            **_config_payload(settings),
            "engine": settings.process.engine,
        }
    )


def config_fingerprint(settings: Settings) -> str:
    """Hash of the configuration an update's state depends on (any engine may continue
    it; the context size is part of the tails' shape)."""
    return _sha256({**_config_payload(settings), "context_rows": CONTEXT_ROWS})


# ----------------------------------------------------------------------------- units and files


def unit_key(source: str, ref: str) -> str:
    """Key of a bronze unit in the state's ``units`` record."""
    return f"{source}\x1f{ref}"


def units_record(active: pl.DataFrame) -> dict[str, list[str]]:
    """The processed units, as stored in the state: key -> [sha256, batch]."""
    return {
        unit_key(r["source"], r["ref"]): [r["sha256"], r["batch"]]
        for r in active.iter_rows(named=True)
    }


def snapshot(settings: Settings) -> dict[str, list[int]]:
    """(size, mtime_ns) of every file the stage wrote, by path relative to the lake."""
    layout = lake.layout(settings)
    out: dict[str, list[int]] = {}
    for root in layout.processed_roots():
        for p in lake.parquet_files(root):
            st = p.stat()
            out[layout.relative(p)] = [st.st_size, st.st_mtime_ns]
    return out


# ----------------------------------------------------------------------------- tails


def tail_dir(settings: Settings, bucket: int) -> Path:
    """The folder of one bucket's tail parts."""
    return bucket_dir(lake.layout(settings).tails, bucket)


def read_tail(settings: Settings, bucket: int) -> pl.DataFrame:
    """One bucket's tail rows: its base part, then the parts updates appended."""
    parts = lake.parquet_files(tail_dir(settings, bucket))
    if not parts:
        return pl.DataFrame(schema=TAIL_SCHEMA)
    return pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")


def quarter_start(d: pl.Expr) -> pl.Expr:
    """The first day of the date's calendar quarter."""
    return d.dt.truncate("1q")


def tail_of(daily: pl.DataFrame) -> pl.DataFrame:
    """The rows an update needs of each symbol (``daily`` sorted by symbol, date): at least
    :data:`CONTEXT_ROWS`, and every row since the start of the quarter two before its last."""
    last = pl.col(DATE).max().over(SYMBOL)
    cut = quarter_start(last).dt.offset_by("-6mo")
    from_end = pl.int_range(pl.len()).reverse().over(SYMBOL)
    return daily.filter((from_end < CONTEXT_ROWS) | (pl.col(DATE) >= cut)).select(
        TAIL_SCHEMA.names()
    )


def by_symbol_date(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` sorted by (symbol, trade_date)."""
    return df.sort(SYMBOL, DATE)


# ----------------------------------------------------------------------------- symbol state


def read_symbols(settings: Settings) -> pl.DataFrame:
    """The stored symbol state."""
    return pl.read_parquet(lake.layout(settings).symbols)


def write_symbols(settings: Settings, symbols: pl.DataFrame) -> None:
    """Replace the stored symbol state."""
    lake.write_parquet_atomic(symbols, lake.layout(settings).symbols)


def symbol_state(res: quality.ValidationResult, bucket: int) -> pl.DataFrame:
    """Per symbol of one validated bucket: what the next update must know."""
    clean = res.clean.select(SYMBOL, pl.col(DATE).alias("d"), "superseded")
    q = res.quarantine.filter(pl.col(SYMBOL).is_not_null()).select(
        SYMBOL,
        pl.col(DATE).str.to_date(quality.DATE_FORMAT, strict=False).alias("d"),
        pl.col("reasons").list.contains("future_date").alias("future"),
    )
    seen = pl.concat([clean.select(SYMBOL, "d"), q.select(SYMBOL, "d")])
    out = seen.group_by(SYMBOL).agg(pl.col("d").max().alias("last_seen"))
    fut = q.filter("future").group_by(SYMBOL).agg(pl.col("d").min().alias("future_min"))
    live = (
        clean.filter(~pl.col("superseded"))
        .group_by(SYMBOL)
        .agg(pl.col("d").max().alias("last_date"), pl.len().cast(pl.Int64).alias("n_rows"))
    )
    win = pl.DataFrame(
        {SYMBOL: list(res.winners), "winner": list(res.winners.values())},
        schema={SYMBOL: pl.String, "winner": pl.String},
    )
    return (
        out.join(fut, on=SYMBOL, how="left")
        .join(live, on=SYMBOL, how="left")
        .join(win, on=SYMBOL, how="left")
        .with_columns(pl.lit(bucket, pl.Int32).alias("bucket"), pl.col("n_rows").fill_null(0))
        .select(SYMBOLS_SCHEMA.names())
        .cast(dict(SYMBOLS_SCHEMA))  # type: ignore[arg-type]
    )


def merge_symbol_state(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Fold the state of newly appended rows into the stored state of their symbols."""
    both = pl.concat([old, new])
    return (
        both.group_by(SYMBOL, maintain_order=True)
        .agg(
            pl.col("bucket").first(),
            pl.col("winner").drop_nulls().first(),
            pl.col("last_seen").max(),
            pl.col("future_min").min(),
            pl.col("last_date").max(),
            pl.col("n_rows").sum(),
        )
        .select(SYMBOLS_SCHEMA.names())
    )


def live_symbols(symbols: pl.DataFrame) -> int:
    """Symbols with at least one clean, non-superseded row."""
    return int((symbols["n_rows"] > 0).sum())


# ----------------------------------------------------------------------------- counts


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> None:
    """Add one counts dict into another, key by key (None stays None)."""
    for key, value in part.items():
        if isinstance(value, dict):
            add_counts(total.setdefault(key, {}), value)
        elif value is None or total.get(key, 0) is None:
            total[key] = None
        else:
            total[key] = total.get(key, 0) + value


def as_stored(counts: dict[str, Any]) -> dict[str, Any]:
    """Counts as they read back from JSON (a None file name becomes "null")."""
    loaded: dict[str, Any] = json.loads(json.dumps(counts))
    return loaded


def total_counts(bucket_counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sum of per-bucket counts, in bucket order."""
    total: dict[str, Any] = {}
    for b in sorted(bucket_counts, key=int):
        add_counts(total, bucket_counts[b])
    if "per_file" in total:
        total["per_file"] = dict(sorted(total["per_file"].items()))
    return total
