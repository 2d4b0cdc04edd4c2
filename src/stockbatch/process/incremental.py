"""The incremental update: apply a :class:`~stockbatch.process.plan.Plan` to the lake.

Two passes. The validation pass rebuilds the silver of the planned buckets and
validates the appended rows alone (one new part per bucket); it decides the
dataset's new last date. The features pass computes the appended symbols'
daily features from their tails (the recursive features carried from their
last row), rebuilds the gold of the planned buckets, and recomputes the
quarters touched (and every symbol's recent quarters when a quarter became
complete). How and why: docs/design/process.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from stockbatch import lake, quality, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.features.catalog import CARRY_COLUMNS
from stockbatch.lake.layout import FIRST_PART, bucket_dir, run_part_name, symbol_bucket
from stockbatch.process.context import StageContext, concat_quarterly, keep_only
from stockbatch.process.full import rebuild_bucket_gold, rebuild_bucket_silver
from stockbatch.process.plan import Plan
from stockbatch.process.state import (
    CONTEXT_ROWS,
    DAILY_SCHEMA,
    DATE,
    SYMBOL,
    SYMBOLS_SCHEMA,
    TAIL_SCHEMA,
    Totals,
    add_counts,
    as_stored,
    by_symbol_date,
    live_symbols,
    merge_symbol_state,
    quarter_start,
    read_symbols,
    read_tail,
    symbol_state,
    tail_dir,
    tail_of,
    total_counts,
    write_symbols,
)

COMPACT_PARTS = 16
"""A bucket folder with more part files than this is rewritten as one file."""

_ALL_QUARTERS = dt.date(1, 1, 1)
"""The ``__cut`` of a rebuilt symbol: every quarter of it is replaced."""


def update(
    ctx: StageContext,
    plan: Plan,
    state: dict[str, Any],
    read_bronze: Callable[[int], pl.DataFrame],
) -> tuple[Totals, dict[str, Any]]:
    """Apply an incremental plan; returns the totals and what was recomputed."""
    validated = _validation_pass(ctx, plan, state, read_bronze)
    old_last = dt.date.fromisoformat(state["dataset_last_date"])
    quarterly, daily_new, refresh = _features_pass(ctx, validated, old_last)
    symbols = validated.symbols
    write_symbols(ctx.settings, symbols)
    daily_rows = int(state.get("daily_rows", 0))
    if validated.rebuild:
        daily_rows = sum(
            pl.scan_parquet(p).select(pl.len()).collect().item()
            for p in lake.parquet_files(ctx.layout.gold_daily)
        )
    else:
        daily_rows += daily_new
    totals = Totals(
        counts=total_counts(validated.bucket_counts),
        bucket_counts=validated.bucket_counts,
        winners=dict(sorted(validated.winners.items())),
        daily_rows=daily_rows,
        quarterly_rows=quarterly.height,
        symbols=live_symbols(symbols),
        dataset_last=validated.dataset_last,
    )
    recomputed = {
        "mode": "incremental",
        "new_rows": int(plan.fresh.height),
        "appended_buckets": validated.append,
        "rebuilt_buckets": validated.rebuild,
        "symbols_appended": int(validated.appended_state.height),
        "symbols_rebuilt": int(validated.rebuilt_state.height),
        "daily_rows_computed": daily_new,
        "quarters_recomputed_from": refresh.isoformat() if refresh else None,
    }
    return totals, recomputed


# ----------------------------------------------------------------------------- pass 1


@dataclass
class _Validated:
    """What the validation pass leaves for the features pass."""

    rebuild: list[int]
    """Buckets validated and computed again in full."""
    append: list[int]
    """Buckets with new rows to append."""
    part: str
    """File name of the parts this run appends."""
    bucket_counts: dict[str, dict[str, Any]]
    winners: dict[str, str]
    symbols: pl.DataFrame
    """The symbol state after this run."""
    new_state: list[pl.DataFrame] = field(default_factory=list)
    """The symbol state of each bucket validated this run (whole, or the new rows')."""
    live: dict[int, pl.DataFrame] = field(default_factory=dict)
    """Per appended bucket: its new clean, non-superseded rows."""
    tails: dict[int, pl.DataFrame] = field(default_factory=dict)
    """Per appended bucket with such rows: its stored tail."""
    rebuilt_state: pl.DataFrame = field(default_factory=pl.DataFrame)
    """The symbol state of the rebuilt buckets."""
    appended_state: pl.DataFrame = field(default_factory=pl.DataFrame)
    """The symbol state of the appended rows alone."""
    prior: pl.DataFrame = field(default_factory=pl.DataFrame)
    """The stored state of the appended symbols, before this run."""
    dataset_last: dt.date = dt.date.min
    """The dataset's last date after this run (set with the symbol state)."""


def _validation_pass(
    ctx: StageContext,
    plan: Plan,
    state: dict[str, Any],
    read_bronze: Callable[[int], pl.DataFrame],
) -> _Validated:
    """Silver of the rebuilt buckets and of the appended rows; the new symbol state."""
    v = _Validated(
        rebuild=sorted(plan.rebuild),
        append=plan.append_buckets,
        part=run_part_name(ctx.run_id),
        bucket_counts=dict(state["bucket_counts"].items()),
        winners=dict(state.get("winners", {})),
        symbols=read_symbols(ctx.settings),
    )
    task = ctx.progress("validate", len(v.rebuild) + len(v.append))
    try:
        for b in v.rebuild:
            _revalidate_bucket(ctx, v, b, read_bronze(b))
            task.advance()
        validated = (
            ctx.engine.validate_buckets(
                plan.fresh.filter(pl.col("bucket").is_in(v.append)),
                as_of=ctx.as_of,
                calendar=ctx.calendar,
                priority=ctx.settings.process.source_priority,
            )
            if v.append
            else {}
        )
        for b in v.append:
            _append_silver(ctx, v, b, validated[b])
            task.advance()
    finally:
        task.close()
    _fold_symbol_state(ctx, v)
    return v


def _revalidate_bucket(ctx: StageContext, v: _Validated, b: int, bronze: pl.DataFrame) -> None:
    """Silver of bucket ``b`` from all its bronze rows; its counts and winners replaced."""
    res, st = rebuild_bucket_silver(ctx, b, bronze)
    v.bucket_counts[str(b)] = as_stored(res.counts)
    v.winners = {s: w for s, w in v.winners.items() if symbol_bucket(s, ctx.buckets) != b}
    v.winners.update(res.winners)
    v.symbols = v.symbols.filter(pl.col("bucket") != b)
    v.new_state.append(st)


def _append_silver(ctx: StageContext, v: _Validated, b: int, res: quality.ValidationResult) -> None:
    """One new silver part per layer for bucket ``b``'s validated new rows."""
    live = res.clean.filter(~pl.col("superseded"))
    counts = res.counts
    if live.height:
        v.tails[b] = read_tail(ctx.settings, b)
        counts["health"]["suspect_jump"] += _boundary_jumps(v.tails[b], live)
    layout = ctx.layout
    for root, frame, target in (
        (layout.silver_bars, res.clean, schema.SILVER_BARS),
        (layout.quarantine, res.quarantine, schema.QUARANTINE),
    ):
        if frame.height:
            ctx.write(frame, target, bucket_dir(root, b) / v.part)
    merged = dict(v.bucket_counts.get(str(b), {}))
    add_counts(merged, as_stored(counts))
    v.bucket_counts[str(b)] = merged
    for s, w in res.winners.items():
        v.winners.setdefault(s, w)
    v.new_state.append(symbol_state(res, b))
    v.live[b] = live


def _fold_symbol_state(ctx: StageContext, v: _Validated) -> None:
    """The symbol state after this run, and the dataset's new last date."""
    touched = pl.concat(v.new_state) if v.new_state else pl.DataFrame(schema=SYMBOLS_SCHEMA)
    v.rebuilt_state = touched.filter(pl.col("bucket").is_in(v.rebuild))
    v.appended_state = touched.filter(~pl.col("bucket").is_in(v.rebuild))
    appended = pl.col(SYMBOL).is_in(v.appended_state[SYMBOL].implode())
    v.prior = v.symbols.filter(appended)
    merged = (
        merge_symbol_state(v.prior, v.appended_state)
        if v.appended_state.height
        else v.appended_state
    )
    v.symbols = pl.concat([v.symbols.filter(~appended), v.rebuilt_state, merged]).sort(SYMBOL)
    last_value = v.symbols["last_date"].max()
    v.dataset_last = last_value if isinstance(last_value, dt.date) else ctx.as_of


def _adj_close() -> pl.Expr:
    close = pl.col("close")
    return close * pl.coalesce(pl.col("adj_close") / close, pl.lit(1.0))


def _boundary_jumps(tail: pl.DataFrame, new_live: pl.DataFrame) -> int:
    """suspect_jump pairs between a symbol's last stored row and its first new row.

    Both frames hold each symbol's rows in date order (tail parts are appended in
    time order; validated rows are sorted).
    """
    prev = tail.group_by(SYMBOL).agg(_adj_close().last().alias("prev"))
    first = new_live.group_by(SYMBOL).agg(_adj_close().first().alias("c"))
    f = quality.JUMP_FACTOR
    j = first.join(prev, on=SYMBOL).filter(
        (pl.col("c") > pl.col("prev") * f) | (pl.col("c") * f < pl.col("prev"))
    )
    return j.height


# ----------------------------------------------------------------------------- pass 2


@dataclass
class _Quarters:
    """Quarterly rows recomputed this run, and from which quarter on each symbol's
    stored rows they replace (``__cut``, a quarter start)."""

    cuts: list[pl.DataFrame] = field(default_factory=list)
    rows: list[pl.DataFrame] = field(default_factory=list)


def _features_pass(
    ctx: StageContext, v: _Validated, old_last: dt.date
) -> tuple[pl.DataFrame, int, dt.date | None]:
    """Gold of the rebuilt buckets and of the appended rows, and the quarterly table.
    Returns the quarterly table, the daily rows computed and the completion refresh."""
    quarterly = ctx.read_quarterly()
    quarters = _Quarters()
    daily_new = 0
    task = ctx.progress("features", len(v.rebuild) + len(v.append))
    try:
        for b in v.rebuild:
            daily = rebuild_bucket_gold(ctx, b, ctx.live_bars(b))
            daily_new += daily.height
            rebuilt = v.rebuilt_state.filter(pl.col("bucket") == b).select(SYMBOL)
            quarters.cuts.append(rebuilt.with_columns(pl.lit(_ALL_QUARTERS).alias("__cut")))
            if daily.height:
                quarters.rows.append(ctx.engine.quarterly(daily, ctx.calendar, v.dataset_last))
            task.advance()
        daily_new += _append_daily(ctx, v, quarters, task.advance)
    finally:
        task.close()
    refresh = completion_refresh(ctx.calendar, old_last, v.dataset_last)
    if refresh is not None:
        _refresh_recent_quarters(ctx, v, quarters, refresh)
    if quarters.cuts:
        quarterly = _replace_quarters(quarterly, quarters)
        ctx.write_quarterly(quarterly)
    return quarterly, daily_new, refresh


def _append_daily(
    ctx: StageContext, v: _Validated, quarters: _Quarters, advance: Callable[[], None]
) -> int:
    """Daily features of the appended rows, from each symbol's tail; writes one gold and
    one tail part per bucket. Returns the daily rows computed."""
    # The appended symbols of all buckets in one engine call each (the work is
    # per symbol; one call saves the per-call overhead of eight small ones).
    lives = [v.live[b].with_columns(pl.lit(b, pl.Int32).alias("__b")) for b in v.append]
    live = pl.concat(lives) if lives else pl.DataFrame()
    if not live.height:
        return 0
    mine = live[SYMBOL].unique().implode()
    tail = pl.concat(list(v.tails.values())).filter(pl.col(SYMBOL).is_in(mine))
    ctx_rows = tail.filter(pl.int_range(pl.len()).reverse().over(SYMBOL) < CONTEXT_ROWS)
    held = ctx_rows.group_by(SYMBOL).agg(
        pl.len().alias("__held"), pl.col(DATE).max().alias("__prev")
    )
    daily = _daily_after_tail(ctx, v, live, ctx_rows, held)
    for b in v.tails:
        mine_b = daily.filter(pl.col("__b") == b)
        ctx.write(mine_b, schema.DAILY_FEATURES, bucket_dir(ctx.layout.gold_daily, b) / v.part)
        lake.write_parquet_atomic(
            mine_b.select(TAIL_SCHEMA.names()),
            tail_dir(ctx.settings, b) / v.part,
            ctx.compression,
        )
        _compact(ctx, b)
        advance()
    cuts = daily.group_by(SYMBOL).agg(
        quarter_start(pl.col(DATE).min()).dt.offset_by("-3mo").alias("__cut")
    )
    quarters.cuts.append(cuts)
    rows = pl.concat([tail, daily.select(TAIL_SCHEMA.names())])
    quarters.rows.append(_quarterly_from(ctx, rows, cuts, v.dataset_last))
    return daily.height


def _daily_after_tail(
    ctx: StageContext,
    v: _Validated,
    live: pl.DataFrame,
    ctx_rows: pl.DataFrame,
    held: pl.DataFrame,
) -> pl.DataFrame:
    """The new rows' daily features (with state, and ``__b``: their bucket): computed over
    each symbol's context rows and new rows, the recursions carried from its last row."""
    counts_now = v.prior.select(SYMBOL, "n_rows").join(held, on=SYMBOL, how="inner")
    # A symbol whose whole history is in its tail is simply recomputed.
    carried = counts_now.filter(pl.col("n_rows") > pl.col("__held"))[SYMBOL].implode()
    carry = (
        ctx_rows.filter(pl.col(SYMBOL).is_in(carried))
        .group_by(SYMBOL)
        .agg(pl.all().sort_by(DATE).last())
        .select(SYMBOL, DATE, *CARRY_COLUMNS)
    )
    bars = pl.concat(
        [
            ctx_rows.select(schema.DAILY_BAR_COLUMNS),
            live.select(schema.DAILY_BAR_COLUMNS).cast(
                {c: DAILY_SCHEMA[c] for c in schema.DAILY_BAR_COLUMNS}
            ),
        ]
    )
    daily = ctx.engine.daily(bars, carry if carry.height else None, with_state=True)
    owner = live.select(SYMBOL, "__b").unique(SYMBOL)
    return (
        daily.join(held.select(SYMBOL, "__prev"), on=SYMBOL, how="left")
        .filter(pl.col("__prev").is_null() | (pl.col(DATE) > pl.col("__prev")))
        .drop("__prev")
        .join(owner, on=SYMBOL, how="left")
    )


def _refresh_recent_quarters(
    ctx: StageContext, v: _Validated, quarters: _Quarters, refresh: dt.date
) -> None:
    """Quarters became (or stopped being) complete: every symbol's quarters from
    ``refresh`` on, from the tails (the rebuilt buckets are already recomputed)."""
    done = set(v.rebuild)
    for b in range(ctx.buckets):
        if b in done:
            continue
        tail = read_tail(ctx.settings, b)
        if tail.is_empty():
            continue
        cuts = tail.select(SYMBOL).unique().with_columns(pl.lit(refresh).alias("__cut"))
        quarters.cuts.append(cuts)
        quarters.rows.append(_quarterly_from(ctx, tail, cuts, v.dataset_last))


def _replace_quarters(quarterly: pl.DataFrame, quarters: _Quarters) -> pl.DataFrame:
    """The stored quarterly table with each symbol's quarters from its cut on replaced."""
    cuts_all = pl.concat(quarters.cuts).group_by(SYMBOL).agg(pl.col("__cut").min())
    keep = (
        quarterly.join(cuts_all, on=SYMBOL, how="left")
        .filter(pl.col("__cut").is_null() | (pl.col("quarter_start") < pl.col("__cut")))
        .drop("__cut")
    )
    # A symbol may be recomputed twice (appended to, and in a completion refresh);
    # both come from the same tail and last date, so either copy will do.
    fresh_q = concat_quarterly([q for q in quarters.rows if q.height]).unique(
        subset=[SYMBOL, "quarter"], keep="last", maintain_order=True
    )
    fresh_q = (
        fresh_q.join(cuts_all, on=SYMBOL, how="inner")
        .filter(pl.col("quarter_start") >= pl.col("__cut"))
        .drop("__cut")
    )
    quarterly = pl.concat([keep, fresh_q.select(keep.columns).cast(keep.schema)])
    return quarterly.sort(SYMBOL, "quarter")


def _quarterly_from(
    ctx: StageContext, rows: pl.DataFrame, cuts: pl.DataFrame, dataset_last: dt.date
) -> pl.DataFrame:
    """Quarterly rows of each symbol from its cut quarter (``__cut``, a quarter start) on.

    ``rows``: the symbol's daily rows in date order, from before the cut. Fed to the
    engine: the rows from the cut on, plus the last row before it (the previous
    quarter's close, for q_return; the quarter it lands in is dropped again).
    """
    if cuts.is_empty():
        return concat_quarterly([])
    mine = rows.join(cuts, on=SYMBOL, how="inner")
    before = mine.filter(pl.col(DATE) < pl.col("__cut")).group_by(SYMBOL).tail(1)
    feed = pl.concat([before, mine.filter(pl.col(DATE) >= pl.col("__cut"))])
    if feed.is_empty():
        return concat_quarterly([])
    q = ctx.engine.quarterly(
        by_symbol_date(feed.select(DAILY_SCHEMA.names())), ctx.calendar, dataset_last
    )
    return (
        q.join(cuts, on=SYMBOL, how="inner")
        .filter(pl.col("quarter_start") >= pl.col("__cut"))
        .drop("__cut")
    )


def completion_refresh(
    calendar: SessionCalendar, old_last: dt.date, new_last: dt.date
) -> dt.date | None:
    """When some quarter's completeness differs between the two last dates: the start of
    the quarter before the earliest such quarter (its label changes too); else None."""
    lo, hi = sorted((old_last, new_last))
    if lo == hi:
        return None
    q_start = dt.date(lo.year, 3 * ((lo.month - 1) // 3) + 1, 1)
    while q_start <= hi:
        nxt = _add_months(q_start, 3)
        last_session = calendar.last_session_on_or_before(nxt - dt.timedelta(days=1))
        if lo < last_session <= hi:
            return _add_months(q_start, -3)
        q_start = nxt
    return None


def _add_months(d: dt.date, months: int) -> dt.date:
    m = d.year * 12 + d.month - 1 + months
    return dt.date(m // 12, m % 12 + 1, d.day)


def _compact(ctx: StageContext, b: int) -> None:
    """Rewrite a bucket's parts as one file once they are many (keeps reads fast)."""
    layout = ctx.layout
    for root, target in (
        (layout.silver_bars, schema.SILVER_BARS),
        (layout.quarantine, schema.QUARANTINE),
        (layout.gold_daily, schema.DAILY_FEATURES),
    ):
        folder = bucket_dir(root, b)
        parts = lake.parquet_files(folder)
        if len(parts) <= COMPACT_PARTS:
            continue
        frame = pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")
        if target is not schema.QUARANTINE:
            by_source = ["source"] if target is schema.SILVER_BARS else []
            frame = frame.sort(SYMBOL, DATE, *by_source)
        keep_only(folder, ctx.write(frame, target, folder / FIRST_PART))
    folder = tail_dir(ctx.settings, b)
    if len(lake.parquet_files(folder)) > COMPACT_PARTS:
        keep = folder / FIRST_PART
        tail = tail_of(by_symbol_date(read_tail(ctx.settings, b)))
        lake.write_parquet_atomic(tail, keep, ctx.compression)
        keep_only(folder, keep)
