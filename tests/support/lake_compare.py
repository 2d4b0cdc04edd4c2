"""Compare two lakes' silver and gold outputs (incremental vs full, engine vs engine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from stockbatch import lake

REL_TOL = 1e-8
"""FEATURES.md tolerance for feature values."""

_SORT = {
    "silver/bars": ["symbol", "trade_date", "source"],
    "silver/quarantine": ["source_file", "line_no"],
    "gold/daily_features": ["symbol", "trade_date"],
    "gold/quarterly_features": ["symbol", "quarter"],
}


def read_layer(lake_root: Path, layer: str) -> pl.DataFrame:
    """Every part of one layer, concatenated and sorted by its key."""
    files = lake.parquet_files(lake_root / layer)
    assert files, f"no files under {lake_root / layer}"
    frame = pl.concat([pl.read_parquet(p) for p in files], how="vertical_relaxed")
    return frame.sort(_SORT[layer], nulls_last=True)


def assert_frames_close(left: pl.DataFrame, right: pl.DataFrame, what: str) -> None:
    """Same columns, rows, nulls; floats within REL_TOL relative (absolute near 0)."""
    assert left.columns == right.columns, f"{what}: columns differ"
    assert left.height == right.height, f"{what}: {left.height} rows vs {right.height}"
    for name in left.columns:
        a, b = left[name], right[name]
        assert a.dtype == b.dtype, f"{what}.{name}: {a.dtype} vs {b.dtype}"
        assert (a.is_null() == b.is_null()).all(), f"{what}.{name}: nulls differ"
        if a.dtype == pl.Float64:
            both = pl.DataFrame({"a": a, "b": b}).drop_nulls()
            bad = both.filter(
                (pl.col("a") - pl.col("b")).abs()
                > REL_TOL * pl.max_horizontal(pl.col("a").abs(), pl.col("b").abs(), pl.lit(1e-12))
            )
            assert bad.is_empty(), f"{what}.{name}: {bad.height} values differ, e.g. {bad.head(3)}"
        else:
            diff = (a != b).fill_null(False)
            assert not diff.any(), f"{what}.{name}: {int(diff.sum())} values differ"


PROVENANCE_ONLY = ("ingest_run_id",)
"""Columns that say which landing carried a row, not what the row is: after an
incremental update, the old lines of an appended file keep the landing that first
brought them, where a full rebuild names the newest one."""


def assert_lakes_equal(left: Path, right: Path, *, ignore: tuple[str, ...] = ()) -> None:
    """Silver, quarantine, gold daily and quarterly of two lakes agree."""
    for layer in _SORT:
        a, b = read_layer(left, layer), read_layer(right, layer)
        drop = [c for c in ignore if c in a.columns]
        assert_frames_close(a.drop(drop), b.drop(drop), layer)


def process_state(lake_root: Path) -> dict[str, Any]:
    """The process stage's state document of a lake."""
    state: dict[str, Any] = json.loads(lake.LakeLayout(lake_root).process_state.read_text())
    return state
