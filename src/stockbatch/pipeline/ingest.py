"""The ingest stage: land a source's units in bronze, or publish them to Kafka."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import replace
from typing import Any

import pyarrow as pa

from stockbatch.errors import PipelineError
from stockbatch.lake import bronze
from stockbatch.results import IngestResult, Progress, ProgressTask, new_run_id, no_progress
from stockbatch.settings import Settings
from stockbatch.sources.base import Source, SourceError, SourceUnit
from stockbatch.sources.versions import Fingerprint, Prior, UnitVersion

log = logging.getLogger(__name__)


def ingest(
    settings: Settings,
    source: Source,
    *,
    run_id: str | None = None,
    force: bool = False,
    verify: bool = False,
    progress: Progress = no_progress,
) -> IngestResult:
    """Land a source's units in bronze, skipping units already landed unchanged.

    A file is compared with its landed version's fingerprint (size, mtime, sampled
    blocks; ``sources/versions.py``): unchanged files are skipped without being
    read, and a grown file lands only its appended lines, read alone. ``verify``
    reads and hashes every file in full instead (a changed middle that sampling
    missed is then landed as a new version); ``force`` re-lands every unit whole.

    With ``settings.transport == "kafka"`` the units are published to Kafka
    instead (``stockbatch collect`` lands them), whole files as before; the run
    fails, and remembers nothing, unless every record was confirmed by the broker.
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
        jobs = [(unit, landing.prior(unit)) for unit in units]
        for unit, outcome in source.read_versions(
            jobs, tail=landing.publisher is None, verify=verify, force=force
        ):
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
    catalog entries and fingerprints of what this run lands (written last)."""

    def __init__(self, settings: Settings, source: str, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.result = IngestResult(run_id=run_id, source=source, transport=settings.transport)
        catalog = bronze.read_catalog(settings)
        # Every landed part of each active version, base first: a file read whole is
        # checked against them (its bytes must start with the active version).
        self.chains: dict[tuple[str, str], tuple[tuple[str, int | None], ...]] = {}
        if not catalog.is_empty():
            try:
                parts = bronze.active_parts(settings)
            except PipelineError:  # a broken chain: check against the newest version only
                parts = bronze.active_units(settings)
            for r in parts.iter_rows(named=True):
                key = (r["source"], r["ref"])
                link = (r["sha256"], r["size"])
                self.chains[key] = (*self.chains.get(key, ()), link) if r["delta"] else (link,)
        self.seen = {key: chain[-1][0] for key, chain in self.chains.items()}
        self.fingerprints = bronze.read_fingerprints(settings)
        self.publisher: Any = None
        self.writer = bronze.BucketWriter(settings, run_id)
        self.entries: list[dict[str, Any]] = []
        self.new_fingerprints: list[dict[str, Any]] = []
        self.bytes_read = 0

    def connect(self) -> None:
        """With Kafka: connect (bounded wait), make the topic, learn what it holds."""
        if self.settings.transport != "kafka":
            return
        from stockbatch.bus.producer import UnitPublisher

        self.publisher = UnitPublisher(self.settings, self.run_id)
        # A unit counts as seen when it is in the lake already, or when a successful
        # run delivered it to this cluster's topic (the collector may not have run yet).
        self.seen = {**self.seen, **self.publisher.published()}

    def prior(self, unit: SourceUnit) -> Prior | None:
        """What the lake knows of a file unit's landed version (None: new, or not a file)."""
        key = (unit.source, unit.ref)
        sha = self.seen.get(key)
        if unit.path is None or sha is None:
            return None
        row = self.fingerprints.get(key)
        fp = None
        if row is not None and row["sha256"] == sha:
            fp = Fingerprint(
                row["size"], row["mtime_ns"], row["lines"], row["sample"], row["has_header"]
            )
        chain = self.chains.get(key)
        if chain is None or chain[-1][0] != sha:  # published to Kafka, not collected yet
            chain = ((sha, None),)
        if chain[-1][1] is None and fp is not None:  # the collector records no size
            chain = (*chain[:-1], (sha, fp.size))
        return Prior(sha, chain, fp)

    def land(self, unit: SourceUnit, outcome: UnitVersion | SourceError) -> None:
        """Land (or publish) one read unit, or record why it was rejected."""
        result = self.result
        result.units_seen += 1
        if isinstance(outcome, SourceError):
            result.rejected.append({"ref": unit.ref, "source": unit.source, "error": str(outcome)})
            return
        version = outcome
        self.bytes_read += version.bytes_read
        key = (unit.source, unit.ref)
        if version.kind == "unchanged" or version.table is None:
            result.units_skipped += 1
            self._remember(key, version)  # e.g. a new mtime: skipped unread next time
            return
        if version.changed_history:
            log.warning("%s: the file no longer starts with its landed version: re-landed whole",
                        unit.ref)  # fmt: skip
        table = version.table
        n = table.num_rows
        sha = version.sha256 or _table_sha256(table)
        if n == 0:
            result.empty_units += 1
            if unit.path is None:
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
        fp = version.fingerprint
        self.entries.append(
            {
                "source": unit.source,
                "ref": unit.ref,
                "sha256": sha,
                "batch": self.run_id,
                "rows": n,
                "ingested_at": dt.datetime.now(dt.UTC).isoformat(),
                "size": fp.size if fp is not None else unit.size,
                "extends": version.extends,
                "first_new_line": version.first_new_line,
                "delta": version.kind == "tail",
            }
        )
        self._remember(key, replace(version, sha256=sha))
        landed = {"ref": unit.ref, "source": unit.source, "rows": n, "sha256": sha}
        if unit.path is not None:
            landed |= {"read": version.kind, "bytes_read": version.bytes_read}
            if version.changed_history:
                landed["changed_history"] = True
        result.units.append(landed)

    def _remember(self, key: tuple[str, str], version: UnitVersion) -> None:
        """Queue the fingerprint of a file's version read now (stored by ``finish``)."""
        fp = version.fingerprint
        if fp is None or version.sha256 is None:
            return
        old = self.fingerprints.get(key)
        row = {"source": key[0], "ref": key[1], "sha256": version.sha256, **vars(fp)}
        if old != row:
            self.new_fingerprints.append(row)

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
        """Confirm every Kafka delivery, or write the catalog entries (always last),
        then the fingerprints (a cache: lost, they only cost a whole read)."""
        if self.publisher is not None:
            self.result.kafka = self.publisher.finish().to_dict()
        elif self.entries:
            # The catalog is written last: a crash before this point leaves orphan
            # bronze files that no catalog entry activates, so a rerun lands them again.
            bronze.append_catalog(self.settings, self.entries)
        # After the catalog: a fingerprint names a content id, and is only used
        # when that id is the unit's landed version.
        bronze.write_fingerprints(self.settings, self.new_fingerprints)
        log.info("ingest read %d bytes of %d file(s)", self.bytes_read, self.result.units_seen)

    def abort(self) -> None:
        """Give up: nothing published is remembered."""
        if self.publisher is not None:
            self.publisher.abort()


def _table_sha256(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
