"""The record each stage returns, and what every stage shares: run ids and progress.

One result record per stage (ingest, collect, process, load) and one for a
whole run; the CLI, the run record (:mod:`stockbatch.runs`) and later the API
and the DAGs read these.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Progress = Callable[[str, int], "ProgressTask"]


class ProgressTask:
    """A no-op progress task; the CLI passes a Rich-backed one."""

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more units done."""

    def close(self) -> None:
        """Finish the task."""


def no_progress(description: str, total: int) -> ProgressTask:
    return ProgressTask()


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
    """What one collect took from Kafka into bronze (``bus.collector.CollectStats`` inside)."""

    run_id: str
    stats: Any  # bus.collector.CollectStats (imported lazily: confluent-kafka is optional)
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
        elif r.get("reason"):
            head = f"process (full rebuild: {r['reason']}): "
        else:
            head = "process: "
        line = (
            f"{head}rows in {c.get('rows_in', 0):,} = clean {c.get('rows_clean', 0):,} "
            f"+ quarantined {c.get('rows_quarantined', 0):,} "
            f"+ deduplicated {c.get('rows_deduplicated', 0):,}; "
            f"{self.symbols:,} symbols, {self.quarterly_rows:,} quarterly rows "
            f"in {self.duration_s:.1f}s"
        )
        reasons = {k: v for k, v in c.get("reasons", {}).items() if v}
        if not reasons:
            return line
        # Counts per reason count reasons: one row can carry several (they add up to more).
        per = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
        return f"{line}\nquarantine reasons (one row can carry several): {per}"


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
        """Inserted, updated and deleted rows over all tables."""
        return sum(
            t.get("inserted", 0) + t.get("updated", 0) + t.get("deleted", 0)
            for t in self.tables.values()
        )

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
                + (f"/-{t['deleted']:,}" if t.get("deleted") else "")
                for name, t in self.tables.items()
                if t.get("inserted", 0) or t.get("updated", 0) or t.get("deleted", 0)
            )
            line = f"load: {self.rows_changed:,} rows changed ({per}) in {self.duration_s:.1f}s"
        if self.search is None:
            return line
        if self.search_stale:
            return (
                f"{line}\nsearch: index is STALE, the search node was not reachable "
                f"({self.search.get('reason')}); the warehouse is up to date. Run "
                "`stockbatch load --search-only` once it is back."
            )
        return f"{line}\n{self.search.get('summary', 'search: up to date')}"


def new_run_id() -> str:
    """A sortable, unique run id: UTC timestamp plus random suffix."""
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def today_utc() -> dt.date:
    """Today's date in UTC (the default as-of)."""
    return dt.datetime.now(dt.UTC).date()


@dataclass
class RunResult:
    """A run (a whole ``run`` or one stage command): its stages' results and its record.

    The status is decided by :func:`stockbatch.runs.status_of` when the run is
    recorded; ``manifest_path`` is where its manifest was written.
    """

    run_id: str
    command: str = "run"
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    params: dict[str, Any] = field(default_factory=dict)
    ingest: IngestResult | None = None
    collect: CollectResult | None = None
    process: ProcessResult | None = None
    load: LoadResult | None = None
    status: str = "running"
    error: str | None = None
    manifest_path: Path | None = None
    duration_s: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether the run changed anything at all."""
        return bool(
            (self.ingest and self.ingest.changed)
            or (self.collect and self.collect.changed)
            or (self.process and not self.process.skipped)
            or (self.load and self.load.rows_changed)
        )
