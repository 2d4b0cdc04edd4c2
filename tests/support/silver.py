"""Real shared-sample files in silver shape, for engine tests."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from stockbatch import lake, schema

SILVER = lake.polars_schema(schema.SILVER_BARS)


def read_silver(root: Path, rel: str) -> pl.DataFrame:
    """One Huge-sample file in silver shape (the files used in tests are already clean)."""
    raw = pl.read_csv(root / rel, schema_overrides={"Date": pl.String, "Volume": pl.Float64})
    return raw.select(
        pl.lit(Path(rel).name.removesuffix(".us.txt").upper()).alias("symbol"),
        pl.col("Date").str.to_date().alias("trade_date"),
        pl.col("Open").cast(pl.Float64).alias("open"),
        pl.col("High").cast(pl.Float64).alias("high"),
        pl.col("Low").cast(pl.Float64).alias("low"),
        pl.col("Close").cast(pl.Float64).alias("close"),
        pl.lit(None, pl.Float64).alias("adj_close"),
        pl.col("Volume").alias("volume"),
        pl.lit("kaggle-huge").alias("source"),
        pl.lit(True).alias("is_adjusted"),
        pl.lit(False).alias("superseded"),
        pl.lit(rel).alias("source_file"),
        (pl.int_range(pl.len(), dtype=pl.Int32) + 2).alias("line_no"),
    ).cast(dict(SILVER))  # type: ignore[arg-type]
