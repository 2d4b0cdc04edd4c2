"""The stage functions (ingest, collect, process, load) and the run graph.

Every stage takes the settings and returns a result record; the CLI, the
tests and (later) the Airflow DAGs all call these same functions.

Idempotency, stage by stage:

- ingest remembers every unit it landed in ``bronze/_catalog.parquet``
  (source, ref, sha256, batch). An unchanged file is skipped; a changed file is
  landed again and its newest batch becomes the active one.
- with ``transport=kafka`` ingest publishes the units to Kafka instead
  (``bus.kafka``) and ``collect`` lands them in bronze and the same catalog,
  exactly once (its offsets decide, see ``bus/kafka.py``); process is unchanged.
- process fingerprints its inputs (the active bronze units, as-of date,
  contract and code versions, settings that change output). Same fingerprint
  as the gold layer already holds: nothing to do. Otherwise it rebuilds silver
  and gold deterministically (same inputs -> same rows, same files).
- load compares each gold bucket's checksum with what the warehouse last
  loaded and upserts only changed buckets; the upsert itself changes no row
  whose values are equal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stockbatch import __version__, lake, schema
from stockbatch.settings import Settings
from stockbatch.sources.base import Source, SourceError, SourceUnit

Progress = Callable[[str, int], "ProgressTask"]


class ProgressTask:
    """A no-op progress task; the CLI passes a Rich-backed one."""

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more units done."""

    def close(self) -> None:
        """Finish the task."""


def _no_progress(description: str, total: int) -> ProgressTask:
    return ProgressTask()


class PipelineError(Exception):
    """A failure the user can act on; the message says what to do."""


# ----------------------------------------------------------------------------- results


@dataclass
class IngestResult:
    """What one ingest landed."""

    run_id: str
    source: str
    units_seen: int = 0
    units_ingested: int = 0
    units_skipped: int = 0
    rows: int = 0
    empty_units: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    units: list[dict[str, Any]] = field(default_factory=list)
    instruments: int = 0
    duration_s: float = 0.0
    transport: str = "direct"
    kafka: dict[str, Any] | None = None  # transport=kafka: topic, records, offsets written

    @property
    def changed(self) -> bool:
        """True when anything new was landed."""
        return self.units_ingested > 0 or self.instruments > 0

    def summary(self) -> str:
        """One line for people."""
        if self.kafka is not None:
            head = (
                f"ingest {self.source}: {self.units_ingested} units published to Kafka "
                f"{self.kafka['topic']} ({self.rows:,} rows, {self.kafka['messages']:,} records, "
                "all confirmed)"
            )
        else:
            head = f"ingest {self.source}: {self.units_ingested} units landed ({self.rows:,} rows)"
        parts = [head, f"{self.units_skipped} unchanged skipped"]
        if self.empty_units:
            parts.append(f"{self.empty_units} empty")
        if self.rejected:
            parts.append(f"{len(self.rejected)} REJECTED")
        return ", ".join(parts) + f" in {self.duration_s:.1f}s"


@dataclass
class CollectResult:
    """What one collect took from Kafka into bronze (``bus.kafka.CollectStats`` inside)."""

    run_id: str
    stats: Any  # bus.kafka.CollectStats (imported lazily: confluent-kafka is optional)
    duration_s: float = 0.0

    @property
    def changed(self) -> bool:
        """True when any record was collected."""
        return bool(self.stats.messages)

    @property
    def dead_lettered(self) -> int:
        """Records sent to the dead-letter topic."""
        return int(self.stats.dead_lettered)

    def summary(self) -> str:
        """One line for people."""
        st = self.stats
        ranges = ", ".join(
            f"p{p}:{r['start']}..{r['end']}" for p, r in sorted(st.partitions.items())
        )
        line = (
            f"collect {st.topic}: {st.messages:,} records, {st.rows:,} rows into bronze, "
            f"{st.units_activated:,} units complete"
        )
        if st.dead_lettered:
            line += f", {st.dead_lettered} DEAD-LETTERED to {st.dead_letter_topic}"
        if st.duplicates_skipped:
            line += f", {st.duplicates_skipped} duplicate records skipped"
        if st.reconciled_files:
            line += f", {st.reconciled_files} uncommitted files of an interrupted run replaced"
        return line + f"; offsets {ranges or 'none new'} in {self.duration_s:.1f}s"


@dataclass
class ProcessResult:
    """What one process run produced."""

    run_id: str
    skipped: bool
    fingerprint: str
    counts: dict[str, Any]
    as_of: dt.date
    daily_rows: int = 0
    quarterly_rows: int = 0
    symbols: int = 0
    reused_from: str | None = None
    duration_s: float = 0.0
    winners: dict[str, str] = field(default_factory=dict)
    recomputed: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for people."""
        c = self.counts
        r = self.recomputed
        if self.skipped:
            head = f"process: unchanged since run {self.reused_from} (nothing to do); "
        elif r.get("mode") == "incremental":
            head = (
                f"process (incremental: {r.get('new_rows', 0):,} new rows, "
                f"{r.get('symbols_appended', 0):,} symbols appended, "
                f"{len(r.get('rebuilt_buckets', [])):,} buckets rebuilt): "
            )
        else:
            head = "process: "
        return (
            f"{head}rows in {c.get('rows_in', 0):,} = clean {c.get('rows_clean', 0):,} "
            f"+ quarantined {c.get('rows_quarantined', 0):,} "
            f"+ deduplicated {c.get('rows_deduplicated', 0):,}; "
            f"{self.symbols:,} symbols, {self.quarterly_rows:,} quarterly rows "
            f"in {self.duration_s:.1f}s"
        )


@dataclass
class LoadResult:
    """What one load changed in the warehouse."""

    run_id: str
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    buckets_loaded: int = 0
    buckets_unchanged: int = 0
    duration_s: float = 0.0
    warehouse_skipped: bool = False
    search: dict[str, Any] | None = None
    """The search index sync (``search_sync``), when a search backend is configured."""

    @property
    def rows_changed(self) -> int:
        """Inserted plus updated rows over all tables."""
        return sum(t.get("inserted", 0) + t.get("updated", 0) for t in self.tables.values())

    @property
    def search_stale(self) -> bool:
        """True when the search index could not be brought up to date."""
        return bool(self.search and self.search.get("stale"))

    def summary(self) -> str:
        """One line for people (two with a search index)."""
        if self.warehouse_skipped:
            line = "load: warehouse not touched (--search-only)"
        elif self.rows_changed == 0:
            line = f"load: warehouse already up to date (0 rows changed) in {self.duration_s:.1f}s"
        else:
            per = ", ".join(
                f"{name} +{t.get('inserted', 0):,}/~{t.get('updated', 0):,}"
                for name, t in self.tables.items()
                if t.get("inserted", 0) or t.get("updated", 0)
            )
            line = f"load: {self.rows_changed:,} rows changed ({per}) in {self.duration_s:.1f}s"
        if self.search is None:
            return line
        if self.search_stale:
            return (
                f"{line}\nsearch: index is STALE, OpenSearch was not reachable "
                f"({self.search.get('reason')}); the warehouse is up to date. Run "
                "`stockbatch load --search-only` once it is back."
            )
        return f"{line}\n{self.search.get('summary', 'search: up to date')}"


# ----------------------------------------------------------------------------- helpers


def new_run_id() -> str:
    """A sortable, unique run id: UTC timestamp plus random suffix."""
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def today_utc() -> dt.date:
    """Today's date in UTC (the default as-of)."""
    return dt.datetime.now(dt.UTC).date()


def check_backends(settings: Settings) -> None:
    """Refuse backends this version does not ship yet, with a clear message."""
    missing = []
    if settings.transport not in ("direct", "kafka"):
        missing.append(f"transport={settings.transport}")
    if settings.process.engine == "spark":
        import importlib.util

        if importlib.util.find_spec("pyspark") is None:
            raise PipelineError(
                "engine=spark needs PySpark: install stockbatch with the spark extra "
                "(pip install 'stockbatch[spark]', or run scripts/setup.sh)."
            )
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise PipelineError(
                "engine=spark needs Java 17+: install it (apt-get install "
                "openjdk-17-jre-headless) or set JAVA_HOME."
            )
    _warehouse_urls(settings)  # PostgreSQL: explicit or recorded by `services up`
    if settings.search.kind == "opensearch":
        import importlib.util

        if importlib.util.find_spec("opensearchpy") is None:
            raise PipelineError(
                "search=opensearch needs opensearch-py: install the opensearch extra "
                "(scripts/setup.sh does)."
            )
    if missing:
        raise PipelineError(
            "not available in this version: "
            + ", ".join(missing)
            + ". Use the embedded defaults (--engine polars --transport direct|kafka "
            "--warehouse sqlite --search none)."
        )


def _bronze_root(settings: Settings) -> Path:
    return settings.lake_path / lake.BRONZE / "bars"


def _catalog_path(settings: Settings) -> Path:
    return settings.lake_path / lake.BRONZE / "_catalog.parquet"


_CATALOG_SCHEMA = pa.schema(
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


def read_catalog(settings: Settings) -> pl.DataFrame:
    """The bronze catalog: one row per landed unit version (newest batch is active)."""
    path = _catalog_path(settings)
    if not path.exists():
        # Not Schema.empty_table(): that imports pandas (half a second) on first use.
        return pl.DataFrame(schema=pl.Schema(_CATALOG_SCHEMA))
    cat = pl.read_parquet(path)
    # Catalogs written before a column existed: the column is null there.
    target = pl.Schema(_CATALOG_SCHEMA)
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
def bronze_lock(settings: Settings) -> Iterator[None]:
    """Exclusive lock of the bronze metadata (catalog, Kafka ledger) across processes.

    Collectors running in parallel (and an ingest) update the same catalog; the
    read-modify-write happens under this lock so no update is lost. Not
    re-entrant: a holder passes ``locked=True`` to the helpers below.
    """
    path = settings.lake_path / lake.BRONZE / ".lock"
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
    with contextlib.nullcontext() if locked else bronze_lock(settings):
        catalog = read_catalog(settings)
        new = pl.DataFrame(rows, schema=pl.Schema(_CATALOG_SCHEMA))
        if not catalog.is_empty():
            new = new.join(catalog, on=["source", "ref", "sha256", "batch"], how="anti")
        new = new.unique(subset=["source", "ref", "sha256", "batch"], keep="first")
        if new.is_empty():
            return 0
        merged = pl.concat([catalog, new]) if not catalog.is_empty() else new
        lake.write_parquet_atomic(merged.to_arrow(), _catalog_path(settings))
        return len(new)


# ----------------------------------------------------------------------------- ingest


class _BucketWriter:
    """Buffers landed tables and writes bounded bronze Parquet parts, one per bucket.

    Tables are only collected on ``add``; the bucket and run id columns are
    computed once per flush on the whole buffer (vectorised), which is much
    cheaper than splitting every small file as it arrives.
    """

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.root = _bronze_root(settings) / f"batch={run_id}"
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
        df = pl.from_arrow(pa.concat_tables(self.pending))
        assert isinstance(df, pl.DataFrame)
        for sym in df["symbol"].unique().to_list():
            if sym not in self.bucket_of:
                self.bucket_of[sym] = lake.symbol_bucket(sym, self.buckets)
        df = df.with_columns(
            pl.lit(self.run_id).alias("ingest_run_id"),
            pl.col("symbol").replace_strict(self.bucket_of, return_dtype=pl.Int16).alias("bucket"),
        )
        for (bucket,), part in sorted(
            df.partition_by("bucket", as_dict=True, maintain_order=True).items()
        ):
            b = int(bucket)
            k = self.parts.get(b, 0)
            path = lake.bucket_dir(self.root, b) / f"part-{k:05d}.parquet"
            lake.write_parquet_atomic(
                lake.conform(part, schema.BRONZE_BARS), path, self.compression
            )
            self.files.append(path)
            self.parts[b] = k + 1
        self.pending.clear()
        self.buffered = 0


def ingest(
    settings: Settings,
    source: Source,
    *,
    run_id: str | None = None,
    force: bool = False,
    progress: Progress = _no_progress,
) -> IngestResult:
    """Land a source's units in bronze, skipping units already landed unchanged.

    With ``settings.transport == "kafka"`` the units are published to Kafka
    instead (``stockbatch collect`` lands them); the run fails, and remembers
    nothing, unless every record was confirmed by the broker.
    """
    started = time.perf_counter()
    run_id = run_id or new_run_id()
    result = IngestResult(run_id=run_id, source=source.name, transport=settings.transport)
    catalog = read_catalog(settings)
    active = active_units(settings) if not catalog.is_empty() else catalog
    seen = {(r["source"], r["ref"]): r["sha256"] for r in active.iter_rows(named=True)}
    sizes = {(r["source"], r["ref"]): r["size"] for r in active.iter_rows(named=True)}
    units = list(source.units())
    if not units and not source.allows_no_units:
        raise PipelineError(
            f"{source.name}: found no input to ingest ({source.describe()}). "
            "Check the path or symbols."
        )
    publisher = None
    if settings.transport == "kafka":
        from stockbatch.bus.kafka import UnitPublisher

        publisher = UnitPublisher(settings, run_id)  # connects (bounded wait), makes the topic
        # A unit counts as seen when it is in the lake already, or when a successful
        # run delivered it to this cluster's topic (the collector may not have run yet).
        seen = {**seen, **publisher.published()}
    writer = _BucketWriter(settings, run_id)
    new_entries: list[dict[str, Any]] = []
    task = progress(f"ingest {source.name}", len(units))
    try:
        todo: list[SourceUnit] = []
        for unit in units:
            prior = seen.get((unit.source, unit.ref))
            if not force and unit.sha256 is not None and prior == unit.sha256:
                result.units_seen += 1
                result.units_skipped += 1
                task.advance()
            else:
                todo.append(unit)
        for unit, outcome in source.read_many(todo):
            result.units_seen += 1
            task.advance()
            if isinstance(outcome, SourceError):
                result.rejected.append(
                    {"ref": unit.ref, "source": unit.source, "error": str(outcome)}
                )
                continue
            table = outcome
            key = (unit.source, unit.ref)
            first_new = _appended_lines(unit, seen.get(key), sizes.get(key))
            # Direct ingest lands only the appended lines of a grown file (the catalog
            # chains the versions). Through Kafka the whole file goes, as before.
            delta = first_new is not None and publisher is None
            if delta:
                table = table.filter(pc.greater_equal(table.column("line_no"), first_new))
            n = table.num_rows
            sha = unit.sha256 or _table_sha256(table)
            if n == 0:
                result.empty_units += 1
                if unit.sha256 is None:
                    # An API answer with no rows (e.g. no session since the last fetch)
                    # landed nothing; only files are remembered, so an empty file is
                    # counted once and then skipped while unchanged.
                    continue
            if publisher is not None:
                publisher.publish_unit(unit.source, unit.ref, sha, table)
            elif n:
                writer.add(table)
            result.units_ingested += 1
            result.rows += n
            new_entries.append(
                {
                    "source": unit.source,
                    "ref": unit.ref,
                    "sha256": sha,
                    "batch": run_id,
                    "rows": n,
                    "ingested_at": dt.datetime.now(dt.UTC).isoformat(),
                    "size": unit.size,
                    "extends": seen.get(key) if first_new is not None else None,
                    "first_new_line": first_new,
                    "delta": delta,
                }
            )
            result.units.append({"ref": unit.ref, "source": unit.source, "rows": n, "sha256": sha})
        writer.flush()
        instruments = source.instruments()
        if instruments is not None and instruments.num_rows:
            if publisher is not None:
                # Sent along with changed units only, so a rerun with nothing new
                # publishes nothing at all.
                if result.units_ingested:
                    publisher.publish_instruments(source.name, instruments)
                    result.instruments = instruments.num_rows
            else:
                result.instruments = _merge_instruments(settings, instruments)
        if publisher is not None:
            result.kafka = publisher.finish().to_dict()
    except BaseException:
        if publisher is not None:
            publisher.abort()
        raise
    finally:
        task.close()
    if publisher is None and new_entries:
        # The catalog is written last: a crash before this point leaves orphan
        # bronze files that no catalog entry activates, so a rerun lands them again.
        append_catalog(settings, new_entries)
    result.duration_s = time.perf_counter() - started
    return result


def _appended_lines(unit: SourceUnit, prior_sha: str | None, prior_size: int | None) -> int | None:
    """First new line number when ``unit``'s file is its prior version plus appended lines.

    True when the file's first ``prior_size`` bytes hash to the prior version's
    sha256 and the old last line was complete (ended by a newline in either
    version). Line numbers are 1-based and count ``\n`` like the Kaggle parser.
    """
    if unit.path is None or not prior_sha or not prior_size or not unit.size:
        return None
    if unit.size <= prior_size or unit.sha256 == prior_sha:
        return None
    h = hashlib.sha256()
    newlines = 0
    last = b""
    with unit.path.open("rb") as fh:
        remaining = prior_size
        while remaining:
            block = fh.read(min(remaining, 1 << 20))
            if not block:
                return None
            h.update(block)
            newlines += block.count(b"\n")
            last = block[-1:]
            remaining -= len(block)
        nxt = fh.read(1)
    if h.hexdigest() != prior_sha:
        return None
    if last == b"\n":
        return newlines + 1
    # The old last line had no newline: it is unchanged only if the new file ends it here.
    return newlines + 2 if nxt == b"\n" else None


def _table_sha256(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _instruments_path(settings: Settings) -> Path:
    return settings.lake_path / lake.SILVER / "instruments" / "part-00000.parquet"


def _merge_instruments(settings: Settings, table: pa.Table) -> int:
    """Merge instrument metadata (newest wins); returns how many rows were new or changed."""
    path = _instruments_path(settings)
    new = pl.from_arrow(table.cast(schema.INSTRUMENTS))
    assert isinstance(new, pl.DataFrame)
    new = new.unique(subset="symbol", keep="first")
    old = pl.read_parquet(path) if path.exists() else new.clear()
    changed = len(new.join(old, on=new.columns, how="anti", nulls_equal=True))
    if changed:
        merged = pl.concat([new, old]).unique(subset="symbol", keep="first").sort("symbol")
        lake.write_parquet_atomic(merged.to_arrow(), path, settings.lake.compression)
    return changed


# ----------------------------------------------------------------------------- collect


def collect(
    settings: Settings,
    *,
    run_id: str | None = None,
    group: str | None = None,
    timeout_s: float | None = None,
    join_grace_s: float = 0.0,
) -> CollectResult:
    """Land what the Kafka topic holds in bronze: one bounded batch of the consumer group.

    Reads each assigned partition from its committed offset up to its end offset
    at assignment, writes bronze Parquet and the catalog, and only then commits.
    Several collectors with the same ``group`` split the partitions. Undecodable
    records go to the dead-letter topic and are counted (``dead_lettered``).
    """
    from stockbatch.bus.kafka import collect_to_bronze

    started = time.perf_counter()
    run_id = run_id or new_run_id()
    stats = collect_to_bronze(
        settings, run_id=run_id, group=group, timeout_s=timeout_s, join_grace_s=join_grace_s
    )
    return CollectResult(run_id=run_id, stats=stats, duration_s=time.perf_counter() - started)


# ----------------------------------------------------------------------------- process


def _state_path(settings: Settings) -> Path:
    return settings.lake_path / lake.GOLD / "_state.json"


def _read_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def process_fingerprint(settings: Settings, as_of: dt.date, active: pl.DataFrame) -> str:
    """Hash of everything that decides the silver and gold content."""
    payload = {
        "units": active.select(["source", "ref", "sha256", "batch"]).rows() if len(active) else [],
        "as_of": as_of.isoformat(),
        "feature_set_version": schema.FEATURE_SET_VERSION,
        "code_version": __version__,
        "source_priority": settings.process.source_priority,
        "buckets": settings.lake.buckets,
        "calendar": settings.process.calendar,
        "engine": settings.process.engine,
    }
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()


def _bronze_batches(settings: Settings, active: pl.DataFrame) -> tuple[set[str], set[str]]:
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
    for p in lake.parquet_files(_bronze_root(settings)):
        batch = p.parent.parent.name.removeprefix("batch=")
        file_rows[batch] = file_rows.get(batch, 0) + pq.ParquetFile(p).metadata.num_rows
    whole = {b for b, n in act_rows.items() if n == cat_rows.get(b) == file_rows.get(b, 0)}
    return whole, set(act_rows) - whole


def _read_bronze_bucket(
    settings: Settings,
    bucket: int,
    active: pl.DataFrame,
    batches: tuple[set[str], set[str]] | None = None,
) -> pl.DataFrame:
    """Every active bronze row of one bucket (``batches``: see ``_bronze_batches``)."""
    whole, _ = batches if batches is not None else _bronze_batches(settings, active)
    files = lake.parquet_files(_bronze_root(settings))
    mine = [p for p in files if p.parent.name == f"bucket={bucket:03d}"]
    direct = [p for p in mine if p.parent.parent.name.removeprefix("batch=") in whole]
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
        return pl.DataFrame(schema=lake.polars_schema(schema.BRONZE_BARS))
    return pl.concat(frames).collect()


def process(
    settings: Settings,
    *,
    run_id: str | None = None,
    as_of: dt.date | None = None,
    force: bool = False,
    full: bool = False,
    progress: Progress = _no_progress,
) -> ProcessResult:
    """Validate bronze into silver and compute gold features.

    Incremental by default: only what new bronze rows affect is recomputed (see
    :mod:`stockbatch.processing`); ``full`` (or ``force``) rebuilds everything.
    """
    from stockbatch import processing
    from stockbatch.calendar import SessionCalendar

    started = time.perf_counter()
    run_id = run_id or new_run_id()
    as_of = as_of or today_utc()
    active = active_units(settings)
    if active.is_empty():
        raise PipelineError(
            "nothing to process: the lake has no ingested data yet. "
            "Run `stockbatch ingest --source kaggle --path DIR` first."
        )
    fingerprint = process_fingerprint(settings, as_of, active)
    state = _read_state(_state_path(settings))
    if not (force or full) and state.get("fingerprint") == fingerprint:
        return ProcessResult(
            run_id=run_id,
            skipped=True,
            fingerprint=fingerprint,
            counts=state["counts"],
            as_of=as_of,
            daily_rows=state.get("daily_rows", 0),
            quarterly_rows=state.get("quarterly_rows", 0),
            symbols=state.get("symbols", 0),
            reused_from=state.get("run_id"),
            winners=state.get("winners", {}),
            duration_s=time.perf_counter() - started,
        )

    engine = processing_engine(settings)
    calendar = SessionCalendar(settings.process.calendar, end=as_of + dt.timedelta(days=400))
    ctx = processing.StageContext(
        settings=settings,
        engine=engine,
        run_id=run_id,
        as_of=as_of,
        calendar=calendar,
        progress=progress,
    )
    parts = active_parts(settings)
    batches = _bronze_batches(settings, parts)
    bronze_files = lake.parquet_files(_bronze_root(settings))
    outcome, entries = processing.run_stage(
        ctx,
        state=state,
        active=active,
        parts=parts,
        bronze_files=bronze_files,
        read_bronze=lambda b: _read_bronze_bucket(settings, b, parts, batches),
        full=force or full,
    )
    _check_reconciles(outcome.counts)
    result = ProcessResult(
        run_id=run_id,
        skipped=False,
        fingerprint=fingerprint,
        counts=outcome.counts,
        as_of=as_of,
        daily_rows=outcome.daily_rows,
        quarterly_rows=outcome.quarterly_rows,
        symbols=outcome.symbols,
        winners=outcome.winners,
        duration_s=time.perf_counter() - started,
        recomputed=outcome.recomputed,
    )
    old_sums = state.get("gold_checksums", {}) if entries["recomputed"]["mode"] != "full" else {}
    old_files = state.get("files", {})
    files = processing.snapshot(settings)
    state_doc = {
        **entries,
        "fingerprint": fingerprint,
        "run_id": run_id,
        "counts": outcome.counts,
        "daily_rows": outcome.daily_rows,
        "quarterly_rows": outcome.quarterly_rows,
        "symbols": outcome.symbols,
        "winners": outcome.winners,
        "as_of": as_of.isoformat(),
        "dataset_last_date": outcome.dataset_last.isoformat(),
        "engine": engine.name,
        "gold_checksums": gold_checksums(settings, reuse=old_sums, old=old_files, now=files),
        "files": files,
    }
    lake.atomic_write_bytes(
        _state_path(settings), json.dumps(state_doc, indent=2, sort_keys=True).encode()
    )
    return result


def processing_engine(settings: Settings) -> Any:
    """The feature engine the settings ask for."""
    from stockbatch import processing

    if settings.process.engine == "spark":
        return processing.SparkEngine.for_settings(settings)
    return processing.PolarsEngine()


def _check_reconciles(counts: dict[str, Any]) -> None:
    rows_in = counts.get("rows_in", 0)
    accounted = (
        counts.get("rows_clean", 0)
        + counts.get("rows_quarantined", 0)
        + counts.get("rows_deduplicated", 0)
    )
    if rows_in != accounted:
        raise PipelineError(
            f"row counts do not reconcile: rows_in={rows_in} but clean+quarantined+"
            f"deduplicated={accounted}. This is a bug; please report it with the run manifest."
        )


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
    for p in lake.parquet_files(root / lake.GOLD):
        rel = str(p.relative_to(root))
        known = (reuse or {}).get(rel)
        same = old is not None and now is not None and rel in old and old.get(rel) == now.get(rel)
        out[rel] = known if known and same else lake.file_sha256(p)
    return out


# ----------------------------------------------------------------------------- load


def load(
    settings: Settings,
    *,
    run_id: str | None = None,
    force: bool = False,
    search_only: bool = False,
    progress: Progress = _no_progress,
) -> LoadResult:
    """Upsert the gold layer into the warehouse, then sync the search index.

    The warehouse gets only the gold files that changed since its last load,
    all tables in ONE transaction (a failure or a killed connection leaves the
    previous state). A configured search index is then synced; an unreachable
    node leaves it marked stale without failing the load (see :func:`search_sync`).
    ``search_only``: skip the warehouse (catch a stale index up).
    """
    from stockbatch.warehouse import db, loader

    started = time.perf_counter()
    run_id = run_id or new_run_id()
    state = _read_state(_state_path(settings))
    if not state:
        raise PipelineError("nothing to load: run `stockbatch process` first.")
    result = LoadResult(run_id=run_id)
    if search_only:
        if settings.search.kind == "none":
            raise PipelineError(
                "--search-only needs a search backend: --search opensearch "
                "(or STOCKBATCH_SEARCH__KIND=opensearch)."
            )
        result.warehouse_skipped = True
        result.search = search_sync(settings, run_id=run_id)
        result.duration_s = time.perf_counter() - started
        return result
    urls = _warehouse_urls(settings)
    if urls.loader.startswith("sqlite:///"):
        Path(urls.loader.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    db.migrate(urls.owner)
    engine = db.engine_for(urls.loader)
    where = _safe_url(urls.loader)
    loaded_path = settings.lake_path / lake.GOLD / "_loaded.json"
    loaded = _read_state(loaded_path)
    if loaded.get("warehouse_url") != where:
        loaded = {}
    checksums: dict[str, str] = state["gold_checksums"]
    prior: dict[str, str] = {} if force else loaded.get("checksums", {})

    def add(name: str, stats: Any) -> None:
        t = result.tables.setdefault(name, {"inserted": 0, "updated": 0, "unchanged": 0})
        t["inserted"] += stats.inserted
        t["updated"] += stats.updated
        t["unchanged"] += stats.unchanged

    gold = settings.lake_path / lake.GOLD
    daily_files = lake.parquet_files(gold / "daily_features")
    todo = [
        p
        for p in daily_files
        if prior.get(str(p.relative_to(settings.lake_path)))
        != checksums.get(str(p.relative_to(settings.lake_path)))
    ]
    result.buckets_unchanged = len(daily_files) - len(todo)
    task = progress("load", len(todo) + 2)
    try:
        with loader.run_transaction(engine) as tx:
            inst = _instruments_table(settings)
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
            qpath = gold / "quarterly_features" / "part-00000.parquet"
            quarterly = lake.read_canonical(qpath, schema.QUARTERLY_FEATURES)
            add(
                "quarterly_features",
                tx.load_table("quarterly_features", [quarterly], key=("symbol", "quarter")),
            )
            task.advance()
            quarantine = [
                lake.read_canonical(p, schema.QUARANTINE)
                for p in lake.parquet_files(settings.lake_path / lake.SILVER / "quarantine")
            ]
            add("quarantine", tx.replace_quarantine(quarantine))
            task.advance()
    finally:
        task.close()
    # Only after the commit: a failed load is redone in full by the next one.
    lake.atomic_write_bytes(
        loaded_path,
        json.dumps({"warehouse_url": where, "checksums": checksums, "run_id": run_id}).encode(),
    )
    if settings.search.kind != "none":
        result.search = search_sync(settings, run_id=run_id)
    result.duration_s = time.perf_counter() - started
    return result


def _warehouse_urls(settings: Settings) -> Any:
    """Owner / loader / reader URLs; a missing PostgreSQL endpoint is a usage error."""
    from stockbatch.warehouse import db

    try:
        return db.resolve_urls(settings)
    except db.WarehouseNotConfigured as exc:
        raise PipelineError(str(exc)) from None


def _safe_url(url: str) -> str:
    """A URL fit to store or print: the password masked."""
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def reader_engine(settings: Settings) -> Any:
    """A read-only connection to the warehouse (the reader role on PostgreSQL)."""
    from stockbatch.warehouse import db

    return db.engine_for(_warehouse_urls(settings).reader)


def _search_state_path(settings: Settings) -> Path:
    return settings.lake_path / lake.GOLD / "_search.json"


def search_state(settings: Settings) -> dict[str, Any]:
    """The last search sync: ``stale``, ``reason``, ``run_id``, ``synced_at``."""
    return _read_state(_search_state_path(settings))


def search_sync(settings: Settings, *, run_id: str) -> dict[str, Any]:
    """Make the search index serve the current gold.

    An unreachable node does not fail the load: the record says ``stale`` with
    the reason (also kept in ``gold/_search.json`` and the run manifest) and a
    later ``stockbatch load --search-only`` (or any load) catches up. Documents
    the node rejects are an error (:class:`stockbatch.search.SearchError`).
    """
    from stockbatch import search

    state = _read_state(_state_path(settings))
    if not state:
        raise PipelineError("nothing to index: run `stockbatch process` first.")
    started = time.perf_counter()
    record: dict[str, Any] = {"kind": settings.search.kind, "run_id": run_id}
    try:
        client = search.connect_settings(settings)
        qpath = settings.lake_path / lake.GOLD / "quarterly_features" / "part-00000.parquet"
        stats = search.sync_search(
            client,
            instruments=_instruments_table(settings),
            quarterly=lake.read_canonical(qpath, schema.QUARTERLY_FEATURES),
            daily_files=list(iter_gold_daily(settings)),
            run_id=run_id,
            checksum=state["gold_checksums"],
            **search.load_options(settings.search),
        )
    except search.SearchUnavailable as exc:
        previous = search_state(settings)
        record |= {
            "stale": True,
            "reason": str(exc),
            "stale_since": previous.get("stale_since") or dt.datetime.now(dt.UTC).isoformat(),
        }
    else:
        record |= {
            "stale": False,
            "summary": stats.summary(),
            "indices": {
                name: {
                    "index": s.index,
                    "docs": s.docs_indexed,
                    "unchanged": s.skipped_unchanged,
                    "seconds": round(s.seconds, 3),
                }
                for name, s in stats.indices.items()
            },
            "synced_at": dt.datetime.now(dt.UTC).isoformat(),
        }
    record["seconds"] = round(time.perf_counter() - started, 3)
    lake.atomic_write_bytes(
        _search_state_path(settings), json.dumps(record, indent=2, default=str).encode()
    )
    return record


def _instruments_table(settings: Settings) -> pa.Table:
    """Every symbol in gold, with metadata where a source provided it."""
    path = _instruments_path(settings)
    daily = settings.lake_path / lake.GOLD / "daily_features"
    files = lake.parquet_files(daily)
    syms = (
        pl.scan_parquet(files).select("symbol", "source").unique("symbol").collect()
        if files
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


# ----------------------------------------------------------------------------- run graph


@dataclass
class RunResult:
    """A whole run: its stages and the manifest written for it."""

    run_id: str
    ingest: IngestResult | None
    process: ProcessResult | None
    load: LoadResult | None
    manifest_path: Path | None
    status: str
    duration_s: float
    collect: CollectResult | None = None

    @property
    def changed(self) -> bool:
        """Whether the run changed anything at all."""
        return bool(
            (self.ingest and self.ingest.changed)
            or (self.collect and self.collect.changed)
            or (self.process and not self.process.skipped)
            or (self.load and self.load.rows_changed)
        )


def write_run_manifest(
    settings: Settings,
    *,
    run_id: str,
    command: str,
    started_at: dt.datetime,
    status: str,
    ingest_result: IngestResult | None = None,
    process_result: ProcessResult | None = None,
    load_result: LoadResult | None = None,
    params: dict[str, Any] | None = None,
    error: str | None = None,
    collect_result: CollectResult | None = None,
) -> Path:
    """Record what a run read, produced and counted (``runs/<run_id>.json``)."""
    finished = dt.datetime.now(dt.UTC)
    doc: dict[str, Any] = {
        "run_id": run_id,
        "command": command,
        "status": status,
        "started_at": started_at.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round((finished - started_at).total_seconds(), 3),
        "code_version": __version__,
        "feature_set_version": schema.FEATURE_SET_VERSION,
        "settings": json.loads(settings.model_dump_json()),
        "params": params or {},
        "host": os.uname().nodename,
    }
    if error:
        doc["error"] = error
    if ingest_result is not None:
        r = ingest_result
        doc["ingest"] = {
            "source": r.source,
            "units_seen": r.units_seen,
            "units_ingested": r.units_ingested,
            "units_skipped": r.units_skipped,
            "empty_units": r.empty_units,
            "rows": r.rows,
            "rejected": r.rejected,
            "units": r.units,
            "instruments": r.instruments,
            "transport": r.transport,
        }
        if r.kafka is not None:
            doc["ingest"]["kafka"] = r.kafka
    if collect_result is not None:
        # The offset range per partition ([start, end), committed) is what makes a
        # rerun of the same batch a no-op: the group's committed offsets are past it.
        doc["collect"] = collect_result.stats.to_dict()
    if process_result is not None:
        p = process_result
        doc["process"] = {
            "skipped": p.skipped,
            "reused_from": p.reused_from,
            "fingerprint": p.fingerprint,
            "as_of": p.as_of.isoformat(),
            "engine": settings.process.engine,
            "daily_rows": p.daily_rows,
            "quarterly_rows": p.quarterly_rows,
            "symbols": p.symbols,
            "source_choice": p.winners,
            "recomputed": p.recomputed,
            "gold_checksums": _read_state(_state_path(settings)).get("gold_checksums", {}),
        }
        doc["counts"] = p.counts
    if load_result is not None:
        doc["load"] = {
            "search": load_result.search,
            "warehouse_skipped": load_result.warehouse_skipped,
            "warehouse": settings.warehouse.kind,
            "tables": load_result.tables,
            "buckets_loaded": load_result.buckets_loaded,
            "buckets_unchanged": load_result.buckets_unchanged,
            "rows_changed": load_result.rows_changed,
        }
    path = lake.write_manifest(settings.lake_path, run_id, doc)
    if load_result is not None and not load_result.warehouse_skipped:
        _record_in_warehouse(settings, doc)
    return path


def _record_in_warehouse(settings: Settings, doc: dict[str, Any]) -> None:
    from stockbatch.warehouse import db, loader

    engine = db.engine_for(_warehouse_urls(settings).loader)
    loader.record_run(engine, doc)
    loader.audit(
        engine,
        actor=os.environ.get("USER", "stockbatch"),
        action=doc["command"],
        detail={"run_id": doc["run_id"], "status": doc["status"]},
    )


def run(
    settings: Settings,
    source: Source,
    *,
    as_of: dt.date | None = None,
    force: bool = False,
    full: bool = False,
    progress: Progress = _no_progress,
    command: str = "run",
) -> RunResult:
    """ingest -> [Kafka -> collect ->] process -> load, as one run with one manifest."""
    check_backends(settings)
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    run_id = new_run_id()
    ing = proc = lod = col = None
    try:
        ing = ingest(settings, source, run_id=run_id, force=force, progress=progress)
        if settings.transport == "kafka":
            col = collect(settings, run_id=run_id)
        proc = process(
            settings, run_id=run_id, as_of=as_of, force=force, full=full, progress=progress
        )
        lod = load(settings, run_id=run_id, force=force, progress=progress)
    except Exception as exc:
        write_run_manifest(
            settings,
            run_id=run_id,
            command=command,
            started_at=started_at,
            status="failed",
            ingest_result=ing,
            process_result=proc,
            load_result=None,
            error=str(exc),
            collect_result=col,
        )
        raise
    status = (
        "partial"
        if ing.rejected or (col and col.dead_lettered) or lod.search_stale
        else "succeeded"
    )
    path = write_run_manifest(
        settings,
        run_id=run_id,
        command=command,
        started_at=started_at,
        status=status,
        ingest_result=ing,
        process_result=proc,
        load_result=lod,
        params={"source": source.name, "as_of": (as_of or today_utc()).isoformat()},
        collect_result=col,
    )
    return RunResult(run_id, ing, proc, lod, path, status, time.perf_counter() - t0, col)


def last_manifests(settings: Settings, last: int = 1) -> list[dict[str, Any]]:
    """The newest ``last`` run manifests, newest first."""
    return list(reversed(list(lake.iter_manifests(settings.lake_path))))[:last]


def iter_gold_daily(settings: Settings) -> Iterator[Path]:
    """Gold daily feature files, bucket by bucket."""
    yield from lake.parquet_files(settings.lake_path / lake.GOLD / "daily_features")


def reset_lake(settings: Settings) -> None:
    """Delete the lake (used by `--fresh` demos and tests)."""
    shutil.rmtree(settings.lake_path, ignore_errors=True)


def stored_last_dates(settings: Settings, source: str = "yahoo") -> dict[str, dt.date]:
    """Newest landed date per symbol of one source (for incremental Yahoo fetches)."""
    active = active_parts(settings).filter(pl.col("source") == source)
    files = lake.parquet_files(_bronze_root(settings))
    if active.is_empty() or not files:
        return {}
    keys = active.select(
        pl.col("ref").alias("source_file"), pl.col("batch").alias("ingest_run_id")
    ).lazy()
    df = (
        pl.scan_parquet(files)
        .filter(pl.col("source") == source)
        .join(keys, on=["source_file", "ingest_run_id"], how="semi")
        .select("symbol", pl.col("trade_date").str.to_date("%Y-%m-%d", strict=False))
        .group_by("symbol")
        .agg(pl.col("trade_date").max())
        .drop_nulls()
        .collect()
    )
    return dict(zip(df["symbol"].to_list(), df["trade_date"].to_list(), strict=True))


def run_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The counts of a run manifest, flat (what `stockbatch runs` prints)."""
    counts = doc.get("counts", {})
    return {
        "run_id": doc["run_id"],
        "command": doc.get("command"),
        "status": doc.get("status"),
        "started_at": doc.get("started_at"),
        "duration_s": doc.get("duration_s", 0.0),
        "rows_landed": doc.get("ingest", {}).get("rows", 0),
        "rows_in": counts.get("rows_in", 0),
        "rows_clean": counts.get("rows_clean", 0),
        "rows_quarantined": counts.get("rows_quarantined", 0),
        "rows_deduplicated": counts.get("rows_deduplicated", 0),
        "rows_superseded": counts.get("rows_superseded", 0),
        "reasons": counts.get("reasons", {}),
        "health": counts.get("health", {}),
        "process_skipped": doc.get("process", {}).get("skipped"),
        "rows_changed_in_warehouse": doc.get("load", {}).get("rows_changed"),
        "rejected_inputs": len(doc.get("ingest", {}).get("rejected", [])),
    }


def _write_table(table: pa.Table, path: Path, suffix: str, meta: dict[str, str]) -> None:
    """Write an export atomically; lineage goes into Parquet metadata or a CSV sidecar."""
    import pyarrow.csv as pacsv

    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        md = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in meta.items()}}
        lake.write_parquet_atomic(table.replace_schema_metadata(md), path)
    else:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        lake.atomic_write_bytes(path, sink.getvalue().to_pybytes())
        lake.atomic_write_bytes(
            path.with_name(path.name + ".meta.json"), json.dumps(meta, indent=2).encode()
        )


def _lineage(settings: Settings) -> dict[str, str]:
    state = _read_state(_state_path(settings))
    return {
        "stockbatch.process_run_id": str(state.get("run_id", "")),
        "stockbatch.as_of": str(state.get("as_of", "")),
        "stockbatch.dataset_last_date": str(state.get("dataset_last_date", "")),
        "stockbatch.feature_set_version": str(schema.FEATURE_SET_VERSION),
        "stockbatch.code_version": __version__,
        "stockbatch.label_columns": ",".join(schema.QUARTERLY_LABEL_COLUMNS),
    }


def export_quarterly(
    settings: Settings, path: Path, suffix: str, *, complete_only: bool = False
) -> int:
    """Write the quarterly ML table from the warehouse; returns the row count."""
    from stockbatch.warehouse import queries

    engine = reader_engine(settings)
    _require_loaded(engine)
    table = queries.quarterly_table(engine)
    if complete_only:
        table = table.filter(pc.equal(table.column("q_complete"), True))
    _write_table(table, path, suffix, _lineage(settings))
    return int(table.num_rows)


def export_daily(settings: Settings, path: Path, suffix: str, symbols: list[str] | None) -> int:
    """Write daily bars + features from the warehouse; returns the row count."""
    from stockbatch.warehouse import queries

    engine = reader_engine(settings)
    _require_loaded(engine)
    parts = list(queries.daily_table(engine, symbols))
    table = pa.concat_tables(parts) if parts else schema.DAILY_FEATURES.empty_table()
    if symbols and table.num_rows == 0:
        raise PipelineError(f"no daily rows for {', '.join(symbols)}; check the symbols")
    meta = {k: v for k, v in _lineage(settings).items() if k != "stockbatch.label_columns"}
    _write_table(table, path, suffix, meta)
    return int(table.num_rows)


def _require_loaded(engine: Any) -> None:
    from sqlalchemy import inspect

    if not inspect(engine).has_table("quarterly_features"):
        raise PipelineError(
            "the warehouse is empty: run `stockbatch run` (or `stockbatch load`) first."
        )
