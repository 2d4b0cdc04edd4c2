"""The load stage: gold into the warehouse (one transaction), then the search sync."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from stockbatch import lake, schema
from stockbatch.errors import PipelineError
from stockbatch.lake import gold
from stockbatch.lake.layout import bucket_of_dir
from stockbatch.results import LoadResult, Progress, new_run_id, no_progress
from stockbatch.search import sync
from stockbatch.settings import Settings
from stockbatch.warehouse.db import resolve_urls


def load(
    settings: Settings,
    *,
    run_id: str | None = None,
    force: bool = False,
    search_only: bool = False,
    progress: Progress = no_progress,
) -> LoadResult:
    """Upsert the gold layer into the warehouse, then sync the search index.

    The warehouse gets only the gold files that changed since its last load,
    all tables in ONE transaction (a failure or a killed connection leaves the
    previous state). A configured search index is then synced; an unreachable
    node leaves it marked stale without failing the load (see
    :func:`stockbatch.search.sync.search_sync`). ``search_only``: skip the
    warehouse (catch a stale index up).
    """
    started = time.perf_counter()
    result = LoadResult(run_id=run_id or new_run_id())
    state = gold.process_state(settings)
    if not state:
        raise PipelineError("nothing to load: run `stockbatch process` first.")
    if search_only:
        if settings.search.kind == "none":
            raise PipelineError(
                "--search-only needs a search backend: --search opensearch|elasticsearch "
                "(or STOCKBATCH_SEARCH__KIND)."
            )
        result.warehouse_skipped = True
    else:
        _load_warehouse(settings, state["gold_checksums"], result, force, progress)
    if settings.search.kind != "none":
        # --force rebuilds the search indices too (fresh index and alias swap).
        result.search = sync.search_sync(settings, run_id=result.run_id, full=force)
    result.duration_s = time.perf_counter() - started
    return result


def _load_warehouse(
    settings: Settings,
    checksums: dict[str, str],
    result: LoadResult,
    force: bool,
    progress: Progress,
) -> None:
    """Make the warehouse mirror gold, in one transaction; then record what was loaded
    (never before the commit: a failed load is redone in full by the next one).

    A gold bucket that was rebuilt (its first part changed, a part vanished) is
    mirrored: its symbols' stored rows become exactly the bucket's, so rows that
    left gold (a corrected date, a shortened file, a removed symbol) are deleted.
    A bucket that only gained parts (an incremental append) upserts the new parts.
    The instruments and the quarterly table are mirrored whole when they change.
    """
    from stockbatch.warehouse import db, loader

    urls = resolve_urls(settings)
    if urls.loader.startswith("sqlite:///"):
        Path(urls.loader.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    db.migrate(urls.owner)
    where = db.display_url(urls.loader)
    layout = lake.layout(settings)
    loaded = lake.read_json(layout.loaded_state)
    if loaded.get("warehouse_url") != where or loaded.get("buckets") != settings.lake.buckets:
        loaded = {}  # another warehouse, or symbols moved between buckets: mirror everything
    prior: dict[str, str] = {} if force else loaded.get("checksums", {})
    jobs = _daily_jobs(settings, checksums, prior)
    result.buckets_unchanged = len(gold.daily_files(settings)) - sum(len(f) for f, _ in jobs)

    def add(name: str, stats: Any) -> None:
        t = result.tables.setdefault(
            name, {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0}
        )
        for k in t:
            t[k] += getattr(stats, k)

    task = progress("load", len(jobs) + 2)
    try:
        with loader.run_transaction(db.engine_for(urls.loader)) as tx:
            inst = gold.instruments_table(settings)
            add("instruments", tx.load_table("instruments", [inst], key=("symbol",), replace=True))
            _load_daily(tx, settings, jobs, add, task)
            result.buckets_loaded += sum(len(files) for files, _ in jobs)
            quarterly = gold.read_quarterly(settings)
            key = ("symbol", "quarter")
            add(
                "quarterly_features",
                tx.load_table("quarterly_features", [quarterly], key=key, replace=True),
            )
            task.advance()
            quarantine = [
                lake.read_canonical(p, schema.QUARANTINE)
                for p in lake.parquet_files(layout.quarantine)
            ]
            add("quarantine", tx.replace_quarantine(quarantine))
            task.advance()
    finally:
        task.close()
    record = {
        "warehouse_url": where,
        "buckets": settings.lake.buckets,
        "checksums": checksums,
        "run_id": result.run_id,
    }
    lake.atomic_write_bytes(layout.loaded_state, json.dumps(record).encode())


def _load_daily(
    tx: Any,
    settings: Settings,
    jobs: list[tuple[list[Path], int | None]],
    add: Any,
    task: Any,
) -> None:
    """Load the daily jobs (see :func:`_daily_jobs`) into daily_bars and daily_features."""
    stored: set[str] = set()
    if any(bucket is not None for _, bucket in jobs):
        stored = tx.stored_values("daily_bars", "symbol") | tx.stored_values(
            "daily_features", "symbol"
        )
    n = settings.lake.buckets
    key = ("symbol", "trade_date")
    for files, bucket in jobs:
        daily = (
            pa.concat_tables(lake.read_canonical(p, schema.DAILY_FEATURES) for p in files)
            if files
            else schema.DAILY_FEATURES.empty_table()
        )
        scope = None
        if bucket is not None:  # a rebuilt bucket: its symbols' rows become exactly these
            scope = sorted(s for s in stored if lake.symbol_bucket(s, n) == bucket)
        bars = daily.select(list(schema.DAILY_BAR_COLUMNS))
        feats = daily.select(["symbol", "trade_date", *schema.DAILY_FEATURE_COLUMNS])
        add("daily_bars", tx.load_table("daily_bars", [bars], key=key, replace=scope))
        add("daily_features", tx.load_table("daily_features", [feats], key=key, replace=scope))
        task.advance()


def _daily_jobs(
    settings: Settings, checksums: dict[str, str], prior: dict[str, str]
) -> list[tuple[list[Path], int | None]]:
    """What to load of the gold daily files: (files, bucket) to mirror a rebuilt bucket,
    (files, None) to upsert the parts an incremental update added."""
    layout = lake.layout(settings)
    rel = layout.relative
    now: dict[int, list[Path]] = {}
    for p in gold.daily_files(settings):
        now.setdefault(bucket_of_dir(p.parent) or 0, []).append(p)
    daily_prefix = rel(layout.gold_daily) + "/"
    before: dict[int, set[str]] = {}
    for name in prior:
        if name.startswith(daily_prefix):
            before.setdefault(bucket_of_dir(Path(name).parent) or 0, set()).add(name)
    mirror_all = not prior
    buckets = set(now) | set(before) | (set(range(settings.lake.buckets)) if mirror_all else set())
    jobs: list[tuple[list[Path], int | None]] = []
    for b in sorted(buckets):
        files = now.get(b, [])
        changed = [p for p in files if prior.get(rel(p)) != checksums.get(rel(p))]
        gone = before.get(b, set()) - {rel(p) for p in files}
        if mirror_all or gone or any(p.name == lake.FIRST_PART for p in changed):
            jobs.append((files, b))
        elif changed:
            jobs.append((changed, None))
    return jobs
