"""The collector's bronze sink: bronze files, the ledger and the catalog of what Kafka held.

:class:`BronzeSink` writes one flush of the collector (:mod:`stockbatch.bus.collector`):
per partition and bucket one Parquet file named after the partition and its
offset range (``lake.layout(settings).kafka_batch(topic)``, file names from
``lake.layout.kafka_part_name``), then one ledger row per record taken
(``kafka_ledger``), then catalog entries for the units whose parts are now all
in the ledger. Before a partition is consumed, :meth:`BronzeSink.reconcile`
deletes what a collector that died before its commit left behind, and
:meth:`BronzeSink.rollback` undoes a flush whose commit failed. Why this gives
exactly once into bronze across crashes: ``docs/design/kafka.md``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from stockbatch import lake
from stockbatch.bus import codec
from stockbatch.bus.client import crash_point, log
from stockbatch.lake import bronze
from stockbatch.lake.layout import kafka_part_glob, kafka_part_name, kafka_part_range
from stockbatch.settings import Settings

_LEDGER_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("ingest_run_id", pa.string()),
        ("source", pa.string()),
        ("ref", pa.string()),
        ("sha256", pa.string()),
        ("part", pa.int32()),
        ("parts", pa.int32()),
        ("rows", pa.int64()),
    ]
)


@dataclass
class Taken:
    """One record taken from a partition: decoded, or None when it was dead-lettered."""

    offset: int
    message: codec.Message | None
    value_bytes: int


Ranges = dict[int, tuple[int, int, list[Taken]]]
"""One flush: partition -> (first offset, end offset exclusive, the records taken)."""


@dataclass
class Written:
    """What one flush put into bronze."""

    files: list[str] = field(default_factory=list)  # relative to the lake root
    rows: int = 0
    duplicates_skipped: int = 0
    units_activated: int = 0
    instruments: int = 0


@dataclass
class _Sorted:
    """The records of one flush sorted out: ledger rows, bar tables, instruments."""

    ledger_rows: list[dict[str, Any]] = field(default_factory=list)
    instruments: list[codec.InstrumentsMessage] = field(default_factory=list)
    tables: dict[int, list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    run_ids: dict[int, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))

    def add_bars(self, topic: str, partition: int, offset: int, msg: codec.BarsMessage) -> None:
        """One part of a unit: its ledger row, and its rows unless it is empty."""
        self.ledger_rows.append(
            {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "ingest_run_id": msg.ingest_run_id,
                "source": msg.source,
                "ref": msg.source_file,
                "sha256": msg.unit_sha256,
                "part": msg.part,
                "parts": msg.parts,
                "rows": msg.table.num_rows,
            }
        )
        if msg.table.num_rows:
            self.tables[partition].append(msg.table)
            self.run_ids[partition].append((msg.ingest_run_id, msg.table.num_rows))


class BronzeSink:
    """Writes collected records into the bronze layer (files, ledger, catalog)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.layout = lake.layout(settings)
        self.root = self.layout.kafka_batch(topic)
        self.ledger_path = self.layout.kafka_ledger
        self.bucket_of: dict[str, int] = {}

    def _files_of(self, partition: int) -> list[tuple[Path, int, int]]:
        out = []
        for p in self.root.glob(kafka_part_glob(partition)):
            parsed = kafka_part_range(p.name)
            if parsed:
                out.append((p, parsed[1], parsed[2]))
        return out

    def _read_ledger(self) -> pl.DataFrame:
        if not self.ledger_path.exists():
            return pl.DataFrame(schema=pl.Schema(_LEDGER_SCHEMA))  # (empty_table imports pandas)
        return pl.read_parquet(self.ledger_path)

    def reconcile(self, partition: int, committed: int) -> int:
        """Delete what a dead collector wrote for ``partition`` at or after ``committed``."""
        removed = 0
        with bronze.lock(self.settings):
            for path, start, _end in self._files_of(partition):
                if start >= committed:
                    path.unlink(missing_ok=True)
                    removed += 1
            ledger = self._read_ledger()
            stale = (
                (pl.col("topic") == self.topic)
                & (pl.col("partition") == partition)
                & (pl.col("offset") >= committed)
            )
            if len(ledger) and ledger.select(stale.any()).item():
                lake.write_parquet_atomic(ledger.filter(~stale).to_arrow(), self.ledger_path)
        if removed:
            log.info(
                "partition %d: removed %d uncommitted bronze files (offset >= %d) left by an "
                "interrupted collector",
                partition,
                removed,
                committed,
            )
        return removed

    def write(self, ranges: Ranges) -> Written:
        """Write one flush: per partition and bucket one file, then ledger and catalog."""
        written = Written()
        batch = self._sort_out(ranges, written)
        self._write_files(self._bucket_tables(ranges, batch), written)
        with bronze.lock(self.settings):
            if batch.ledger_rows:
                written.units_activated += self._append_ledger(batch.ledger_rows)
        if batch.instruments:
            with bronze.lock(self.settings):
                for msg in batch.instruments:
                    written.instruments += bronze.merge_instruments(self.settings, msg.table)
        return written

    def _sort_out(self, ranges: Ranges, written: Written) -> _Sorted:
        """The flush's records by kind; a part the ledger already holds is skipped (counted)."""
        with bronze.lock(self.settings):
            ledger = self._read_ledger()
        seen = set(
            ledger.select("ingest_run_id", "source", "ref", "part").iter_rows()
            if len(ledger)
            else ()
        )
        batch = _Sorted()
        for partition, (_start, _end, taken) in sorted(ranges.items()):
            for t in taken:
                msg = t.message
                if isinstance(msg, codec.InstrumentsMessage):
                    batch.instruments.append(msg)
                    continue
                if not isinstance(msg, codec.BarsMessage):
                    continue  # dead-lettered
                ident = (msg.ingest_run_id, msg.source, msg.source_file, msg.part)
                if ident in seen:
                    written.duplicates_skipped += 1
                    continue
                seen.add(ident)
                batch.add_bars(self.topic, partition, t.offset, msg)
                written.rows += msg.table.num_rows
        return batch

    def _bucket_tables(self, ranges: Ranges, batch: _Sorted) -> list[tuple[Path, pa.Table]]:
        """One bronze table per partition and bucket, with the path of its file.

        Straight from the messages' Arrow tables (one symbol each, so each goes to its
        bucket whole), as the direct ingest's ``bronze.BucketWriter`` does.
        """
        jobs: list[tuple[Path, pa.Table]] = []
        buckets = self.settings.lake.buckets
        for partition, parts in sorted(batch.tables.items()):
            start, end, _ = ranges[partition]
            by_bucket: dict[int, list[pa.Table]] = defaultdict(list)
            for table, (run_id, _rows) in zip(parts, batch.run_ids[partition], strict=True):
                for b, piece in bronze.split_by_bucket(table, buckets, self.bucket_of):
                    by_bucket[b].append(bronze.with_pipeline_columns(piece, run_id, b))
            name = kafka_part_name(partition, start, end)
            for b in sorted(by_bucket):
                jobs.append(
                    (lake.bucket_dir(self.root, b) / name, bronze.concat_parts(by_bucket[b]))
                )
        return jobs

    def _write_files(self, jobs: list[tuple[Path, pa.Table]], written: Written) -> None:
        """Each file atomically (temp + rename), in bronze's schema."""
        for i, (path, table) in enumerate(jobs):
            lake.write_parquet_atomic(table, path, self.settings.lake.compression)
            written.files.append(self.layout.relative(path))
            if i == len(jobs) // 2:
                crash_point("during_write")

    def _append_ledger(self, rows: list[dict[str, Any]]) -> int:
        """Append ``rows`` to the ledger (caller holds the lock); returns units activated."""
        ledger = self._read_ledger()  # re-read: another collector may have appended
        new = pl.DataFrame(rows, schema=pl.Schema(_LEDGER_SCHEMA))
        ledger = pl.concat([ledger, new]) if len(ledger) else new
        lake.write_parquet_atomic(ledger.to_arrow(), self.ledger_path)
        return self._activate(ledger, new)

    def _activate(self, ledger: pl.DataFrame, new: pl.DataFrame) -> int:
        """Add catalog entries for units of ``new`` whose parts are now all in the ledger."""
        keys = ["ingest_run_id", "source", "ref", "sha256"]
        touched = new.select(keys).unique()
        complete = (
            ledger.join(touched, on=keys, how="semi")
            .group_by(keys)
            .agg(
                pl.col("part").n_unique().alias("have"),
                pl.col("parts").max().alias("parts"),
                pl.col("rows").sum().alias("rows"),
            )
            .filter(pl.col("have") == pl.col("parts"))
        )
        if complete.is_empty():
            return 0
        now = dt.datetime.now(dt.UTC).isoformat()
        entries = [
            {
                "source": r["source"],
                "ref": r["ref"],
                "sha256": r["sha256"],
                "batch": r["ingest_run_id"],
                "rows": r["rows"],
                "ingested_at": now,
            }
            for r in complete.sort(["ingest_run_id", "ref"]).iter_rows(named=True)
        ]
        return bronze.append_catalog(self.settings, entries, locked=True)

    def rollback(self, files: list[str], partitions: dict[int, int]) -> None:
        """Undo a flush whose commit failed (files and ledger rows; catalog entries are
        re-derived identically when the records are collected again)."""
        for rel in files:
            (self.layout.root / rel).unlink(missing_ok=True)
        for partition, committed in partitions.items():
            self.reconcile(partition, committed)
