"""What every step of one process run shares, and the lake writes both paths make."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from stockbatch import lake, quality, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.lake.layout import FIRST_PART, LakeLayout, bucket_dir
from stockbatch.process.engines import Engine
from stockbatch.process.state import SYMBOL
from stockbatch.settings import Settings


@dataclass
class StageContext:
    """One process run: its settings, feature engine, ids, calendar and progress."""

    settings: Settings
    engine: Engine
    run_id: str
    as_of: dt.date
    calendar: SessionCalendar
    progress: Callable[[str, int], Any]

    @property
    def layout(self) -> LakeLayout:
        return lake.layout(self.settings)

    @property
    def buckets(self) -> int:
        return self.settings.lake.buckets

    @property
    def compression(self) -> str:
        return self.settings.lake.compression

    def validate(self, bronze: pl.DataFrame) -> quality.ValidationResult:
        """The engine's validation of one bucket's bronze rows, with this run's settings."""
        return self.engine.validate(
            bronze,
            as_of=self.as_of,
            calendar=self.calendar,
            priority=self.settings.process.source_priority,
        )

    def write(self, frame: pl.DataFrame, target: Any, path: Path) -> Path:
        """Write ``frame`` in the canonical schema ``target``."""
        lake.write_parquet_atomic(lake.conform(frame, target), path, self.compression)
        return path

    def replace_bucket(self, frame: pl.DataFrame, target: Any, root: Path, bucket: int) -> None:
        """Make ``frame`` the only part of one bucket folder of the layer at ``root``."""
        folder = bucket_dir(root, bucket)
        keep_only(folder, self.write(frame, target, folder / FIRST_PART))

    def live_bars(self, bucket: int) -> pl.DataFrame:
        """One rebuilt bucket's silver bars that are not superseded (one part)."""
        path = bucket_dir(self.layout.silver_bars, bucket) / FIRST_PART
        return pl.read_parquet(path).filter(~pl.col("superseded"))

    def read_quarterly(self) -> pl.DataFrame:
        return pl.read_parquet(self.layout.gold_quarterly)

    def write_quarterly(self, quarterly: pl.DataFrame) -> None:
        self.write(quarterly, schema.QUARTERLY_FEATURES, self.layout.gold_quarterly)


def keep_only(folder: Path, keep: Path) -> None:
    """Delete every Parquet part in ``folder`` but ``keep``."""
    for p in lake.parquet_files(folder):
        if p != keep:
            p.unlink()


def concat_quarterly(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Quarterly rows of several computations as one table sorted by (symbol, quarter)."""
    if not parts:
        return pl.DataFrame(schema=lake.polars_schema(schema.QUARTERLY_FEATURES))
    return pl.concat(parts).sort(SYMBOL, "quarter")
