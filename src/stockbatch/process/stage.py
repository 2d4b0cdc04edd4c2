"""The process stage's entry point: bronze -> silver -> gold, incremental or full.

:func:`process` skips a run whose inputs are unchanged (same fingerprint), else
plans an incremental update (:mod:`.plan`, :mod:`.incremental`) or rebuilds in
full (:mod:`.full`), then records what it did in ``gold/_state.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from stockbatch import lake, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.errors import PipelineError
from stockbatch.lake import bronze, gold
from stockbatch.process import engines
from stockbatch.process.context import StageContext
from stockbatch.process.full import full_rebuild
from stockbatch.process.incremental import update
from stockbatch.process.plan import Plan, plan_update
from stockbatch.process.state import (
    Totals,
    config_fingerprint,
    process_fingerprint,
    snapshot,
    units_record,
)
from stockbatch.quality.rules import EARLIEST_DATE
from stockbatch.results import ProcessResult, Progress, new_run_id, no_progress, today_utc
from stockbatch.settings import Settings

__all__ = ["process", "process_fingerprint"]


def process(
    settings: Settings,
    *,
    run_id: str | None = None,
    as_of: dt.date | None = None,
    force: bool = False,
    full: bool = False,
    progress: Progress = no_progress,
) -> ProcessResult:
    """Validate bronze into silver and compute gold features.

    Incremental by default: only what new bronze rows affect is recomputed;
    ``full`` (or ``force``) rebuilds everything.
    """
    started = time.perf_counter()
    run_id = run_id or new_run_id()
    as_of = as_of or today_utc()
    active = bronze.active_units(settings)
    if active.is_empty():
        raise PipelineError(
            "nothing to process: the lake has no ingested data yet. "
            "Run `stockbatch ingest --source kaggle --path DIR` first."
        )
    fingerprint = process_fingerprint(settings, as_of, active)
    state = gold.process_state(settings)
    if not (force or full) and state.get("fingerprint") == fingerprint:
        return ProcessResult(
            run_id=run_id,
            skipped=True,
            fingerprint=fingerprint,
            counts=state["counts"],
            as_of=as_of,
            daily_rows=state.get("daily_rows", 0),
            quarterly_rows=state.get("quarterly_rows", 0),
            symbols=state.get("symbols", 0),
            reused_from=state.get("run_id"),
            winners=state.get("winners", {}),
            duration_s=time.perf_counter() - started,
        )

    ctx = StageContext(
        settings=settings,
        engine=engines.for_settings(settings),
        run_id=run_id,
        as_of=as_of,
        # From the first date a clean row may have: the calendar covers any clean data.
        calendar=SessionCalendar(
            settings.process.calendar, start=EARLIEST_DATE, end=as_of + dt.timedelta(days=400)
        ),
        progress=progress,
    )
    parts = bronze.active_parts(settings)
    batches = bronze.whole_batches(settings, parts)
    bronze_files = lake.parquet_files(ctx.layout.bronze_bars)
    totals, recomputed = _recompute(
        ctx,
        state=state,
        active=active,
        parts=parts,
        bronze_files=bronze_files,
        read_bronze=lambda b: bronze.read_bucket(settings, b, parts, batches),
        full=force or full,
    )
    _check_reconciles(totals.counts)
    result = ProcessResult(
        run_id=run_id,
        skipped=False,
        fingerprint=fingerprint,
        counts=totals.counts,
        as_of=as_of,
        daily_rows=totals.daily_rows,
        quarterly_rows=totals.quarterly_rows,
        symbols=totals.symbols,
        winners=totals.winners,
        duration_s=time.perf_counter() - started,
        recomputed=recomputed,
    )
    _record(ctx, state, fingerprint, active, bronze_files, totals, recomputed)
    return result


def _recompute(
    ctx: StageContext,
    *,
    state: dict[str, Any],
    active: pl.DataFrame,
    parts: pl.DataFrame,
    bronze_files: list[Path],
    read_bronze: Callable[[int], pl.DataFrame],
    full: bool,
) -> tuple[Totals, dict[str, Any]]:
    """Full rebuild or incremental update; returns the totals and what was recomputed."""
    started = time.perf_counter()
    plan = (
        Plan(full_reason="asked for a full rebuild")
        if full
        else plan_update(ctx.settings, state, active, parts, ctx.as_of, bronze_files)
    )
    if plan.full_reason is not None:
        totals, recomputed = full_rebuild(ctx, parts, bronze_files, read_bronze)
        recomputed["reason"] = plan.full_reason
    else:
        totals, recomputed = update(ctx, plan, state, read_bronze)
    recomputed["seconds"] = round(time.perf_counter() - started, 3)
    return totals, recomputed


def _record(
    ctx: StageContext,
    state: dict[str, Any],
    fingerprint: str,
    active: pl.DataFrame,
    bronze_files: list[Path],
    totals: Totals,
    recomputed: dict[str, Any],
) -> None:
    """Write ``gold/_state.json``: this run's figures and what the next update starts from."""
    settings, layout = ctx.settings, ctx.layout
    old_sums = state.get("gold_checksums", {}) if recomputed["mode"] != "full" else {}
    old_files = state.get("files", {})
    files = snapshot(settings)
    state_doc = {
        "incremental": True,
        "config": config_fingerprint(settings),
        "feature_set_version": schema.FEATURE_SET_VERSION,
        "units": units_record(active),
        "bronze_files": [layout.relative(p) for p in bronze_files],
        "bucket_counts": totals.bucket_counts,
        "recomputed": recomputed,
        "fingerprint": fingerprint,
        "run_id": ctx.run_id,
        "counts": totals.counts,
        "daily_rows": totals.daily_rows,
        "quarterly_rows": totals.quarterly_rows,
        "symbols": totals.symbols,
        "winners": totals.winners,
        "as_of": ctx.as_of.isoformat(),
        "dataset_last_date": totals.dataset_last.isoformat(),
        "engine": ctx.engine.name,
        "gold_checksums": gold.gold_checksums(settings, reuse=old_sums, old=old_files, now=files),
        "files": files,
    }
    lake.atomic_write_bytes(
        layout.process_state, json.dumps(state_doc, indent=2, sort_keys=True).encode()
    )


def _check_reconciles(counts: dict[str, Any]) -> None:
    rows_in = counts.get("rows_in", 0)
    accounted = (
        counts.get("rows_clean", 0)
        + counts.get("rows_quarantined", 0)
        + counts.get("rows_deduplicated", 0)
    )
    if rows_in != accounted:
        raise PipelineError(
            f"row counts do not reconcile: rows_in={rows_in} but clean+quarantined+"
            f"deduplicated={accounted}. This is a bug; please report it with the run manifest."
        )
