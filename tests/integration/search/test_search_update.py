"""The daily search update, on both engines: a new day of gold is upserted into the live
index (no rebuild, no alias swap), rows that left gold are deleted, and afterwards the
index holds exactly what a full reindex of the same gold holds (document count and a
checksum over every document). A record that does not describe the live index means a
rebuild, never a wrong index."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from integration.search.search_support import Gold
from stockbatch.lake import files
from stockbatch.search import SearchBackend, SearchLoadStats, sync_search
from stockbatch.search.indices import DAILY_BARS

pytestmark = [pytest.mark.integration, pytest.mark.search]


def _gold_version(gold: Gold, root: Path, edit: Any) -> tuple[list[Path], dict[str, str]]:
    """Copies of the gold daily files under ``root`` (same bucket/part names), each
    frame passed through ``edit``; and their checksums keyed like gold's."""
    paths, sums = [], {}
    for src in gold.daily_files:
        dst = root / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        edit(pl.read_parquet(src)).write_parquet(dst)
        paths.append(dst)
        sums[f"gold/daily_features/{src.parent.name}/{src.name}"] = files.file_sha256(dst)
    return paths, sums


def _sync(
    backend: SearchBackend, gold: Gold, daily: tuple[list[Path], dict[str, str]], **kw: Any
) -> SearchLoadStats:
    return sync_search(
        backend,
        instruments=gold.instruments,
        quarterly=gold.quarterly,
        daily_files=daily[0],
        checksum={**gold.checksums, **daily[1]},
        **kw,
    )


def _last_day(gold: Gold) -> dt.date:
    days = [pl.read_parquet(p)["trade_date"].max() for p in gold.daily_files]
    last = max(d for d in days if d is not None)
    assert isinstance(last, dt.date)
    return last


def _checksum(backend: SearchBackend, alias: str) -> tuple[int, str]:
    """Document count and SHA-256 over every (id, document), in id order."""
    docs = sorted(backend.scan(alias))
    h = hashlib.sha256()
    for doc_id, source in docs:
        h.update(json.dumps([doc_id, source], sort_keys=True).encode())
    return len(docs), h.hexdigest()


def test_a_new_day_is_upserted_in_place_and_equals_a_full_reindex(
    backend: SearchBackend, demo_gold: Gold, tmp_path: Path
) -> None:
    last = _last_day(demo_gold)
    before = _gold_version(
        demo_gold, tmp_path / "v1", lambda f: f.filter(pl.col("trade_date") < last)
    )
    after = _gold_version(demo_gold, tmp_path / "v2", lambda f: f)
    new_rows = sum(pl.read_parquet(p).filter(pl.col("trade_date") == last).height for p in after[0])
    assert new_rows > 0
    state = tmp_path / "state"
    alias = DAILY_BARS.alias("sbupd")

    first = _sync(backend, demo_gold, before, run_id="day-1", prefix="sbupd", state_dir=state)
    assert not first.indices["daily-bars"].updated_in_place  # nothing recorded yet: built
    live = backend.alias_targets(alias)

    second = _sync(backend, demo_gold, after, run_id="day-2", prefix="sbupd", state_dir=state)
    daily = second.indices["daily-bars"]
    assert daily.updated_in_place and daily.index == live[0], daily
    assert (daily.docs_indexed, daily.docs_deleted) == (new_rows, 0)
    assert second.indices["instruments"].skipped_unchanged
    assert backend.alias_targets(alias) == live  # no swap
    assert "~" in second.summary()

    # The same gold, reindexed in full elsewhere: the same documents.
    _sync(backend, demo_gold, after, run_id="full", prefix="sbfull", full=True)
    assert _checksum(backend, alias) == _checksum(backend, DAILY_BARS.alias("sbfull"))

    # Rows leave gold (a symbol removed) and a value is corrected: deletes and upserts.
    gone = pl.read_parquet(after[0][0])["symbol"][0]

    def correct(frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.filter(pl.col("symbol") != gone)
        first_symbol = frame.filter(pl.col("trade_date") == last)["symbol"].min()
        if first_symbol is None:  # no row of that day in this file
            return frame
        fix = (pl.col("trade_date") == last) & (pl.col("symbol") == first_symbol)
        return frame.with_columns(pl.when(fix).then(pl.col("close") + 1).otherwise("close"))

    third_gold = _gold_version(demo_gold, tmp_path / "v3", correct)
    removed = sum(pl.read_parquet(p).filter(pl.col("symbol") == gone).height for p in after[0])
    third = _sync(backend, demo_gold, third_gold, run_id="day-3", prefix="sbupd", state_dir=state)
    daily = third.indices["daily-bars"]
    assert daily.updated_in_place and daily.docs_deleted == removed and daily.docs_indexed >= 1
    _sync(backend, demo_gold, third_gold, run_id="full-3", prefix="sbfull3", full=True)
    assert _checksum(backend, alias) == _checksum(backend, DAILY_BARS.alias("sbfull3"))

    # Unchanged gold: skipped, as before.
    again = _sync(backend, demo_gold, third_gold, run_id="day-4", prefix="sbupd", state_dir=state)
    assert again.indices["daily-bars"].skipped_unchanged


def test_a_record_that_does_not_match_the_live_index_means_a_rebuild(
    backend: SearchBackend, demo_gold: Gold, tmp_path: Path
) -> None:
    last = _last_day(demo_gold)
    before = _gold_version(
        demo_gold, tmp_path / "v1", lambda f: f.filter(pl.col("trade_date") < last)
    )
    after = _gold_version(demo_gold, tmp_path / "v2", lambda f: f)
    state = tmp_path / "state"
    alias = DAILY_BARS.alias("sbrec")
    _sync(backend, demo_gold, before, run_id="r1", prefix="sbrec", state_dir=state)
    # Someone deletes a document by hand: the count no longer matches the record.
    doc_id = next(iter(backend.scan(alias, size=10)))[0]
    index = backend.alias_targets(alias)[0]
    backend.request("DELETE", f"/{index}/_doc/{doc_id}?refresh=true")
    second = _sync(backend, demo_gold, after, run_id="r2", prefix="sbrec", state_dir=state)
    daily = second.indices["daily-bars"]
    assert not daily.updated_in_place and daily.index != index  # rebuilt, swapped
    _sync(backend, demo_gold, after, run_id="full", prefix="sbrecfull", full=True)
    assert _checksum(backend, alias) == _checksum(backend, DAILY_BARS.alias("sbrecfull"))
    # A lost record: rebuilt too.
    for record in state.glob("*.parquet"):
        record.unlink()
    third = _sync(backend, demo_gold, before, run_id="r3", prefix="sbrec", state_dir=state)
    assert not third.indices["daily-bars"].updated_in_place
