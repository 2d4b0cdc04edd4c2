"""The whole process stage as one Spark application: bronze Parquet in, the lake layout out.

:func:`process_lake` reads the bronze files itself, validates with
:mod:`stockbatch.quality.spark`, computes the features with
:mod:`stockbatch.features.spark`, and writes silver and gold file for file as
the Polars path does (why workers write the files: docs/design/spark.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from stockbatch import lake, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.lake.layout import FIRST_PART, LakeLayout, bucket_dir, symbol_bucket
from stockbatch.process.spark_session import JAVA_HINT, SparkUnavailableError
from stockbatch.process.state import DATE, SYMBOL, TAIL_SCHEMA, Totals

_ROW = "__row"


def process_lake(
    spark: Any,
    layout: LakeLayout,
    *,
    bronze_files: list[str],
    active_keys: list[tuple[str, str]] | None,
    as_of: dt.date,
    calendar: SessionCalendar,
    source_priority: list[str],
    buckets: int,
    compression: str,
    with_tails: bool = False,
) -> Totals:
    """Bronze -> silver -> gold for the whole lake below ``layout``, in Spark.

    Reads the bronze Parquet ``bronze_files`` directly; ``active_keys``: keep only
    rows whose ``(source_file, ingest_run_id)`` is listed (None: every row).
    Writes silver bars, quarantine and gold daily as one ``FIRST_PART`` per bucket
    (buckets are the bronze rows' ``bucket``) and the quarterly table, rows sorted
    and typed as the Polars path writes them; ``with_tails`` also writes the
    incremental update's tails. The counts have the structure and values of the
    Polars path's summed per-bucket counts; ``symbols`` counts the winners.

    Spark jobs: one pass validates and counts (the flagged rows are persisted);
    silver, quarantine and daily are each one shuffle-by-bucket write; the
    quarterly table reads the daily files just written back (cheaper than
    keeping the daily rows cached) and is written by the driver (one small file).
    """
    from stockbatch.quality import spark as spark_quality

    bronze = _read_bronze(spark, bronze_files, active_keys)
    sessions = calendar.sessions.to_list()
    work = spark_quality.flagged(bronze, as_of=as_of).persist()
    write = _BucketLayers(layout, buckets, compression)
    try:
        rows = [r.asDict() for r in spark_quality.counts_frame(work, sessions).collect()]
        summary = spark_quality.summarize(rows, with_calendar=True, source_priority=source_priority)
        per_bucket = spark_quality.summarize_buckets(
            rows,
            lambda s: symbol_bucket(s, buckets) if s is not None else 0,
            range(buckets),
            source_priority=source_priority,
        )
        clean = spark_quality.clean_rows(work, summary.losers, extra=["bucket"])
        write.silver(clean, spark_quality.quarantine_rows(work, extra=["bucket"]))
        daily = _daily_with_buckets(spark, clean, rows, summary.winners, with_tails)
        daily_files = write.daily(daily, with_tails=with_tails)
    finally:
        work.unpersist()
    dataset_last = summary.last_date or as_of
    daily_rows = summary.counts["rows_clean"] - summary.counts["rows_superseded"]
    quarterly = _quarterly_table(spark, daily_files, sessions, dataset_last, daily_rows)
    lake.write_parquet_atomic(
        lake.conform(quarterly, schema.QUARTERLY_FEATURES), layout.gold_quarterly, compression
    )
    return Totals(
        counts=summary.counts,
        bucket_counts={str(b): s.counts for b, s in per_bucket.items()},
        winners=summary.winners,
        daily_rows=daily_rows,
        quarterly_rows=quarterly.height,
        symbols=len(summary.winners),
        dataset_last=dataset_last,
    )


def _read_bronze(
    spark: Any, bronze_files: list[str], active_keys: list[tuple[str, str]] | None
) -> Any:
    """The bronze rows of the active units, partitioned by symbol."""
    from pyspark.sql import functions as F

    from stockbatch.quality import spark as spark_quality

    if not bronze_files:
        raise ValueError("process_lake: no bronze files")
    try:
        spark.sparkContext.defaultParallelism  # noqa: B018 - fails fast on a dead session
    except Exception as e:
        raise SparkUnavailableError(f"the Spark session is not usable ({e}); {JAVA_HINT}") from e
    bronze = spark.read.schema(spark_quality.BRONZE_SPARK).parquet(*bronze_files)
    if active_keys is not None:
        keys = spark.createDataFrame(
            list(active_keys), "source_file string, ingest_run_id string"
        ).distinct()
        bronze = bronze.join(F.broadcast(keys), ["source_file", "ingest_run_id"], "left_semi")
    # One shuffle by symbol: the duplicate window, the jump window and the counts group
    # by keys that include the symbol, so they all reuse this partitioning.
    return bronze.repartition(SYMBOL)


def _daily_with_buckets(
    spark: Any, clean: Any, rows: list[dict[str, Any]], winners: dict[str, str], state: bool
) -> Any:
    """Daily features of the live (non-superseded) clean rows, with each symbol's bucket
    (``rows``: the counts rows, which carry the bucket of each clean (symbol, source))."""
    from pyspark.sql import functions as F

    from stockbatch.features import spark as spark_features

    symbol_buckets = [
        (r["symbol"], int(r["bucket"]))
        for r in rows
        if r["rows_clean"] and winners.get(r["symbol"]) == r["source"]
    ]
    bucket_of = spark.createDataFrame(
        sorted(set(symbol_buckets)), "symbol string, bucket short"
    ).dropDuplicates([SYMBOL])
    live = clean.filter(~F.col("superseded"))
    return spark_features.compute_daily(live, with_state=state).join(
        F.broadcast(bucket_of), SYMBOL, "left"
    )


class _BucketLayers:
    """The bucketed layers of one run of the job (silver bars, quarantine, gold daily)."""

    def __init__(self, layout: LakeLayout, buckets: int, compression: str) -> None:
        self.layout = layout
        self.buckets = buckets
        self.compression = compression
        self.written: list[Path] = []

    def silver(self, clean: Any, quarantine: Any) -> None:
        from pyspark.sql import functions as F

        from stockbatch.quality.rules import QUARANTINE_ORDER, SILVER_ORDER

        layout = self.layout
        self._write(clean, layout.silver_bars, schema.SILVER_BARS,
                    [F.col(c).asc() for c in SILVER_ORDER])  # fmt: skip
        order = [F.col(c).asc_nulls_last() for c in (*QUARANTINE_ORDER, _ROW)]
        self._write(quarantine, layout.quarantine, schema.QUARANTINE, order)
        _replace_layer(layout.silver_bars, self.written)
        _replace_layer(layout.quarantine, self.written)

    def daily(self, daily: Any, *, with_tails: bool) -> list[Path]:
        from pyspark.sql import functions as F

        root = self.layout.gold_daily
        tails = self.layout.tails if with_tails else None
        order = [F.col(SYMBOL).asc(), F.col(DATE).asc()]
        files = self._write(daily, root, schema.DAILY_FEATURES, order, tails)
        _replace_layer(root, self.written)
        if tails is not None:
            # Each bucket's tail is now its one FIRST_PART: the parts earlier updates
            # appended hold rows it already has (and buckets beyond ``buckets`` go).
            _replace_layer(tails, [bucket_dir(tails, b) / FIRST_PART for b in range(self.buckets)])
        return files

    def _write(
        self, df: Any, root: Path, target: Any, order: list[Any], tails: Path | None = None
    ) -> list[Path]:
        files = _write_buckets(
            df,
            root=root,
            target=target,
            order=order,
            buckets=self.buckets,
            compression=self.compression,
            tail_root=tails,
        )
        self.written += files
        return files


def _bucket_writer(
    root: Path, target: Any, compression: str, tail_root: Path | None = None
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """``mapInArrow`` function: writes the rows of each bucket (contiguous in its partition,
    sorted) to its ``bucket=NNN/FIRST_PART`` under ``root`` with the Polars path's writer.

    ``tail_root``: also write each bucket's incremental-update tail there (daily rows
    with the carried state columns; :func:`stockbatch.process.state.tail_of`).
    """

    def write(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from stockbatch.process.state import tail_of

        pending: list[Any] = []
        current: int | None = None

        def flush() -> Any:
            table = pa.Table.from_batches(pending)
            frame = pl.from_arrow(table.drop_columns(["bucket"]))
            assert isinstance(frame, pl.DataFrame)
            path = bucket_dir(root, int(current or 0)) / FIRST_PART
            lake.write_parquet_atomic(lake.conform(frame, target), path, compression)
            if tail_root is not None:
                tail = bucket_dir(tail_root, int(current or 0)) / FIRST_PART
                lake.write_parquet_atomic(tail_of(frame), tail, compression)
            return pa.RecordBatch.from_pydict(
                {"bucket": [current], "path": [str(path)], "rows": [table.num_rows]},
                schema=pa.schema([("bucket", pa.int32()), ("path", pa.string()),
                                  ("rows", pa.int64())]),
            )  # fmt: skip

        for batch in batches:
            if batch.num_rows == 0:
                continue
            buckets = batch.column("bucket").to_pylist()
            start = 0
            for i in range(1, len(buckets) + 1):
                if i == len(buckets) or buckets[i] != buckets[start]:
                    if current is not None and buckets[start] != current:
                        yield flush()
                        pending = []
                    current = buckets[start]
                    pending.append(batch.slice(start, i - start))
                    start = i
        if pending:
            yield flush()

    return write


def _write_buckets(
    df: Any,
    *,
    root: Path,
    target: Any,
    order: Sequence[Any],
    buckets: int,
    compression: str,
    tail_root: Path | None = None,
) -> list[Path]:
    """Write ``df`` (with a ``bucket`` column) as one sorted file per bucket under ``root``.

    The rows are shuffled by bucket (each bucket in one task), sorted within
    partitions, and each task writes its buckets with ``lake.write_parquet_atomic``,
    bounded by one bucket's rows. Needs a filesystem shared by driver and
    executors. Buckets without rows get an empty file, as in the Polars path.
    """
    from pyspark.sql import functions as F

    out = (
        df.repartition(max(1, buckets), "bucket")
        .sortWithinPartitions(F.col("bucket"), *order)
        .mapInArrow(
            _bucket_writer(root, target, compression, tail_root),
            "bucket int, path string, rows long",
        )
        .collect()
    )
    written = {int(r["bucket"]): Path(r["path"]) for r in out}
    empty = pl.DataFrame(schema=lake.polars_schema(target))
    for b in range(buckets):
        if b not in written:
            path = bucket_dir(root, b) / FIRST_PART
            lake.write_parquet_atomic(empty, path, compression)
            written[b] = path
            if tail_root is not None:
                tail = pl.DataFrame(schema=TAIL_SCHEMA)
                lake.write_parquet_atomic(tail, bucket_dir(tail_root, b) / FIRST_PART, compression)
    return [written[b] for b in sorted(written)]


def _replace_layer(root: Path, written: Iterable[Path]) -> None:
    """Remove the layer's files this run did not write (e.g. buckets that vanished)."""
    keep = set(written)
    for p in lake.parquet_files(root):
        if p not in keep:
            p.unlink()


def _quarterly_table(
    spark: Any,
    daily_files: list[Path],
    sessions: Sequence[dt.date],
    dataset_last: dt.date,
    daily_rows: int,
) -> pl.DataFrame:
    """The quarterly table (sorted by symbol, quarter) from the daily files."""
    from stockbatch.features import spark as spark_features
    from stockbatch.quality import spark as spark_quality

    if daily_rows == 0:
        return pl.DataFrame(schema=lake.polars_schema(schema.QUARTERLY_FEATURES))
    daily = spark.read.schema(spark_quality.spark_schema(schema.DAILY_FEATURES)).parquet(
        *[str(p) for p in daily_files]
    )
    q = pl.from_arrow(spark_features.compute_quarterly(daily, sessions, dataset_last).toArrow())
    assert isinstance(q, pl.DataFrame)
    return q.sort("symbol", "quarter")
