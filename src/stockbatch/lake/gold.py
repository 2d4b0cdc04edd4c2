"""Reading the gold layer: the process stage's record, gold files, checksums, instruments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from stockbatch import schema
from stockbatch.lake import files
from stockbatch.lake.layout import LakeLayout, layout
from stockbatch.settings import Settings


def process_state(settings: Settings) -> dict[str, Any]:
    """The last process run's record (``gold/_state.json``); ``{}`` before the first."""
    return files.read_json(layout(settings).process_state)


def daily_files(settings: Settings) -> list[Path]:
    """Gold daily feature files, bucket by bucket."""
    return files.parquet_files(layout(settings).gold_daily)


def read_quarterly(settings: Settings) -> pa.Table:
    """The gold quarterly feature table, in its canonical types."""
    return files.read_canonical(layout(settings).gold_quarterly, schema.QUARTERLY_FEATURES)


def instruments_table(settings: Settings) -> pa.Table:
    """Every symbol in gold, with metadata where a source provided it."""
    paths = layout(settings)
    path = paths.instruments
    daily = files.parquet_files(paths.gold_daily)
    syms = (
        pl.scan_parquet(daily).select("symbol", "source").unique("symbol").collect()
        if daily
        else pl.DataFrame(
            {"symbol": [], "source": []}, schema={"symbol": pl.String, "source": pl.String}
        )
    )
    meta = pl.read_parquet(path).drop("source") if path.exists() else None
    if meta is not None:
        syms = syms.join(meta, on="symbol", how="left")
    else:
        syms = syms.with_columns(
            pl.lit(None, pl.String).alias("name"),
            pl.lit(None, pl.String).alias("exchange"),
            pl.lit(None, pl.Boolean).alias("is_etf"),
        )
    return syms.select(schema.INSTRUMENTS.names).sort("symbol").to_arrow().cast(schema.INSTRUMENTS)


def gold_checksums(
    settings: Settings,
    *,
    reuse: dict[str, str] | None = None,
    old: dict[str, list[int]] | None = None,
    now: dict[str, list[int]] | None = None,
) -> dict[str, str]:
    """SHA-256 of every gold file, keyed by its path relative to the lake.

    ``reuse``: known checksums, kept for files whose (size, mtime) is the same in
    ``old`` and ``now`` (an incremental update hashes only the files it wrote).
    """
    root = settings.lake_path
    out: dict[str, str] = {}
    for p in files.parquet_files(LakeLayout(root).gold):
        rel = str(p.relative_to(root))
        known = (reuse or {}).get(rel)
        same = old is not None and now is not None and rel in old and old.get(rel) == now.get(rel)
        out[rel] = known if known and same else files.file_sha256(p)
    return out
