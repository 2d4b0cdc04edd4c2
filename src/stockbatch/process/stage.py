"""The process stage's entry point: bronze -> silver -> gold, incremental or full."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from typing import Any

import polars as pl

from stockbatch import __version__, lake, schema
from stockbatch.errors import PipelineError
from stockbatch.lake import bronze, gold
from stockbatch.results import ProcessResult, Progress, new_run_id, no_progress, today_utc
from stockbatch.settings import Settings


def process_fingerprint(settings: Settings, as_of: dt.date, active: pl.DataFrame) -> str:
    """Hash of everything that decides the silver and gold content."""
    payload = {
        "units": active.select(["source", "ref", "sha256", "batch"]).rows() if len(active) else [],
        "as_of": as_of.isoformat(),
        "feature_set_version": schema.FEATURE_SET_VERSION,
        "code_version": __version__,
        "source_priority": settings.process.source_priority,
        "buckets": settings.lake.buckets,
        "calendar": settings.process.calendar,
        "engine": settings.process.engine,
    }
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()


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

    Incremental by default: only what new bronze rows affect is recomputed (see
    :mod:`stockbatch.processing`); ``full`` (or ``force``) rebuilds everything.
    """
    from stockbatch.calendar import SessionCalendar
    from stockbatch.process import update as processing

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

    engine = processing_engine(settings)
    calendar = SessionCalendar(settings.process.calendar, end=as_of + dt.timedelta(days=400))
    ctx = processing.StageContext(
        settings=settings,
        engine=engine,
        run_id=run_id,
        as_of=as_of,
        calendar=calendar,
        progress=progress,
    )
    parts = bronze.active_parts(settings)
    batches = bronze.whole_batches(settings, parts)
    bronze_files = lake.parquet_files(lake.layout(settings).bronze_bars)
    outcome, entries = processing.run_stage(
        ctx,
        state=state,
        active=active,
        parts=parts,
        bronze_files=bronze_files,
        read_bronze=lambda b: bronze.read_bucket(settings, b, parts, batches),
        full=force or full,
    )
    _check_reconciles(outcome.counts)
    result = ProcessResult(
        run_id=run_id,
        skipped=False,
        fingerprint=fingerprint,
        counts=outcome.counts,
        as_of=as_of,
        daily_rows=outcome.daily_rows,
        quarterly_rows=outcome.quarterly_rows,
        symbols=outcome.symbols,
        winners=outcome.winners,
        duration_s=time.perf_counter() - started,
        recomputed=outcome.recomputed,
    )
    old_sums = state.get("gold_checksums", {}) if entries["recomputed"]["mode"] != "full" else {}
    old_files = state.get("files", {})
    files = processing.snapshot(settings)
    state_doc = {
        **entries,
        "fingerprint": fingerprint,
        "run_id": run_id,
        "counts": outcome.counts,
        "daily_rows": outcome.daily_rows,
        "quarterly_rows": outcome.quarterly_rows,
        "symbols": outcome.symbols,
        "winners": outcome.winners,
        "as_of": as_of.isoformat(),
        "dataset_last_date": outcome.dataset_last.isoformat(),
        "engine": engine.name,
        "gold_checksums": gold.gold_checksums(settings, reuse=old_sums, old=old_files, now=files),
        "files": files,
    }
    lake.atomic_write_bytes(
        lake.layout(settings).process_state,
        json.dumps(state_doc, indent=2, sort_keys=True).encode(),
    )
    return result


def processing_engine(settings: Settings) -> Any:
    """The feature engine the settings ask for."""
    from stockbatch.process import update as processing

    if settings.process.engine == "spark":
        return processing.SparkEngine.for_settings(settings)
    return processing.PolarsEngine()


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
