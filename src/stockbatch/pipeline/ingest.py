"""The ingest stage: land a source's units in bronze, or publish them to Kafka."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from stockbatch.errors import PipelineError
from stockbatch.lake import bronze
from stockbatch.results import IngestResult, Progress, ProgressTask, new_run_id, no_progress
from stockbatch.settings import Settings
from stockbatch.sources.base import Source, SourceError, SourceUnit


def ingest(
    settings: Settings,
    source: Source,
    *,
    run_id: str | None = None,
    force: bool = False,
    progress: Progress = no_progress,
) -> IngestResult:
    """Land a source's units in bronze, skipping units already landed unchanged.

    With ``settings.transport == "kafka"`` the units are published to Kafka
    instead (``stockbatch collect`` lands them); the run fails, and remembers
    nothing, unless every record was confirmed by the broker.
    """
    started = time.perf_counter()
    landing = _Landing(settings, source.name, run_id or new_run_id())
    units = _list_units(source, progress)
    if not units and not source.allows_no_units:
        raise PipelineError(
            f"{source.name}: found no input to ingest ({source.describe()}). "
            "Check the path or symbols."
        )
    task = progress(f"ingest {source.name}", len(units))
    try:
        landing.connect()
        todo = []
        for unit in units:
            if landing.unchanged(unit, force):
                task.advance()
            else:
                todo.append(unit)
        for unit, outcome in source.read_many(todo):
            task.advance()
            landing.land(unit, outcome)
        landing.land_instruments(source)
        landing.finish()
    except BaseException:
        landing.abort()
        raise
    finally:
        task.close()
    landing.result.duration_s = time.perf_counter() - started
    return landing.result


def _list_units(source: Source, progress: Progress) -> list[SourceUnit]:
    """The source's units; a scan that runs long (thousands of entries) gets a running
    count as a progress line (a short one shows none)."""
    scan: ProgressTask | None = None
    seen = 0

    def on_scan(entries: int, found: int) -> None:
        nonlocal scan, seen
        if scan is None and entries >= LONG_SCAN:
            scan = progress(f"scan {source.name}", 0)
        if scan is not None:
            scan.advance(entries - seen)
            seen = entries

    try:
        return list(source.units(on_scan=on_scan))
    finally:
        if scan is not None:
            scan.close()


LONG_SCAN = 1000
"""Entries looked at before a folder scan shows its progress line."""


class _Landing:
    """One ingest's bookkeeping: what is already landed, the writer or publisher, the
    catalog entries of what this run lands (written last)."""

    def __init__(self, settings: Settings, source: str, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.result = IngestResult(run_id=run_id, source=source, transport=settings.transport)
        catalog = bronze.read_catalog(settings)
        active = bronze.active_units(settings) if not catalog.is_empty() else catalog
        rows = list(active.iter_rows(named=True))
        self.seen = {(r["source"], r["ref"]): r["sha256"] for r in rows}
        self.sizes = {(r["source"], r["ref"]): r["size"] for r in rows}
        self.publisher: Any = None
        self.writer = bronze.BucketWriter(settings, run_id)
        self.entries: list[dict[str, Any]] = []

    def connect(self) -> None:
        """With Kafka: connect (bounded wait), make the topic, learn what it holds."""
        if self.settings.transport != "kafka":
            return
        from stockbatch.bus.producer import UnitPublisher

        self.publisher = UnitPublisher(self.settings, self.run_id)
        # A unit counts as seen when it is in the lake already, or when a successful
        # run delivered it to this cluster's topic (the collector may not have run yet).
        self.seen = {**self.seen, **self.publisher.published()}

    def unchanged(self, unit: SourceUnit, force: bool) -> bool:
        """True (and counted as skipped) when the unit is landed already, unchanged."""
        prior = self.seen.get((unit.source, unit.ref))
        if force or unit.sha256 is None or prior != unit.sha256:
            return False
        self.result.units_seen += 1
        self.result.units_skipped += 1
        return True

    def land(self, unit: SourceUnit, outcome: pa.Table | SourceError) -> None:
        """Land (or publish) one read unit, or record why it was rejected."""
        result = self.result
        result.units_seen += 1
        if isinstance(outcome, SourceError):
            result.rejected.append({"ref": unit.ref, "source": unit.source, "error": str(outcome)})
            return
        table = outcome
        key = (unit.source, unit.ref)
        first_new = _appended_lines(unit, self.seen.get(key), self.sizes.get(key))
        # Direct ingest lands only the appended lines of a grown file (the catalog
        # chains the versions). Through Kafka the whole file goes, as before.
        delta = first_new is not None and self.publisher is None
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
                return
        if self.publisher is not None:
            self.publisher.publish_unit(unit.source, unit.ref, sha, table)
        elif n:
            self.writer.add(table)
        result.units_ingested += 1
        result.rows += n
        self.entries.append(
            {
                "source": unit.source,
                "ref": unit.ref,
                "sha256": sha,
                "batch": self.run_id,
                "rows": n,
                "ingested_at": dt.datetime.now(dt.UTC).isoformat(),
                "size": unit.size,
                "extends": self.seen.get(key) if first_new is not None else None,
                "first_new_line": first_new,
                "delta": delta,
            }
        )
        result.units.append({"ref": unit.ref, "source": unit.source, "rows": n, "sha256": sha})

    def land_instruments(self, source: Source) -> None:
        """The source's instrument metadata: merged in silver, or published."""
        self.writer.flush()
        instruments = source.instruments()
        if instruments is None or not instruments.num_rows:
            return
        if self.publisher is None:
            self.result.instruments = bronze.merge_instruments(self.settings, instruments)
        elif self.result.units_ingested:
            # Sent along with changed units only, so a rerun with nothing new
            # publishes nothing at all.
            self.publisher.publish_instruments(source.name, instruments)
            self.result.instruments = instruments.num_rows

    def finish(self) -> None:
        """Confirm every Kafka delivery, or write the catalog entries (always last)."""
        if self.publisher is not None:
            self.result.kafka = self.publisher.finish().to_dict()
        elif self.entries:
            # The catalog is written last: a crash before this point leaves orphan
            # bronze files that no catalog entry activates, so a rerun lands them again.
            bronze.append_catalog(self.settings, self.entries)

    def abort(self) -> None:
        """Give up: nothing published is remembered."""
        if self.publisher is not None:
            self.publisher.abort()


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
