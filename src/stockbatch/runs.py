"""The run record: one status rule, the manifest, the warehouse's run row, the summary.

Every way of running stockbatch (a whole ``run``, a single stage command, later
the Airflow DAGs and the API) records its run through :func:`recording`, so a
run's status is decided by one rule (:func:`status_of`) and every run, failed
ones included, leaves ``runs/<run_id>.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stockbatch import __version__, lake, lineage, schema
from stockbatch.errors import PipelineError
from stockbatch.lake import bronze, gold
from stockbatch.results import RunResult, new_run_id
from stockbatch.settings import Settings

SUCCEEDED = "succeeded"
PARTIAL = "partial"
"""Completed, but something needs attention: rejected inputs, dead-lettered
records, or a search index left stale."""
FAILED = "failed"
RUNNING = "running"
"""Written when a run starts; a run still ``running`` when the next one starts was killed."""
INTERRUPTED = "interrupted"
"""A run that was killed (its manifest said ``running`` when the next run started)."""
PENDING = "pending"
"""A run whose stages are separate processes (an Airflow DAG run, a task each), between
two of them: no process holds it, and the next run must not call it interrupted."""

EXIT_CODES = {SUCCEEDED: 0, FAILED: 1, PARTIAL: 3}
"""The process exit code of each status (the CLI's, and the DAG tasks')."""
EXIT_BUSY = 4
"""``--no-wait`` and another run holds the home."""


class HomeBusy(PipelineError):
    """Another stockbatch run holds the home (and the caller asked not to wait)."""


def _status(*, failed: bool, rejected: bool, dead_lettered: bool, search_stale: bool) -> str:
    # The one rule, whether the stages ran in this process or in several (a DAG run).
    if failed:
        return FAILED
    if rejected or dead_lettered or search_stale:
        return PARTIAL
    return SUCCEEDED


def status_of(run: RunResult) -> str:
    """The status of a run from its stages' results (the one rule)."""
    return _status(
        failed=run.error is not None,
        rejected=bool(run.ingest is not None and run.ingest.rejected),
        dead_lettered=bool(run.collect is not None and run.collect.dead_lettered),
        search_stale=bool(run.load is not None and run.load.search_stale),
    )


def status_of_manifest(doc: dict[str, Any]) -> str:
    """The status of a run from its manifest's stage sections (the same rule as
    :func:`status_of`, for runs whose stages were recorded by separate processes)."""
    return _status(
        failed=bool(doc.get("error")),
        rejected=bool(doc.get("ingest", {}).get("rejected")),
        dead_lettered=bool(doc.get("collect", {}).get("dead_lettered")),
        search_stale=bool((doc.get("load", {}).get("search") or {}).get("stale")),
    )


@contextlib.contextmanager
def recording(
    settings: Settings,
    command: str,
    *,
    run_id: str | None = None,
    params: dict[str, Any] | None = None,
    lock: bool = True,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[RunResult]:
    """Record the run of the block: the caller fills in the stage results.

    With ``lock`` (every writing command but ``collect``, whose parallel instances
    coordinate through Kafka and the bronze lock) the run first takes the home's
    lock (:func:`home_lock`): a second run waits, or with ``wait=False`` raises
    :class:`HomeBusy`. Then it records itself as ``running``, marks runs that were
    killed as ``interrupted`` and removes their leftovers (:func:`recover`). On
    leaving the block the status is decided and the manifest written (and the
    warehouse's run row when the run loaded it); a failing block is recorded as
    ``failed`` with its error, then the exception goes on.
    """
    run = RunResult(run_id=run_id or new_run_id(), command=command, params=dict(params or {}))
    held = home_lock(settings, command, wait=wait, on_wait=on_wait) if lock else None
    with held or contextlib.nullcontext():
        t0 = time.perf_counter()
        lake.write_json_atomic(lake.layout(settings).manifest(run.run_id), _started(run))
        if lock:
            recovered = recover(settings, run.run_id)
            if recovered:
                run.params["recovered"] = recovered
        with _lineage(settings, run, stage=command if command in lineage.STAGES else None):
            try:
                yield run
            except BaseException as exc:
                run.error = str(exc) or type(exc).__name__
                finish(settings, run, time.perf_counter() - t0)
                raise
            finish(settings, run, time.perf_counter() - t0)


@contextlib.contextmanager
def stage_recording(
    settings: Settings,
    run_id: str,
    command: str,
    *,
    params: dict[str, Any] | None = None,
    final: bool = False,
    record: bool = False,
) -> Iterator[RunResult]:
    """Record one stage of a run whose stages run in separate processes (an Airflow DAG
    run: a task each) into that run's one manifest, ``runs/<run_id>.json``.

    Like :func:`recording`: takes the home lock (waiting), marks the run ``running``
    and killed runs ``interrupted``, and yields a :class:`RunResult` for the caller to
    fill in with its stage's result. On leaving, this stage's sections are merged
    into what the earlier stages recorded: the run is then ``pending`` (the next stage
    will go on), or ``failed`` with the error (a retry of the stage starts it again),
    or, for the ``final`` stage, decided by the one status rule over every section
    (:func:`status_of_manifest`), with the warehouse's run row when the run loaded it
    (or, with ``record``, in any case: a run that only reads the warehouse, such as a
    quarterly snapshot).
    """
    path = lake.layout(settings).manifest(run_id)
    with home_lock(settings, command):
        prior = read_manifest(settings, run_id) if path.exists() else {}
        prior.pop("error", None)
        run = RunResult(run_id=run_id, command=command)
        if prior.get("started_at"):
            run.started_at = dt.datetime.fromisoformat(prior["started_at"])
        run.params = {**prior.get("params", {}), **(params or {})}
        lake.write_json_atomic(path, {**prior, **_started(run)})
        recovered = recover(settings, run_id)
        if recovered:
            run.params["recovered"] = sorted({*run.params.get("recovered", []), *recovered})
        # The DAG run's own events: START with its first task, COMPLETE with its final one.
        with _lineage(settings, run, opens=not prior, closes=final):
            try:
                yield run
            except BaseException as exc:
                run.error = str(exc) or type(exc).__name__
                _merge_stage(settings, run, prior, final=True)
                raise
            _merge_stage(settings, run, prior, final=final, record=record)


def _lineage(
    settings: Settings,
    run: RunResult,
    *,
    stage: str | None = None,
    opens: bool = True,
    closes: bool = True,
) -> contextlib.AbstractContextManager[None]:
    """The OpenLineage events of a recorded block (:func:`stockbatch.lineage.traced`)."""
    graph: tuple[str, ...] = ()
    if run.command == "run":  # the stages a whole run goes through, to name a failed one
        kafka = ("collect",) if settings.transport == "kafka" else ()
        graph = ("ingest", *kafka, "process", "load")
    return lineage.traced(
        settings,
        run,
        lambda done: _lineage_places(settings, done),
        stage=stage,
        opens=opens,
        closes=closes,
        graph=graph,
    )


def _lineage_places(settings: Settings, run: RunResult | None) -> lineage.Places:
    """Where the datasets of a run's events live: the layout's folders, and the warehouse
    and search URLs once the run loaded them."""
    lay = lake.layout(settings)
    folders = {
        lineage.BRONZE: lay.bronze_bars,
        lineage.INSTRUMENTS: lay.instruments.parent,
        lineage.SILVER: lay.silver_bars,
        lineage.QUARANTINE: lay.quarantine,
        lineage.GOLD_DAILY: lay.gold_daily,
        lineage.GOLD_QUARTERLY: lay.gold_quarterly.parent,
    }
    warehouse = search = None
    if run is not None and run.load is not None:
        if not run.load.warehouse_skipped:
            from stockbatch.warehouse import db

            warehouse = db.resolve_urls(settings).loader
        if run.load.search is not None:
            from stockbatch.services.endpoints import effective_search_url

            search = effective_search_url(settings)
    rel = {k: lay.relative(p) for k, p in folders.items()}
    return lineage.Places(lay.root, rel, warehouse, search)


def _merge_stage(
    settings: Settings, run: RunResult, prior: dict[str, Any], *, final: bool, record: bool = False
) -> dict[str, Any]:
    new = manifest_of(settings, run)
    if new.get("load", {}).get("warehouse_skipped") and "load" in prior:
        # A search-only stage after the warehouse stage: keep what the warehouse load did.
        new["load"] = {**prior["load"], "search": new["load"]["search"]}
    doc = {**prior, **new}  # this stage's sections win, the earlier stages' stay
    doc["status"] = status_of_manifest(doc) if final else PENDING
    run.status = doc["status"]
    run.duration_s = float(doc["duration_s"])
    path = lake.layout(settings).manifest(run.run_id)
    lake.write_json_atomic(path, doc)
    run.manifest_path = path
    loaded = "load" in doc and not doc["load"].get("warehouse_skipped")
    if final and (loaded or record) and run.error is None:
        _record_in_warehouse(settings, doc)
    return doc


def _started(run: RunResult) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "command": run.command,
        "status": RUNNING,
        "started_at": run.started_at.isoformat(),
        "params": run.params,
        "host": os.uname().nodename,
        "pid": os.getpid(),
    }


@contextlib.contextmanager
def home_lock(
    settings: Settings,
    command: str,
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """One run at a time per home (an exclusive ``flock`` on ``HOME/run.lock``).

    The kernel releases the lock when its process ends, killed or not, so a
    crashed run never blocks the next one. The lock file says who holds it.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / "run.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1024, 0).decode(errors="replace").strip() or "another run"
            message = f"{holder} is running on {settings.home}"
            if not wait:
                raise HomeBusy(f"{message}; try again when it ends (or drop --no-wait)") from None
            if on_wait is not None:
                on_wait(f"{message}; waiting for it to finish (--no-wait to give up at once)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"stockbatch {command} (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def recover(settings: Settings, current: str) -> list[str]:
    """Mark runs that are still ``running`` (killed: the home lock is ours) as
    ``interrupted``, and delete what no manifest or catalog refers to: temporary
    files and landed bronze batches that never reached the catalog. Returns the
    interrupted run ids. Runs under the home lock."""
    layout = lake.layout(settings)
    interrupted = []
    for doc in iter_manifests(settings):
        if doc.get("status") == RUNNING and doc.get("run_id") != current:
            doc |= {"status": INTERRUPTED, "interrupted_noticed_by": current}
            lake.write_json_atomic(layout.manifest(doc["run_id"]), doc)
            interrupted.append(str(doc["run_id"]))
    catalogued = set(bronze.read_catalog(settings)["batch"].to_list())
    if layout.bronze_bars.exists():
        for folder in layout.bronze_bars.iterdir():
            batch = folder.name.removeprefix("batch=")
            # Kafka batches belong to the collector (its own recovery); ours are run ids.
            if not batch.startswith("kafka-") and batch not in catalogued and batch != current:
                shutil.rmtree(folder, ignore_errors=True)
    _remove_temp_files(layout)
    return interrupted


def _remove_temp_files(layout: lake.LakeLayout) -> None:
    """``.tmp-*`` files of writes a kill interrupted (a collector may be writing its own
    right now: under the Kafka folders only files older than an hour go)."""
    if not layout.root.exists():
        return
    kafka = (str(layout.kafka_books), *(str(p) for p in layout.bronze_bars.glob("batch=kafka-*")))
    old = time.time() - 3600
    for tmp in layout.root.rglob(".tmp-*"):
        with contextlib.suppress(OSError):
            if str(tmp).startswith(kafka) and tmp.stat().st_mtime > old:
                continue
            tmp.unlink()


def finish(settings: Settings, run: RunResult, duration_s: float) -> Path:
    """Decide the status, write the manifest and the warehouse's run row."""
    run.status = status_of(run)
    run.duration_s = duration_s
    doc = manifest_of(settings, run)
    path = lake.layout(settings).manifest(run.run_id)
    lake.write_json_atomic(path, doc)
    run.manifest_path = path
    if run.load is not None and not run.load.warehouse_skipped and run.error is None:
        _record_in_warehouse(settings, doc)
        for rid in run.params.get("recovered", []):
            with contextlib.suppress(OSError, ValueError):
                _record_in_warehouse(settings, read_manifest(settings, rid))
    return path


def manifest_of(settings: Settings, run: RunResult) -> dict[str, Any]:
    """What a run read, produced and counted (the content of ``runs/<run_id>.json``)."""
    finished = dt.datetime.now(dt.UTC)
    doc: dict[str, Any] = {
        "run_id": run.run_id,
        "command": run.command,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round((finished - run.started_at).total_seconds(), 3),
        "code_version": __version__,
        "feature_set_version": schema.FEATURE_SET_VERSION,
        "settings": settings.safe_dump(),
        "params": run.params,
        "host": os.uname().nodename,
    }
    if run.error:
        doc["error"] = run.error
    if run.ingest is not None:
        r = run.ingest
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
    if run.collect is not None:
        # The offset range per partition ([start, end), committed) is what makes a
        # rerun of the same batch a no-op: the group's committed offsets are past it.
        doc["collect"] = run.collect.stats.to_dict()
    if run.process is not None:
        p = run.process
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
            "gold_checksums": gold.process_state(settings).get("gold_checksums", {}),
        }
        doc["counts"] = p.counts
    if run.load is not None:
        ld = run.load
        doc["load"] = {
            "search": ld.search,
            "warehouse_skipped": ld.warehouse_skipped,
            "warehouse": settings.warehouse.kind,
            "tables": ld.tables,
            "buckets_loaded": ld.buckets_loaded,
            "buckets_unchanged": ld.buckets_unchanged,
            "rows_changed": ld.rows_changed,
        }
    return doc


def _record_in_warehouse(settings: Settings, doc: dict[str, Any]) -> None:
    from stockbatch.warehouse import db, loader

    engine = db.engine_for(db.resolve_urls(settings).loader)
    loader.record_run(engine, doc)
    loader.audit(
        engine,
        actor=os.environ.get("USER", "stockbatch"),
        action=doc["command"],
        detail={"run_id": doc["run_id"], "status": doc["status"]},
    )


def read_manifest(settings: Settings, run_id: str) -> dict[str, Any]:
    """One run's manifest."""
    return json.loads(lake.layout(settings).manifest(run_id).read_text())


def iter_manifests(
    settings: Settings, unreadable: list[Path] | None = None
) -> Iterator[dict[str, Any]]:
    """Manifests oldest first (run ids sort by time). A file that is not a manifest
    (bad JSON, not an object) is skipped and appended to ``unreadable``."""
    folder = lake.layout(settings).runs
    if not folder.exists():
        return
    for p in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        if isinstance(doc, dict) and "run_id" in doc:
            yield doc
        elif unreadable is not None:
            unreadable.append(p)


def last_manifests(
    settings: Settings, last: int = 1, unreadable: list[Path] | None = None
) -> list[dict[str, Any]]:
    """The newest ``last`` run manifests, newest first (see :func:`iter_manifests`)."""
    return list(reversed(list(iter_manifests(settings, unreadable))))[:last]


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
