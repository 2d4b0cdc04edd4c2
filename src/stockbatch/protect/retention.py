"""Retention: remove superseded bronze versions and old run manifests (``stockbatch gc``).

What goes, under the home's run lock (no run writes meanwhile):

- a **bronze batch** (``bronze/bars/batch=<run_id>/``) none of whose unit versions
  is needed: not part of any unit's active version (the newest one, and for an
  appended version the versions it extends, :func:`stockbatch.lake.bronze.active_parts`),
  not the version the current silver/gold was processed from (``gold/_state.json``
  ``units``: an update compares the new versions with those, and finds the buckets a
  changed file fed from their rows), and not landed by one of the newest N runs.
  Whole folders only: a batch that is partly active stays whole (its files mix
  units), and the Kafka collector's ``batch=kafka-<topic>`` folders are never touched.
  The catalog keeps its rows of removed batches: it is the history of what landed,
  and nothing reads the rows of a superseded version (so the active versions, the
  process fingerprint and the incremental plan are unchanged).
- a **run manifest** (``runs/<run_id>.json``) older than the newest N runs that
  nothing refers to: not the run of the current gold, warehouse load or search
  sync (``gold/_state.json``, ``_loaded.json``, ``_search.json``), not a run a
  quarterly snapshot names (its version, process, load and source runs), not the
  landing run of a bronze batch that stays, not a run whose id names a silver,
  gold or state part, and not a run still ``running`` or ``pending``.

Silver, gold, ``_state``, the catalog, the snapshots and the warehouse are never
removed: after a gc, ``stockbatch process`` (incremental) and the exports work as before.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.filesize import decimal

from stockbatch import lake, runs, snapshots
from stockbatch.errors import PipelineError
from stockbatch.lake import bronze
from stockbatch.settings import Settings

_RUN_PART = re.compile(r"^part-(.+)\.parquet$")


@dataclass
class GcResult:
    """What a gc removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    keep_runs: int
    batches: list[Path] = field(default_factory=list)
    batch_files: int = 0
    batch_bytes: int = 0
    manifests: list[Path] = field(default_factory=list)
    manifest_bytes: int = 0
    kept_batches: int = 0
    kept_manifests: int = 0
    sizes: dict[Path, int] = field(default_factory=dict)
    """Bytes of each batch folder and manifest above (what the dry run lists)."""

    @property
    def bytes(self) -> int:
        """Bytes freed (or that would be)."""
        return self.batch_bytes + self.manifest_bytes

    def summary(self) -> str:
        """One line for the CLI."""
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"gc {verb} {len(self.batches)} superseded bronze batches ({self.batch_files} "
            f"files, {decimal(self.batch_bytes)}) and {len(self.manifests)} run manifests "
            f"({decimal(self.manifest_bytes)}); kept {self.kept_batches} batches and "
            f"{self.kept_manifests} manifests (newest {self.keep_runs} runs and every one "
            "gold, state or a snapshot refers to)"
        )


def gc(
    settings: Settings,
    keep_runs: int,
    *,
    dry_run: bool = False,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> GcResult:
    """Remove what the module says may go; with ``dry_run`` only say what."""
    if keep_runs < 1:
        raise PipelineError("--keep-runs must be at least 1 (the newest run always stays)")
    with runs.home_lock(settings, "gc", wait=wait, on_wait=on_wait):
        result = plan(settings, keep_runs, dry_run=dry_run)
        if not dry_run:
            # Bronze first, manifests after: an interrupted gc leaves manifests that
            # name removed batches (harmless), never batches without their manifest.
            # The bronze lock keeps a collector from reading the catalog halfway.
            with bronze.lock(settings):
                for folder in result.batches:
                    shutil.rmtree(folder)
            for path in result.manifests:
                path.unlink(missing_ok=True)
    return result


def plan(settings: Settings, keep_runs: int, *, dry_run: bool = True) -> GcResult:
    """What a gc keeping the newest ``keep_runs`` runs would remove (removes nothing)."""
    layout = lake.layout(settings)
    result = GcResult(dry_run=dry_run, keep_runs=keep_runs)
    manifests = sorted(layout.runs.glob("*.json")) if layout.runs.exists() else []
    newest = {p.stem for p in manifests[-keep_runs:]}
    state = lake.read_json(layout.process_state)

    # -- bronze batches
    catalog = bronze.read_catalog(settings)
    try:
        parts = bronze.active_parts(settings)
    except PipelineError as exc:
        raise PipelineError(f"gc cannot tell which bronze versions are active: {exc}") from exc
    needed = set(parts["batch"].to_list()) | newest
    needed |= {str(v[1]) for v in state.get("units", {}).values() if len(v) > 1}
    catalogued = set(catalog["batch"].to_list())
    kept: set[str] = set()
    if layout.bronze_bars.exists():
        for folder in sorted(layout.bronze_bars.iterdir()):
            batch = folder.name.removeprefix("batch=")
            # Kafka folders mix units and offsets (the collector's); a batch that is in
            # no catalog row is an in-flight or crashed landing (run recovery's).
            if batch.startswith("kafka-") or batch not in catalogued or batch in needed:
                kept.add(batch)
                continue
            files = [p for p in folder.rglob("*") if p.is_file()]
            result.batches.append(folder)
            result.batch_files += len(files)
            result.sizes[folder] = sum(p.stat().st_size for p in files)
            result.batch_bytes += result.sizes[folder]
    result.kept_batches = len(kept)

    # -- run manifests
    referenced = newest | kept | _state_run_ids(settings) | _snapshot_run_ids(settings)
    referenced |= _part_run_ids(layout.processed_roots())
    for path in manifests:
        if path.stem in referenced or _in_progress(path):
            result.kept_manifests += 1
            continue
        result.manifests.append(path)
        result.sizes[path] = path.stat().st_size
        result.manifest_bytes += result.sizes[path]
    return result


def _state_run_ids(settings: Settings) -> set[str]:
    layout = lake.layout(settings)
    found = set()
    for path in (layout.process_state, layout.loaded_state, layout.search_state):
        try:
            doc = lake.read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("run_id"):
            found.add(str(doc["run_id"]))
    return found


def _snapshot_run_ids(settings: Settings) -> set[str]:
    found: set[str] = set()
    root = snapshots.quarterly_root(settings)
    if not root.exists():
        return found
    for path in root.glob("*/*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        ids: Iterable[Any] = [
            doc.get("version"),
            doc.get("process_run_id"),
            doc.get("load_run_id"),
            *(doc.get("source_run_ids") or []),
        ]
        found |= {str(i) for i in ids if i}
    return found


def _part_run_ids(roots: list[Path]) -> set[str]:
    """Run ids that name silver, gold or state parts (``part-<run_id>.parquet``)."""
    found = set()
    for root in roots:
        for p in lake.parquet_files(root):
            m = _RUN_PART.match(p.name)
            if m and not m.group(1).isdigit():
                found.add(m.group(1))
    return found


def _in_progress(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return True  # not ours to judge: `stockbatch runs` reports unreadable manifests
    return not isinstance(doc, dict) or doc.get("status") in (runs.RUNNING, runs.PENDING)
