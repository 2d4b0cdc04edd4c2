"""The bronze layer as one component: its catalog, its lock, its bucket writer, its reads.

Both landing paths use it: the direct ingest and the Kafka collector write
parts through :class:`BucketWriter` (or the same bucket rule), add unit
versions with :func:`append_catalog` under :func:`lock`, and the process stage
reads the active rows with :func:`read_bucket`.

The catalog (``bronze/_catalog.parquet``) has one row per landed unit version;
the newest batch of a unit is its active version. A version that only holds a
file's appended lines (``delta``) extends the version it names, recursively.
Its ``sha256`` is a content id: the SHA-256 of the file for a version read
whole, a hash chain (previous id + appended bytes) for a delta
(``sources/versions.py``).

The fingerprint store (``bronze/_fingerprints.parquet``) remembers, per file
unit, how its last read version looked on disk (size, mtime, line count, a
digest of sampled blocks), so the next ingest can skip it or read only its
appended bytes. It is a cache: a missing or stale row only makes the ingest
read that file whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stockbatch import schema
from stockbatch.errors import PipelineError
from stockbatch.lake import files
from stockbatch.lake.layout import (
    batch_of_file,
    bucket_dir,
    layout,
    part_name,
    symbol_bucket,
    with_buckets,
)
from stockbatch.settings import Settings

CATALOG_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("ref", pa.string()),
        ("sha256", pa.string()),
        ("batch", pa.string()),
        ("rows", pa.int64()),
        ("ingested_at", pa.string()),
        # Files only: byte size, and when this version is the previous one plus
        # appended lines, that version's sha256 and the first new line number (so
        # `process` can treat just those lines as new; see incremental.py).
        ("size", pa.int64()),
        ("extends", pa.string()),
        ("first_new_line", pa.int64()),
        # True when the batch holds only those appended lines (direct ingest): the
        # unit's rows are then this batch plus the version it extends, recursively.
        ("delta", pa.bool_()),
    ]
)


FINGERPRINT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("ref", pa.string()),
        ("sha256", pa.string()),  # the content id the fingerprint describes
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("lines", pa.int64()),
        ("sample", pa.string()),
        ("has_header", pa.bool_()),
    ]
)


def _fingerprints_path(settings: Settings) -> Path:
    return layout(settings).catalog.with_name("_fingerprints.parquet")


def read_fingerprints(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """(source, ref) -> the fingerprint row of the file's last read version."""
    path = _fingerprints_path(settings)
    if not path.exists():
        return {}
    try:
        df = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError):
        return {}  # a cache: unreadable means every file is read whole once
    return {(r["source"], r["ref"]): r for r in df.iter_rows(named=True)}


def write_fingerprints(settings: Settings, rows: Iterable[dict[str, Any]]) -> None:
    """Store fingerprints (one per (source, ref): the newest replaces the older one)."""
    new = list(rows)
    if not new:
        return
    with lock(settings):
        path = _fingerprints_path(settings)
        old = list(read_fingerprints(settings).values())
        merged = {(r["source"], r["ref"]): r for r in [*old, *new]}
        df = pl.DataFrame(list(merged.values()), schema=pl.Schema(FINGERPRINT_SCHEMA))
        files.write_parquet_atomic(df.sort("source", "ref").to_arrow(), path)


def read_catalog(settings: Settings) -> pl.DataFrame:
    """The bronze catalog: one row per landed unit version (newest batch is active)."""
    path = layout(settings).catalog
    if not path.exists():
        # Not Schema.empty_table(): that imports pandas (half a second) on first use.
        return pl.DataFrame(schema=pl.Schema(CATALOG_SCHEMA))
    cat = pl.read_parquet(path)
    # Catalogs written before a column existed: the column is null there.
    target = pl.Schema(CATALOG_SCHEMA)
    return cat.with_columns(
        pl.lit(None, dtype).alias(name) for name, dtype in target.items() if name not in cat.columns
    ).select(target.names())


def active_units(settings: Settings) -> pl.DataFrame:
    """The newest landed version of every unit: what the process stage reads."""
    cat = read_catalog(settings)
    if cat.is_empty():
        return cat
    return cat.sort("batch").group_by(["source", "ref"], maintain_order=True).last().sort("ref")


def active_parts(settings: Settings) -> pl.DataFrame:
    """Every landed batch whose rows make up the newest version of its unit.

    That is the newest version's batch and, when it landed only appended lines
    (``delta``), the batches of the versions it extends, back to a full one.
    Same columns as the catalog, oldest part of each unit first.
    """
    cat = read_catalog(settings)
    if cat.is_empty():
        return cat
    if not cat["delta"].fill_null(False).any():
        return active_units(settings)
    keep: list[int] = []
    cat = cat.sort("batch").with_row_index("__i")
    for group in cat.partition_by(["source", "ref"], maintain_order=True):
        entries = group.rows(named=True)
        chain = [entries[-1]]
        while chain[-1]["delta"]:
            base = [e for e in entries if e["sha256"] == chain[-1]["extends"]
                    and e["batch"] < chain[-1]["batch"]]  # fmt: skip
            if not base:
                raise PipelineError(
                    f"bronze catalog: {chain[-1]['ref']} batch {chain[-1]['batch']} appends "
                    "to a version that is not in the catalog; run `stockbatch ingest --force`"
                )
            chain.append(base[-1])
        keep.extend(e["__i"] for e in chain)
    return cat.filter(pl.col("__i").is_in(keep)).drop("__i").sort("ref", "batch")


@contextlib.contextmanager
def lock(settings: Settings) -> Iterator[None]:
    """Exclusive lock of the bronze metadata (catalog, Kafka ledger) across processes.

    Collectors running in parallel (and an ingest) update the same catalog; the
    read-modify-write happens under this lock so no update is lost. Not
    re-entrant: a holder passes ``locked=True`` to the helpers below.
    """
    path = layout(settings).bronze_lock
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_catalog(
    settings: Settings, entries: Iterable[dict[str, Any]], *, locked: bool = False
) -> int:
    """Add unit versions to the bronze catalog (an entry already there is not added again).

    Returns how many entries were new.
    """
    rows = list(entries)
    if not rows:
        return 0
    with contextlib.nullcontext() if locked else lock(settings):
        catalog = read_catalog(settings)
        new = pl.DataFrame(rows, schema=pl.Schema(CATALOG_SCHEMA))
        if not catalog.is_empty():
            new = new.join(catalog, on=["source", "ref", "sha256", "batch"], how="anti")
        new = new.unique(subset=["source", "ref", "sha256", "batch"], keep="first")
        if new.is_empty():
            return 0
        merged = pl.concat([catalog, new]) if not catalog.is_empty() else new
        files.write_parquet_atomic(merged.to_arrow(), layout(settings).catalog)
        return len(new)


class BucketWriter:
    """Buffers landed tables and writes bounded bronze Parquet parts, one per bucket.

    Tables are only collected on ``add``. A flush sorts them into buckets by
    their symbol (a table of one symbol, e.g. one Kaggle file, goes whole; any
    other is split row by row) and writes each bucket's tables straight from
    Arrow, with the run id and bucket as constant columns: measured on the
    Huge sample, converting the whole buffer to Polars, hashing every row's
    symbol and partitioning cost 1.0 s of CPU per million rows, more than the
    write itself.
    """

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.root = layout(settings).bronze_batch(run_id)
        self.run_id = run_id
        self.buckets = settings.lake.buckets
        self.flush_rows = settings.lake.flush_rows
        self.compression = settings.lake.compression
        self.pending: list[pa.Table] = []
        self.buffered = 0
        self.parts: dict[int, int] = {}
        self.bucket_of: dict[str, int] = {}
        self.files: list[Path] = []

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.pending.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        by_bucket: dict[int, list[pa.Table]] = {}
        for table in self.pending:
            for b, part in split_by_bucket(table, self.buckets, self.bucket_of):
                by_bucket.setdefault(b, []).append(part)
        for b in sorted(by_bucket):
            table = concat_parts(by_bucket[b])
            k = self.parts.get(b, 0)
            path = bucket_dir(self.root, b) / part_name(k)
            files.write_parquet_atomic(
                with_pipeline_columns(table, self.run_id, b), path, self.compression
            )
            self.files.append(path)
            self.parts[b] = k + 1
        self.pending.clear()
        self.buffered = 0


def split_by_bucket(
    table: pa.Table, buckets: int, cache: dict[str, int]
) -> list[tuple[int, pa.Table]]:
    """``table``'s rows by bucket, in their order (whole when it holds one symbol, as a
    Kaggle file or a Kafka message does). ``cache``: symbol -> bucket, reused."""
    symbols = table.column("symbol")
    if symbols.null_count == 0 and pc.count_distinct(symbols).as_py() == 1:
        symbol = symbols[0].as_py()
        b = cache.get(symbol)
        if b is None:
            b = cache[symbol] = symbol_bucket(symbol, buckets)
        return [(b, table)]
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    df = with_buckets(df, buckets, cache)
    return [
        (int(bucket), part.drop("bucket").to_arrow())
        for (bucket,), part in sorted(
            df.partition_by("bucket", as_dict=True, maintain_order=True).items()
        )
    ]


def concat_parts(parts: list[pa.Table]) -> pa.Table:
    """One bucket's tables as one; many small ones (a day appended to every file) are
    combined into one chunk per column rather than thousands of tiny ones."""
    table = pa.concat_tables(parts)
    if len(parts) > 1 and table.num_rows < 1000 * len(parts):
        table = table.combine_chunks()
    return table


def with_pipeline_columns(table: pa.Table, run_id: str, bucket: int) -> pa.Table:
    """One bucket's source rows as ``schema.BRONZE_BARS`` (run id and bucket added)."""
    n = table.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        name: table.column(name) for name in table.column_names
    }
    # From buffers: pa.scalar()/pa.array() of Python values import pandas (~0.5 s).
    run = run_id.encode("utf-8")
    offsets = np.arange(n + 1, dtype=np.int32) * len(run)
    columns["ingest_run_id"] = pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(run * n)]
    )
    columns["bucket"] = pa.Array.from_buffers(
        pa.int16(), n, [None, pa.py_buffer(np.full(n, bucket, dtype=np.int16))]
    )
    return pa.table(
        [columns[f.name].cast(f.type) for f in schema.BRONZE_BARS], schema=schema.BRONZE_BARS
    )


def merge_instruments(settings: Settings, table: pa.Table) -> int:
    """Merge instrument metadata (newest wins); returns how many rows were new or changed."""
    path = layout(settings).instruments
    new = pl.from_arrow(table.cast(schema.INSTRUMENTS))
    assert isinstance(new, pl.DataFrame)
    new = new.unique(subset="symbol", keep="first")
    old = pl.read_parquet(path) if path.exists() else new.clear()
    changed = len(new.join(old, on=new.columns, how="anti", nulls_equal=True))
    if changed:
        merged = pl.concat([new, old]).unique(subset="symbol", keep="first").sort("symbol")
        files.write_parquet_atomic(merged.to_arrow(), path, settings.lake.compression)
    return changed


def whole_batches(settings: Settings, active: pl.DataFrame) -> tuple[set[str], set[str]]:
    """(batches whose every landed row is active, batches that are only partly active).

    A batch is wholly active when none of its units was superseded by a newer
    batch and its files hold exactly the rows the catalog lists for it (no orphan
    rows, e.g. of a Kafka unit still missing parts). Those batches are read
    without the row-level filter, which costs more than the read itself.
    """
    catalog = read_catalog(settings)
    cat_rows = dict(catalog.group_by("batch").agg(pl.col("rows").sum()).iter_rows())
    act_rows = dict(active.group_by("batch").agg(pl.col("rows").sum()).iter_rows())
    file_rows: dict[str, int] = {}
    for p in files.parquet_files(layout(settings).bronze_bars):
        batch = batch_of_file(p)
        file_rows[batch] = file_rows.get(batch, 0) + pq.ParquetFile(p).metadata.num_rows
    whole = {b for b, n in act_rows.items() if n == cat_rows.get(b) == file_rows.get(b, 0)}
    return whole, set(act_rows) - whole


def read_bucket(
    settings: Settings,
    bucket: int,
    active: pl.DataFrame,
    batches: tuple[set[str], set[str]] | None = None,
) -> pl.DataFrame:
    """Every active bronze row of one bucket (``batches``: see :func:`whole_batches`)."""
    whole, _ = batches if batches is not None else whole_batches(settings, active)
    folder = bucket_dir(Path(), bucket).name
    mine = [p for p in files.parquet_files(layout(settings).bronze_bars) if p.parent.name == folder]
    direct = [p for p in mine if batch_of_file(p) in whole]
    # Everything else goes through the row filter: partly superseded batches, and
    # folders that are not one catalog batch (the Kafka collector's files, named by
    # topic/partition/offsets, hold rows of several ingest runs).
    filtered = [p for p in mine if p not in direct]
    frames = [pl.scan_parquet(direct)] if direct else []
    if filtered:
        keys = active.select(
            pl.col("ref").alias("source_file"), pl.col("batch").alias("ingest_run_id")
        ).lazy()
        frames.append(
            pl.scan_parquet(filtered).join(keys, on=["source_file", "ingest_run_id"], how="semi")
        )
    if not frames:
        return pl.DataFrame(schema=files.polars_schema(schema.BRONZE_BARS))
    return pl.concat(frames).collect()


def last_dates(settings: Settings, source: str = "yahoo") -> dict[str, dt.date]:
    """Newest landed date per symbol of one source (for incremental Yahoo fetches)."""
    active = active_parts(settings).filter(pl.col("source") == source)
    landed = files.parquet_files(layout(settings).bronze_bars)
    if active.is_empty() or not landed:
        return {}
    keys = active.select(
        pl.col("ref").alias("source_file"), pl.col("batch").alias("ingest_run_id")
    ).lazy()
    df = (
        pl.scan_parquet(landed)
        .filter(pl.col("source") == source)
        .join(keys, on=["source_file", "ingest_run_id"], how="semi")
        .select("symbol", pl.col("trade_date").str.to_date("%Y-%m-%d", strict=False))
        .group_by("symbol")
        .agg(pl.col("trade_date").max())
        .drop_nulls()
        .collect()
    )
    return dict(zip(df["symbol"].to_list(), df["trade_date"].to_list(), strict=True))
