"""The load stage: gold into the warehouse (one transaction), then the search sync."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from stockbatch import lake, schema
from stockbatch.errors import PipelineError
from stockbatch.lake import gold
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
                "--search-only needs a search backend: --search opensearch "
                "(or STOCKBATCH_SEARCH__KIND=opensearch)."
            )
        result.warehouse_skipped = True
    else:
        _load_warehouse(settings, state["gold_checksums"], result, force, progress)
    if settings.search.kind != "none":
        result.search = sync.search_sync(settings, run_id=result.run_id)
    result.duration_s = time.perf_counter() - started
    return result


def _load_warehouse(
    settings: Settings,
    checksums: dict[str, str],
    result: LoadResult,
    force: bool,
    progress: Progress,
) -> None:
    """The changed gold files, the instruments, quarterly table and quarantine: one
    transaction; then the record of what was loaded (never before the commit)."""
    from stockbatch.warehouse import db, loader

    urls = resolve_urls(settings)
    if urls.loader.startswith("sqlite:///"):
        Path(urls.loader.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    db.migrate(urls.owner)
    where = db.display_url(urls.loader)
    layout = lake.layout(settings)
    loaded = lake.read_json(layout.loaded_state)
    if loaded.get("warehouse_url") != where:
        loaded = {}
    prior: dict[str, str] = {} if force else loaded.get("checksums", {})

    def add(name: str, stats: Any) -> None:
        t = result.tables.setdefault(name, {"inserted": 0, "updated": 0, "unchanged": 0})
        t["inserted"] += stats.inserted
        t["updated"] += stats.updated
        t["unchanged"] += stats.unchanged

    daily_files = gold.daily_files(settings)
    rel = layout.relative
    todo = [p for p in daily_files if prior.get(rel(p)) != checksums.get(rel(p))]
    result.buckets_unchanged = len(daily_files) - len(todo)
    task = progress("load", len(todo) + 2)
    try:
        with loader.run_transaction(db.engine_for(urls.loader)) as tx:
            inst = gold.instruments_table(settings)
            add("instruments", tx.load_table("instruments", [inst], key=("symbol",)))
            for p in todo:
                daily = lake.read_canonical(p, schema.DAILY_FEATURES)
                bars = daily.select(list(schema.DAILY_BAR_COLUMNS))
                feats = daily.select(["symbol", "trade_date", *schema.DAILY_FEATURE_COLUMNS])
                key = ("symbol", "trade_date")
                add("daily_bars", tx.load_table("daily_bars", [bars], key=key))
                add("daily_features", tx.load_table("daily_features", [feats], key=key))
                result.buckets_loaded += 1
                task.advance()
            quarterly = gold.read_quarterly(settings)
            key = ("symbol", "quarter")
            add("quarterly_features", tx.load_table("quarterly_features", [quarterly], key=key))
            task.advance()
            quarantine = [
                lake.read_canonical(p, schema.QUARANTINE)
                for p in lake.parquet_files(layout.quarantine)
            ]
            add("quarantine", tx.replace_quarantine(quarantine))
            task.advance()
    finally:
        task.close()
    # Only after the commit: a failed load is redone in full by the next one.
    lake.atomic_write_bytes(
        layout.loaded_state,
        json.dumps(
            {"warehouse_url": where, "checksums": checksums, "run_id": result.run_id}
        ).encode(),
    )
