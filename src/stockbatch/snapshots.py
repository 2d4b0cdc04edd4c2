"""Immutable, versioned snapshots of the quarterly ML table, one closed quarter at a time.

The ML application reads a quarter's table from a snapshot, never from the live
warehouse, so what a model was trained on can be found again byte for byte::

    $STOCKBATCH_HOME/exports/quarterly/<quarter>/<version>.parquet   the rows (read-only, 0400)
    $STOCKBATCH_HOME/exports/quarterly/<quarter>/<version>.json      its manifest (read-only, 0400)
    $STOCKBATCH_HOME/exports/quarterly/<quarter>/latest.json         the current version
    $STOCKBATCH_HOME/exports/quarterly/<quarter>/.lock               writers of the quarter

``<version>`` is the id of the run that wrote it (a stockbatch run id, or the
Airflow run id of the quarterly DAG). The rules:

- a quarter is snapshotted only once it is closed (:func:`quarter_closed`);
- the rows are exactly those of ``stockbatch export quarterly`` for that quarter
  (:func:`stockbatch.export.quarterly_rows`), ordered by symbol, written with
  fixed Parquet options and no time or run id inside the file: the same rows give
  the same bytes;
- a version is never replaced nor deleted: files are written to a temporary name
  and hard-linked into place, which fails if the name exists;
- writing a quarter again whose content has the SHA-256 of its latest version
  writes nothing and returns that version; other content becomes a new version
  beside the old ones, and ``latest.json`` is then replaced atomically.

The functions are plain Python (no Airflow): the quarterly DAG and the CLI
(``stockbatch export snapshot`` / ``snapshots``) call them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stockbatch import __version__, export, lake, schema
from stockbatch.calendar import SessionCalendar
from stockbatch.errors import PipelineError
from stockbatch.lake import gold
from stockbatch.settings import Settings

EXPORTS = "exports"
LATEST = "latest.json"
MANIFEST_KIND = "stockbatch.quarterly_snapshot"
MANIFEST_VERSION = 1

PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "row_group_size": 1_000_000,
    "store_schema": True,
}
"""The writer options of every snapshot (part of what makes a rerun byte-identical)."""

_QUARTER_RE = re.compile(r"^(\d{4})Q([1-4])$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,199}$")
FIRST_YEAR, LAST_YEAR = 1885, 2200


class SnapshotNotReady(PipelineError):
    """The quarter cannot be snapshotted yet; the message says why and what to run."""


# ----------------------------------------------------------------------------- paths


def quarterly_root(settings: Settings) -> Path:
    """Folder of every quarter's snapshots: ``$STOCKBATCH_HOME/exports/quarterly``."""
    return Path(settings.home) / EXPORTS / "quarterly"


def quarter_dir(settings: Settings, quarter: str) -> Path:
    """Folder of one quarter's versions and its ``latest.json``."""
    return quarterly_root(settings) / parse_quarter(quarter)[0]


# ----------------------------------------------------------------------------- quarters


def parse_quarter(quarter: str) -> tuple[str, dt.date, dt.date]:
    """``"2017Q4"`` (case and spaces forgiven) -> ``("2017Q4", first day, last day)``.

    Raises ``ValueError`` with the expected form for anything else.
    """
    text = quarter.strip().upper()
    m = _QUARTER_RE.match(text)
    if not m or not FIRST_YEAR <= int(m.group(1)) <= LAST_YEAR:
        raise ValueError(
            f"a quarter is written like 2017Q4 (year {FIRST_YEAR}-{LAST_YEAR}, Q1-Q4), "
            f"got {quarter[:40]!r}"
        )
    year, q = int(m.group(1)), int(m.group(2))
    start = dt.date(year, 3 * q - 2, 1)
    end = dt.date(year + 1, 1, 1) if q == 4 else dt.date(year, 3 * q + 1, 1)
    return text, start, end - dt.timedelta(days=1)


def last_session(quarter: str) -> dt.date:
    """The quarter's last XNYS session."""
    _, start, end = parse_quarter(quarter)
    return SessionCalendar.covering(start, end).last_session_on_or_before(end)


@dataclasses.dataclass(frozen=True)
class QuarterReadiness:
    """Whether a quarter can be snapshotted; ``reason`` says why not (empty when ready)."""

    quarter: str
    ready: bool
    reason: str
    quarter_end: dt.date
    last_session: dt.date
    dataset_last_date: dt.date | None
    process_run_id: str | None

    def __bool__(self) -> bool:
        return self.ready


def quarter_closed(
    settings: Settings, quarter: str, *, today: dt.date | None = None
) -> QuarterReadiness:
    """Whether ``quarter`` (``"2017Q4"``) is closed, so its snapshot can be written.

    Ready when, in this order: the quarter has ended (``today``, default today in
    UTC, is after its last calendar day); the gold layer's daily data reaches the
    quarter's last XNYS session (``dataset_last_date`` of the last process run);
    and the warehouse holds exactly that gold (its load record has the gold's
    checksums), since the snapshot reads the warehouse. Otherwise ``ready`` is
    False and ``reason`` is one line saying why and what to run (the quarterly
    DAG skips with it). Raises ``ValueError`` for a malformed quarter.
    """
    from stockbatch.results import today_utc

    name, _, end = parse_quarter(quarter)
    last = last_session(name)
    state = gold.process_state(settings)
    data_last = _date(state.get("dataset_last_date"))
    run_id = str(state["run_id"]) if state.get("run_id") else None

    def verdict(reason: str = "") -> QuarterReadiness:
        return QuarterReadiness(name, not reason, reason, end, last, data_last, run_id)

    today = today or today_utc()
    if today <= end:
        return verdict(f"quarter {name} has not ended: it ends on {end} (today is {today})")
    if not state or data_last is None:
        return verdict(
            f"quarter {name} is not covered: no gold data in {settings.lake_path} yet; "
            "run `stockbatch run` first"
        )
    if data_last < last:
        return verdict(
            f"quarter {name} is not covered: the gold data ends on {data_last}, before the "
            f"quarter's last XNYS session {last}; run `stockbatch run` with data through {last}"
        )
    if not _warehouse_current(settings, state):
        return verdict(
            f"the warehouse has not loaded the current gold (process run {run_id}); "
            "run `stockbatch load` first"
        )
    return verdict()


def _warehouse_current(settings: Settings, state: dict[str, Any]) -> bool:
    """Whether the warehouse's last load was of this gold, into this warehouse."""
    from stockbatch.warehouse import db

    loaded = lake.read_json(lake.layout(settings).loaded_state)
    where = db.display_url(db.resolve_urls(settings).loader)
    return bool(loaded) and (
        loaded.get("warehouse_url") == where
        and loaded.get("checksums") == state.get("gold_checksums")
    )


def _date(value: object) -> dt.date | None:
    return dt.date.fromisoformat(str(value)) if value else None


# ----------------------------------------------------------------------------- snapshots


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One version of a quarter's snapshot.

    ``new``: this call wrote it (False when an identical latest version was returned,
    and in listings). ``latest``: ``latest.json`` names it.
    """

    quarter: str
    version: str
    path: Path
    manifest_path: Path
    sha256: str
    rows: int
    new: bool
    latest: bool
    manifest: dict[str, Any] = dataclasses.field(repr=False, compare=False)


def write_snapshot(
    settings: Settings,
    quarter: str,
    *,
    run_id: str,
    source_run_ids: list[str] | None = None,
    as_of: dt.date | None = None,
    today: dt.date | None = None,
) -> Snapshot:
    """Write the snapshot of a closed quarter as version ``run_id``; return it.

    The rows are exactly ``stockbatch export quarterly``'s rows of that quarter
    (``as_of``: the point-in-time table of ``export quarterly --as-of``), ordered
    by symbol, in ``exports/quarterly/<quarter>/<run_id>.parquet``, with the
    manifest ``<run_id>.json`` beside it (SHA-256 and size of the file, row count,
    columns and types, feature_set_version, source run ids: the process run that
    made gold and the load run, then ``source_run_ids``; quarter, created_at,
    code version, the previous version).

    **Unchanged data writes nothing**: when the new file's SHA-256 equals that of
    the quarter's latest version, no file is written and that existing version is
    returned (``new=False``; its version id is not ``run_id``). Changed data is
    written as a new version beside the old ones and ``latest.json`` is replaced
    atomically to name it (``new=True``). A version is never overwritten:
    an existing ``<run_id>.parquet`` with other content raises
    :class:`~stockbatch.errors.PipelineError`; with the same content (a retry after
    a crash) it is completed (manifest, pointer) and returned.

    Raises :class:`SnapshotNotReady` when :func:`quarter_closed` says no (or the
    quarter has no rows), ``ValueError`` for a malformed quarter or run id.
    """
    name = parse_quarter(quarter)[0]
    if not _VERSION_RE.match(run_id) or run_id == LATEST.removesuffix(".json"):
        raise ValueError(
            f"run id {run_id[:60]!r} cannot name a snapshot version: use letters, digits "
            "and _ . : + - (not starting with . or -)"
        )
    ready = quarter_closed(settings, name, today=today)
    if not ready:
        raise SnapshotNotReady(ready.reason)
    meta = export.lineage(settings)
    loaded_run = str(lake.read_json(lake.layout(settings).loaded_state).get("run_id") or "")
    table = export.quarterly_rows(settings, quarters=[name], as_of=as_of)
    if export.lineage(settings) != meta or not _warehouse_current(
        settings, gold.process_state(settings)
    ):
        raise PipelineError(
            f"gold changed while the snapshot of {name} was read; run the snapshot again"
        )
    if table.num_rows == 0:
        when = f" available on {as_of}" if as_of else ""
        raise SnapshotNotReady(
            f"quarter {name} has no rows{when} in the warehouse; nothing to snapshot"
        )
    data = parquet_bytes(table, name, as_of)
    sha = hashlib.sha256(data).hexdigest()

    folder = quarter_dir(settings, name)
    with _quarter_lock(folder):
        pointer = lake.read_json(folder / LATEST)
        if pointer.get("sha256") == sha:
            latest = _load(folder, str(pointer["version"]), latest=str(pointer["version"]))
            _verify(latest)
            return latest
        target = folder / f"{run_id}.parquet"
        manifest_path = folder / f"{run_id}.json"
        if target.exists():
            if lake.file_sha256(target) != sha:
                raise PipelineError(
                    f"snapshot version {run_id} of {name} exists with other content "
                    f"({target}); versions are never replaced: use a new run id"
                )
        else:
            _create_once(target, data)
        if not manifest_path.exists():
            sources = [meta["stockbatch.process_run_id"], loaded_run, *(source_run_ids or [])]
            doc = {
                "kind": MANIFEST_KIND,
                "manifest_version": MANIFEST_VERSION,
                "quarter": name,
                "version": run_id,
                "file": target.name,
                "sha256": sha,
                "bytes": len(data),
                "rows": table.num_rows,
                "symbols": len(pc.unique(table.column("symbol"))),
                "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
                "label_columns": list(schema.QUARTERLY_LABEL_COLUMNS),
                "feature_set_version": schema.FEATURE_SET_VERSION,
                "point_in_time": as_of.isoformat() if as_of else None,
                "source_run_ids": list(dict.fromkeys(s for s in sources if s)),
                "process_run_id": meta["stockbatch.process_run_id"],
                "load_run_id": loaded_run or None,
                "data_as_of": meta["stockbatch.as_of"],
                "dataset_last_date": meta["stockbatch.dataset_last_date"],
                "quarter_last_session": ready.last_session.isoformat(),
                "previous_version": pointer.get("version"),
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "code_version": __version__,
                "writer": {"pyarrow": pa.__version__, **PARQUET_OPTIONS},
            }
            _create_once(manifest_path, _json(doc))
        snap = _load(folder, run_id, latest=run_id)
        if snap.sha256 != sha:
            raise PipelineError(
                f"the manifest {manifest_path} names another file content than {target}; "
                "the version store is damaged: move that version away by hand"
            )
        pointer_doc = {
            "quarter": name,
            "version": run_id,
            "file": target.name,
            "manifest": manifest_path.name,
            "sha256": sha,
            "rows": snap.rows,
        }
        _replace_pointer(folder / LATEST, _json(pointer_doc))
    return dataclasses.replace(snap, new=True)


def parquet_bytes(table: pa.Table, quarter: str, as_of: dt.date | None = None) -> bytes:
    """The snapshot file's bytes: rows by symbol, fixed writer options, and only
    content-defining metadata (quarter, contract version, labels, point in time):
    no time, run id or path, so the same rows give the same bytes."""
    table = table.sort_by([("symbol", "ascending"), ("quarter", "ascending")])
    meta = {
        "stockbatch.quarter": quarter,
        "stockbatch.feature_set_version": str(schema.FEATURE_SET_VERSION),
        "stockbatch.label_columns": ",".join(schema.QUARTERLY_LABEL_COLUMNS),
    }
    if as_of is not None:
        meta["stockbatch.point_in_time"] = as_of.isoformat()
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return bytes(sink.getvalue().to_pybytes())


def latest_snapshot(settings: Settings, quarter: str) -> Snapshot | None:
    """The version ``latest.json`` names for ``quarter`` (None before the first)."""
    folder = quarter_dir(settings, quarter)
    pointer = lake.read_json(folder / LATEST)
    if not pointer:
        return None
    version = str(pointer["version"])
    return _load(folder, version, latest=version)


def list_snapshots(settings: Settings, quarter: str | None = None) -> list[Snapshot]:
    """Every version (of ``quarter``, or of every quarter), by quarter then creation."""
    root = quarterly_root(settings)
    folders = [quarter_dir(settings, quarter)] if quarter else sorted(root.glob("*Q[1-4]"))
    out: list[Snapshot] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        latest = str(lake.read_json(folder / LATEST).get("version", ""))
        snaps = [
            _load(folder, p.stem, latest=latest)
            for p in folder.glob("*.json")
            if p.name != LATEST and not p.name.startswith(".")
        ]
        out += sorted(snaps, key=lambda s: (str(s.manifest.get("created_at", "")), s.version))
    return out


def verify_snapshot(snapshot: Snapshot) -> None:
    """Raise :class:`~stockbatch.errors.PipelineError` unless the file's SHA-256 and
    size are the manifest's."""
    _verify(snapshot)


# ----------------------------------------------------------------------------- internals


def _load(folder: Path, version: str, *, latest: str) -> Snapshot:
    manifest_path = folder / f"{version}.json"
    try:
        doc = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineError(
            f"snapshot manifest {manifest_path} cannot be read ({exc}); "
            "the version store is damaged"
        ) from exc
    return Snapshot(
        quarter=str(doc["quarter"]),
        version=version,
        path=folder / str(doc["file"]),
        manifest_path=manifest_path,
        sha256=str(doc["sha256"]),
        rows=int(doc["rows"]),
        new=False,
        latest=version == latest,
        manifest=doc,
    )


def _verify(snap: Snapshot) -> None:
    if not snap.path.exists():
        raise PipelineError(f"snapshot file {snap.path} is missing; its manifest remains")
    actual = lake.file_sha256(snap.path)
    if actual != snap.sha256 or snap.path.stat().st_size != snap.manifest.get("bytes"):
        raise PipelineError(
            f"snapshot file {snap.path} does not match its manifest "
            f"(sha256 {actual[:12]}..., manifest {snap.sha256[:12]}...): it was altered"
        )


def _json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _create_once(path: Path, data: bytes) -> None:
    """Write ``path`` whole and read-only, only if it does not exist yet.

    Written to a temporary file in the same folder, fsynced, then hard-linked to
    its name (``link`` fails on an existing name, unlike ``rename``), so the file
    appears complete or not at all and is never replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o400)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise PipelineError(
                f"{path} exists already; snapshot versions are never replaced"
            ) from None
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _replace_pointer(path: Path, data: bytes) -> None:
    """Replace ``latest.json`` atomically (temp file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _quarter_lock(folder: Path) -> Iterator[None]:
    """One writer per quarter at a time (an exclusive ``flock`` on ``<quarter>/.lock``)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
