"""The full rebuild: every active bronze row validated and every feature computed again.

The Polars engine goes bucket by bucket (validation of every bucket first: it
decides the dataset's last date, which the quarterly labels need); the Spark
engine runs the whole-lake job (:mod:`stockbatch.process.spark_job`). Both
leave the state an incremental update starts from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from stockbatch import lake, quality, schema
from stockbatch.lake.layout import FIRST_PART, bucket_dir, bucket_of_dir, symbol_bucket
from stockbatch.process.context import StageContext, concat_quarterly, keep_only
from stockbatch.process.engines import SparkEngine
from stockbatch.process.state import (
    DATE,
    SYMBOL,
    SYMBOLS_SCHEMA,
    Totals,
    live_symbols,
    symbol_state,
    tail_dir,
    tail_of,
    total_counts,
    write_symbols,
)


def full_rebuild(
    ctx: StageContext,
    parts: pl.DataFrame,
    bronze_files: list[Path],
    read_bronze: Callable[[int], pl.DataFrame],
) -> tuple[Totals, dict[str, Any]]:
    """Rebuild silver, gold and the update state; returns the totals and what was
    recomputed (``parts``: the active bronze parts; ``read_bronze``: one bucket's rows)."""
    if isinstance(ctx.engine, SparkEngine):
        totals = _with_spark_job(ctx, ctx.engine, parts, bronze_files)
    else:
        totals = _bucket_by_bucket(ctx, read_bronze)
    return totals, {"mode": "full", "buckets": list(range(ctx.buckets))}


def rebuild_bucket_silver(
    ctx: StageContext, b: int, bronze: pl.DataFrame
) -> tuple[quality.ValidationResult, pl.DataFrame]:
    """Validate every active row of bucket ``b``; write its silver as one part per layer.
    Returns the validation and the bucket's symbol state."""
    res = ctx.validate(bronze)
    ctx.replace_bucket(res.clean, schema.SILVER_BARS, ctx.layout.silver_bars, b)
    ctx.replace_bucket(res.quarantine, schema.QUARANTINE, ctx.layout.quarantine, b)
    return res, symbol_state(res, b)


def rebuild_bucket_gold(ctx: StageContext, b: int, bars: pl.DataFrame) -> pl.DataFrame:
    """Daily features of every symbol of bucket ``b``; writes gold and the tail (as the
    bucket's only tail part: the parts of earlier updates hold rows it already has)."""
    daily = ctx.engine.daily(bars, with_state=True)
    ctx.replace_bucket(daily, schema.DAILY_FEATURES, ctx.layout.gold_daily, b)
    tail_path = tail_dir(ctx.settings, b) / FIRST_PART
    lake.write_parquet_atomic(tail_of(daily), tail_path, ctx.compression)
    keep_only(tail_path.parent, tail_path)
    return daily


def _bucket_by_bucket(ctx: StageContext, read_bronze: Callable[[int], pl.DataFrame]) -> Totals:
    buckets = ctx.buckets
    bucket_counts: dict[str, dict[str, Any]] = {}
    winners: dict[str, str] = {}
    states: list[pl.DataFrame] = []
    task = ctx.progress("validate", buckets)
    try:
        for b in range(buckets):
            res, state = rebuild_bucket_silver(ctx, b, read_bronze(b))
            bucket_counts[str(b)] = res.counts
            winners.update(res.winners)
            states.append(state)
            task.advance()
    finally:
        task.close()
    symbols = pl.concat(states) if states else pl.DataFrame(schema=SYMBOLS_SCHEMA)
    dataset_last = symbols["last_date"].max()
    last = dataset_last if isinstance(dataset_last, dt.date) else ctx.as_of
    quarterly_parts: list[pl.DataFrame] = []
    daily_rows = 0
    task = ctx.progress("features", buckets)
    try:
        for b in range(buckets):
            daily = rebuild_bucket_gold(ctx, b, ctx.live_bars(b))
            daily_rows += daily.height
            if daily.height:
                quarterly_parts.append(ctx.engine.quarterly(daily, ctx.calendar, last))
            task.advance()
    finally:
        task.close()
    _drop_buckets_beyond(ctx, buckets)
    quarterly = concat_quarterly(quarterly_parts)
    ctx.write_quarterly(quarterly)
    write_symbols(ctx.settings, symbols.sort(SYMBOL))
    return Totals(
        counts=total_counts(bucket_counts),
        bucket_counts=bucket_counts,
        winners=dict(sorted(winners.items())),
        daily_rows=daily_rows,
        quarterly_rows=quarterly.height,
        symbols=live_symbols(symbols),
        dataset_last=last,
    )


def _drop_buckets_beyond(ctx: StageContext, buckets: int) -> None:
    """Drop bucket folders' files beyond ``buckets`` (left by a run with more buckets)."""
    layout = ctx.layout
    for root in (layout.silver_bars, layout.quarantine, layout.gold_daily, layout.tails):
        for p in lake.parquet_files(root):
            b = bucket_of_dir(p.parent)
            if b is not None and b >= buckets:
                p.unlink()


def _with_spark_job(
    ctx: StageContext, engine: SparkEngine, parts: pl.DataFrame, bronze_files: list[Path]
) -> Totals:
    """The whole lake as one Spark application, then the symbol state from its output."""
    from stockbatch.process.spark_job import process_lake

    settings = ctx.settings
    layout = ctx.layout
    totals = process_lake(
        engine.spark,
        layout,
        bronze_files=[str(p) for p in bronze_files],
        active_keys=[(r, b) for r, b in parts.select("ref", "batch").iter_rows()],
        as_of=ctx.as_of,
        calendar=ctx.calendar,
        source_priority=settings.process.source_priority,
        buckets=ctx.buckets,
        compression=ctx.compression,
        with_tails=True,
    )
    states = []
    for b in range(ctx.buckets):
        clean = pl.read_parquet(
            bucket_dir(layout.silver_bars, b) / FIRST_PART, columns=[SYMBOL, DATE, "superseded"]
        )
        quarantine = pl.read_parquet(
            bucket_dir(layout.quarantine, b) / FIRST_PART, columns=[SYMBOL, DATE, "reasons"]
        )
        mine = {s: w for s, w in totals.winners.items() if symbol_bucket(s, ctx.buckets) == b}
        validated = quality.ValidationResult(
            clean=clean, quarantine=quarantine, counts={}, winners=mine
        )
        states.append(symbol_state(validated, b))
    symbols = pl.concat(states).sort(SYMBOL)
    write_symbols(settings, symbols)
    return replace(
        totals, winners=dict(sorted(totals.winners.items())), symbols=live_symbols(symbols)
    )
