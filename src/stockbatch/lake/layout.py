"""Every path and file name of the lake, in one place.

::

    bronze/bars/batch=<run_id>/bucket=NNN/part-NNNNN.parquet    as arrived, one batch per landing
    bronze/bars/batch=kafka-<topic>/bucket=NNN/part-p..parquet  landed by the Kafka collector
    bronze/_catalog.parquet                                    which unit versions are active
    bronze/_kafka/{published,ledger}.parquet                   Kafka producer / collector books
    bronze/.lock                                               lock of the bronze metadata
    silver/bars/bucket=NNN/part-NNNNN.parquet                  clean bars (superseded flagged)
    silver/quarantine/bucket=NNN/part-NNNNN.parquet            refused rows with reasons
    silver/instruments/part-00000.parquet                      instrument metadata (newest wins)
    gold/daily_features/bucket=NNN/part-NNNNN.parquet          bars + daily features
    gold/quarterly_features/part-00000.parquet                 the quarterly ML table
    gold/_state.json, _loaded.json, _search.json               process / load / search records
    _state/tail/bucket=NNN/part-NNNNN.parquet, symbols.parquet incremental update state
    runs/<run_id>.json                                         one manifest per run

A bucket folder holds ``part-00000.parquet`` after a full rebuild and, after
incremental updates, further parts (compacted past a limit).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from stockbatch.settings import Settings

BRONZE = "bronze"
SILVER = "silver"
GOLD = "gold"
RUNS = "runs"
STATE = "_state"

FIRST_PART = "part-00000.parquet"


def part_name(k: int) -> str:
    """File name of the ``k``-th part of a folder."""
    return f"part-{k:05d}.parquet"


def run_part_name(run_id: str) -> str:
    """File name of the part one incremental process run adds to a bucket folder."""
    return f"part-{run_id}.parquet"


def symbol_bucket(symbol: str, buckets: int) -> int:
    """Stable bucket of a symbol: crc32 of its UTF-8 bytes mod ``buckets``.

    crc32 (not Python's salted ``hash``) so the assignment is the same in every
    process and in Spark (``crc32`` is a built-in there too).
    """
    return zlib.crc32(symbol.encode("utf-8")) % buckets


def with_buckets(df: pl.DataFrame, buckets: int, cache: dict[str, int]) -> pl.DataFrame:
    """``df`` with an Int16 ``bucket`` column from its ``symbol`` (``cache`` is reused)."""
    for sym in df["symbol"].unique().to_list():
        if sym not in cache:
            cache[sym] = symbol_bucket(sym, buckets)
    return df.with_columns(
        pl.col("symbol").replace_strict(cache, return_dtype=pl.Int16).alias("bucket")
    )


def kafka_part_name(partition: int, start: int, end: int) -> str:
    """File name of a Kafka collector's part: partition and offset range ``[start, end)``."""
    return f"part-p{partition:03d}-{start:012d}-{end:012d}.parquet"


def kafka_part_glob(partition: int) -> str:
    """Pattern (below a batch folder) of every Kafka part of one partition."""
    return f"bucket=*/part-p{partition:03d}-*.parquet"


_KAFKA_PART_RE = re.compile(r"^part-p(\d+)-(\d{12})-(\d{12})\.parquet$")


def kafka_part_range(name: str) -> tuple[int, int, int] | None:
    """``(partition, start, end)`` of a Kafka part's file name (None for any other name)."""
    m = _KAFKA_PART_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def bucket_dir(root: Path, bucket: int) -> Path:
    """Partition folder of one bucket."""
    return root / f"bucket={bucket:03d}"


def bucket_of_dir(folder: Path) -> int | None:
    """The bucket number of a ``bucket=NNN`` folder (None for any other folder)."""
    name = folder.name
    return int(name.removeprefix("bucket=")) if name.startswith("bucket=") else None


def batch_of_file(path: Path) -> str:
    """The batch (landing run id, or ``kafka-<topic>``) of a bronze file."""
    return path.parent.parent.name.removeprefix("batch=")


@dataclass(frozen=True)
class LakeLayout:
    """The paths below one lake root."""

    root: Path

    # -- bronze
    @property
    def bronze(self) -> Path:
        """The bronze layer."""
        return self.root / BRONZE

    @property
    def bronze_bars(self) -> Path:
        """All landed batches."""
        return self.bronze / "bars"

    def bronze_batch(self, batch: str) -> Path:
        """One landed batch (a run id, or ``kafka-<topic>`` for the collector)."""
        return self.bronze_bars / f"batch={batch}"

    @property
    def catalog(self) -> Path:
        """The bronze catalog."""
        return self.bronze / "_catalog.parquet"

    @property
    def bronze_lock(self) -> Path:
        """Lock file of the bronze metadata."""
        return self.bronze / ".lock"

    @property
    def kafka_books(self) -> Path:
        """The Kafka producer's and collector's records."""
        return self.bronze / "_kafka"

    @property
    def kafka_published(self) -> Path:
        """The units a confirmed Kafka ingest run published (per cluster id and topic)."""
        return self.kafka_books / "published.parquet"

    @property
    def kafka_ledger(self) -> Path:
        """One row per record the collector took (its unit and part)."""
        return self.kafka_books / "ledger.parquet"

    def kafka_batch(self, topic: str) -> Path:
        """The batch the collector lands ``topic`` in (characters unsafe in a path -> ``_``)."""
        return self.bronze_batch("kafka-" + re.sub(r"[^A-Za-z0-9._-]", "_", topic))

    # -- silver
    @property
    def silver(self) -> Path:
        """The silver layer."""
        return self.root / SILVER

    @property
    def silver_bars(self) -> Path:
        """Clean bars, one folder per bucket."""
        return self.silver / "bars"

    @property
    def quarantine(self) -> Path:
        """Refused rows, one folder per bucket."""
        return self.silver / "quarantine"

    @property
    def instruments(self) -> Path:
        """Instrument metadata of every source."""
        return self.silver / "instruments" / FIRST_PART

    # -- gold
    @property
    def gold(self) -> Path:
        """The gold layer."""
        return self.root / GOLD

    @property
    def gold_daily(self) -> Path:
        """Bars and daily features, one folder per bucket."""
        return self.gold / "daily_features"

    @property
    def gold_quarterly(self) -> Path:
        """The quarterly feature table (one file)."""
        return self.gold / "quarterly_features" / FIRST_PART

    @property
    def process_state(self) -> Path:
        """What the last process run produced (fingerprint, counts, checksums)."""
        return self.gold / "_state.json"

    @property
    def loaded_state(self) -> Path:
        """What the warehouse last loaded (checksums per gold file)."""
        return self.gold / "_loaded.json"

    @property
    def search_state(self) -> Path:
        """The last search sync (stale or not)."""
        return self.gold / "_search.json"

    # -- incremental state
    @property
    def state(self) -> Path:
        """What an incremental update starts from."""
        return self.root / STATE

    @property
    def tails(self) -> Path:
        """Each symbol's last rows with the recursive features' state, per bucket."""
        return self.state / "tail"

    @property
    def symbols(self) -> Path:
        """Per-symbol facts (bucket, first/last dates, sources)."""
        return self.state / "symbols.parquet"

    # -- runs
    @property
    def runs(self) -> Path:
        """One manifest per run."""
        return self.root / RUNS

    def manifest(self, run_id: str) -> Path:
        """The manifest of one run."""
        return self.runs / f"{run_id}.json"

    # -- every layer the process stage writes
    def processed_roots(self) -> list[Path]:
        """The folders the process stage owns (silver bars/quarantine, gold, state)."""
        return [self.silver_bars, self.quarantine, self.gold, self.state]

    def relative(self, path: Path) -> str:
        """``path`` relative to the lake root, as stored in records."""
        return str(path.relative_to(self.root))


def layout(settings: Settings) -> LakeLayout:
    """The paths of the lake the settings point at."""
    return LakeLayout(settings.lake_path)
