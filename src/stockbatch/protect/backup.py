"""Consistent backups of a stockbatch home: create, verify, restore.

A backup is one folder::

    manifest.json              every file with size and SHA-256; warehouse, version, newest run
    lake/...                   bronze, silver, gold, _state, runs/*.json (the lake as it was)
    exports/...                the quarterly snapshots (immutable versions)
    home/audit, home/lineage   the CLI audit log and the runs' lineage events (copies)
    warehouse/warehouse.db     SQLite: an online-backup image   | warehouse/warehouse.pgdump:
                                                                  pg_dump -Fc (PostgreSQL)
    services/services.json     where the services were, passwords and keys masked

Consistency: :func:`create_backup` holds the home's run lock
(:func:`stockbatch.runs.home_lock`) from the first file to the warehouse dump, so no
run writes the lake or loads the warehouse meanwhile; the lake and the warehouse in
the backup are those of one moment between two runs. Kafka collectors, which run
without that lock, are held off the bronze catalog by the bronze lock while the
lake is linked. (The API may still write its
users, tokens and audit rows: the dump is one transaction's image of them.)

Lake files are hard-linked when the backup is on the same file system, copied
otherwise. That is safe because every lake and snapshot file is written to a
temporary name and renamed into place (``lake/files.py``, ``snapshots.py``): a
later run replaces a file by a new inode and never changes one in place, so a
link keeps the content it had. The SQLite warehouse, which SQLite changes in
place, is always a separate image, and so are the append-only logs (``audit/``,
``lineage/``): they grow in place, so they are copied, never linked.

:func:`verify_backup` re-hashes every file against the manifest;
:func:`restore_backup` verifies, then fills an empty home and an empty warehouse.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.filesize import decimal

from stockbatch import __version__, lake, runs, snapshots
from stockbatch.errors import PipelineError
from stockbatch.lake import bronze
from stockbatch.protect import dump
from stockbatch.results import Progress, no_progress
from stockbatch.settings import MASK, Settings, mask_secrets

MANIFEST = "manifest.json"
KIND = "stockbatch.backup"
FORMAT = 1
LAKE, EXPORTS, WAREHOUSE, SERVICES, HOME = "lake", "exports", "warehouse", "services", "home"
LOGS = ("audit", "lineage")
"""Folders of the home whose files are appended to in place (copied, never linked)."""
BACKUPS = "backups"

_SKIP_NAMES = frozenset({".lock", "run.lock"})
_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api_key|private|credential)")
HASH_THREADS = min(4, os.cpu_count() or 1)
"""SHA-256 releases the GIL: a few threads hash a large lake at disk speed."""


def default_out(settings: Settings) -> Path:
    """``$STOCKBATCH_HOME/backups/<UTC timestamp>``."""
    return Path(settings.home) / BACKUPS / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class BackupResult:
    """What :func:`create_backup` wrote."""

    path: Path
    files: int
    bytes: int
    linked: int
    copied: int
    warehouse: str | None
    newest_run_id: str | None
    duration_s: float

    def summary(self) -> str:
        """One line for the CLI."""
        how = f"{self.linked} hard-linked, {self.copied} copied"
        wh = f"{self.warehouse} warehouse dumped" if self.warehouse else "no warehouse yet"
        return (
            f"backup {self.path}: {self.files} files, {decimal(self.bytes)} ({how}); {wh}; "
            f"newest run {self.newest_run_id or '-'}; in {self.duration_s:.1f}s"
        )


@dataclass
class VerifyResult:
    """What :func:`verify_backup` found: intact when nothing is missing, changed or extra."""

    path: Path
    files: int
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every file is there with its size and SHA-256, and nothing else is."""
        return not (self.missing or self.changed or self.unexpected)

    def problems(self) -> list[str]:
        """One line per problem file."""
        return (
            [f"missing     {p}" for p in self.missing]
            + [f"changed     {p}" for p in self.changed]
            + [f"unexpected  {p}" for p in self.unexpected]
        )

    def summary(self) -> str:
        """One line for the CLI."""
        if self.ok:
            return f"backup {self.path} is intact: {self.files} files match the manifest"
        return (
            f"backup {self.path} is damaged: {len(self.missing)} missing, {len(self.changed)} "
            f"changed, {len(self.unexpected)} unexpected of {self.files} files"
        )


@dataclass
class RestoreResult:
    """What :func:`restore_backup` put back."""

    home: Path
    files: int
    bytes: int
    warehouse: str | None
    newest_run_id: str | None
    duration_s: float

    def summary(self) -> str:
        """One line for the CLI."""
        wh = f"warehouse restored into {self.warehouse}" if self.warehouse else "no warehouse"
        return (
            f"restored {self.files} files ({decimal(self.bytes)}) into {self.home}; {wh}; "
            f"newest run {self.newest_run_id or '-'}; in {self.duration_s:.1f}s"
        )


# ----------------------------------------------------------------------------- create


def create_backup(
    settings: Settings,
    out: Path | None = None,
    *,
    progress: Progress = no_progress,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> BackupResult:
    """Back up the home's lake, snapshots, warehouse and services record into ``out``
    (default :func:`default_out`), holding the home's run lock throughout so no run
    writes meanwhile (see the module). The manifest is written last: a folder without
    one is an interrupted backup, and a failure removes what this call wrote.
    """
    started = time.perf_counter()
    target = Path(out) if out is not None else default_out(settings)
    _check_target(settings, target)
    with runs.home_lock(settings, "backup create", wait=wait, on_wait=on_wait):
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            result = _create(settings, target, progress)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    result.duration_s = time.perf_counter() - started
    return result


def _check_target(settings: Settings, target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PipelineError(f"{target} exists and is not empty: pick a new --out folder")
    resolved = target.resolve()
    for inside in (settings.lake_path.resolve(), snapshots.quarterly_root(settings).resolve()):
        if resolved.is_relative_to(inside):
            raise PipelineError(
                f"--out {target} is inside {inside}, which the backup copies: "
                f"use a folder outside it (default: {Path(settings.home) / BACKUPS})"
            )


def _create(settings: Settings, target: Path, progress: Progress) -> BackupResult:
    sources = [
        *((LAKE, p) for p in _files_below(settings.lake_path)),
        *((EXPORTS, p) for p in _files_below(Path(settings.home) / snapshots.EXPORTS)),
    ]
    if not sources:
        raise PipelineError(
            f"nothing to back up: {settings.lake_path} holds no lake yet "
            "(run `stockbatch run` first, or check STOCKBATCH_HOME)"
        )
    roots = {LAKE: settings.lake_path, EXPORTS: Path(settings.home) / snapshots.EXPORTS}
    placed = [(f"{prefix}/{p.relative_to(roots[prefix]).as_posix()}", p) for prefix, p in sources]
    # Kafka collectors run without the home lock; the bronze lock keeps them from
    # changing the catalog and their ledger while the lake is linked.
    with bronze.lock(settings):
        linked, copied = _place(placed, target, progress, "backing up lake")
    copied += _copy_logs(settings, target / HOME)
    warehouse = dump.dump(settings, target / WAREHOUSE, progress)
    _write_services(settings, target / SERVICES)
    listed = _hash_tree(target, progress, "hashing backup")
    newest = _newest_run_id(settings)
    doc: dict[str, Any] = {
        "kind": KIND,
        "format": FORMAT,
        "stockbatch_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "home": str(Path(settings.home).resolve()),
        "newest_run_id": newest,
        "warehouse": None,
        "files": listed,
        "hard_links": linked,
        "copies": copied,
    }
    if warehouse is not None:
        doc["warehouse"] = {**warehouse, **listed[warehouse["file"]]}
    lake.write_json_atomic(target / MANIFEST, doc)
    return BackupResult(
        path=target,
        files=len(listed),
        bytes=sum(int(f["bytes"]) for f in listed.values()),
        linked=linked,
        copied=copied,
        warehouse=warehouse["kind"] if warehouse else None,
        newest_run_id=newest,
        duration_s=0.0,
    )


def _files_below(root: Path) -> list[Path]:
    """Every committed file below ``root``: no lock files, no temp files of an
    interrupted write (``.tmp-*``, ``.<name>.<pid>.tmp``)."""
    if not root.exists():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and p.name not in _SKIP_NAMES
        and not p.name.startswith(".tmp-")
        and not p.name.endswith(".tmp")
    )


def _place(
    pairs: list[tuple[str, Path]], target: Path, progress: Progress, what: str
) -> tuple[int, int]:
    """Hard-link (else copy, keeping mtimes) each ``(relative name, source)`` below
    ``target``; returns (linked, copied)."""
    linked = copied = 0
    can_link = True
    task = progress(what, len(pairs))
    try:
        for rel, source in pairs:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if can_link:
                try:
                    os.link(source, dest)
                    linked += 1
                    task.advance()
                    continue
                except OSError as exc:
                    # Another file system, or one without hard links: copy from now on.
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    can_link = False
            # copy2 keeps mtime_ns: the process state compares (size, mtime) of its files.
            shutil.copy2(source, dest)
            copied += 1
            task.advance()
    finally:
        task.close()
    return linked, copied


def _copy_logs(settings: Settings, target: Path) -> int:
    """Copy the home's append-only logs below ``target``; how many files."""
    home = Path(settings.home)
    n = 0
    for name in LOGS:
        for source in _files_below(home / name):
            dest = target / source.relative_to(home)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
            n += 1
    return n


def _restore_logs(settings: Settings, root: Path, names: list[str]) -> None:
    """Put the backup's logs back (copies: they grow in place). Lines the new home
    already has (e.g. its `services up`) are newer: they go after the restored ones."""
    home = Path(settings.home)
    for name in names:
        dest = home / name.split("/", 1)[1]
        source = root / name
        if dest.exists():
            lake.atomic_write_bytes(dest, source.read_bytes() + dest.read_bytes())
            os.chmod(dest, 0o600)
        else:
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copy2(source, dest)


def _sha256(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def _hash_files(
    root: Path, names: list[str], progress: Progress, what: str
) -> Iterator[tuple[str, tuple[int, str] | None]]:
    """(name, (size, sha256)) of each file below ``root``; None for a missing one."""
    task = progress(what, len(names))

    def one(name: str) -> tuple[int, str] | None:
        try:
            return _sha256(root / name)
        except FileNotFoundError:
            return None
        finally:
            task.advance()

    try:
        with ThreadPoolExecutor(HASH_THREADS) as pool:
            yield from zip(names, pool.map(one, names), strict=True)
    finally:
        task.close()


def _relative_files(root: Path) -> list[str]:
    return [
        p.relative_to(root).as_posix()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (p.parent == root and p.name == MANIFEST)
    ]


def _hash_tree(root: Path, progress: Progress, what: str) -> dict[str, dict[str, Any]]:
    listed: dict[str, dict[str, Any]] = {}
    for name, found in _hash_files(root, _relative_files(root), progress, what):
        assert found is not None  # just written, under the lock
        listed[name] = {"bytes": found[0], "sha256": found[1]}
    return listed


def _newest_run_id(settings: Settings) -> str | None:
    docs = runs.last_manifests(settings, 1)
    return str(docs[0]["run_id"]) if docs else None


def _write_services(settings: Settings, folder: Path) -> None:
    """``services.json`` with every password, key and token masked: enough to see what
    ran where, nothing to log in with. (Service data folders are not backed up: the
    warehouse is in its dump, Kafka and the search index are rebuilt from the lake.)"""
    from stockbatch.services.endpoints import recorded_endpoints

    record = recorded_endpoints(Path(settings.home))
    if not record:
        return
    folder.mkdir(parents=True, exist_ok=True)
    lake.write_json_atomic(folder / "services.json", _mask(record))


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    return mask_secrets(value) if isinstance(value, str) else value


# ----------------------------------------------------------------------------- verify


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the backup at ``path``; a clear error when it is none."""
    file = Path(path) / MANIFEST
    if not Path(path).is_dir():
        raise PipelineError(f"{path} is not a folder: name a backup folder (it holds {MANIFEST})")
    if not file.exists():
        raise PipelineError(
            f"{path} has no {MANIFEST}: not a stockbatch backup, or one that was interrupted "
            "(create a new one with `stockbatch backup create`)"
        )
    try:
        doc = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{file} cannot be read ({exc}); the backup is damaged") from exc
    if not isinstance(doc, dict) or doc.get("kind") != KIND or "files" not in doc:
        raise PipelineError(f"{file} is not a stockbatch backup manifest")
    if int(doc.get("format", 0)) > FORMAT:
        raise PipelineError(
            f"{path} was written by a newer stockbatch (backup format {doc['format']}); "
            f"upgrade stockbatch (this is {__version__}) to read it"
        )
    return doc


def verify_backup(path: Path, *, progress: Progress = no_progress) -> VerifyResult:
    """Re-hash every file of the backup at ``path`` against its manifest."""
    root = Path(path)
    doc = read_manifest(root)
    listed: dict[str, dict[str, Any]] = doc["files"]
    result = VerifyResult(path=root, files=len(listed), manifest=doc)
    for name, found in _hash_files(root, sorted(listed), progress, "verifying backup"):
        want = listed[name]
        if found is None:
            result.missing.append(name)
        elif found != (want["bytes"], want["sha256"]):
            result.changed.append(name)
    result.unexpected = sorted(set(_relative_files(root)) - set(listed))
    return result


# ----------------------------------------------------------------------------- restore


def restore_backup(
    settings: Settings,
    path: Path,
    *,
    progress: Progress = no_progress,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> RestoreResult:
    """Verify the backup at ``path``, then restore it into the settings' home and
    warehouse, which must both be empty (a home may hold services, logs, backups).

    Lake and snapshot files are hard-linked from the backup where possible (safe:
    see the module), the warehouse is copied (SQLite) or ``pg_restore``-d
    (PostgreSQL). Runs under the home's run lock.
    """
    started = time.perf_counter()
    root = Path(path)
    checked = verify_backup(root, progress=progress)
    if not checked.ok:
        listing = "; ".join(checked.problems()[:5])
        raise PipelineError(
            f"{checked.summary()} ({listing}); nothing was restored. "
            "Run `stockbatch backup verify` for the full list, or restore another backup"
        )
    doc = checked.manifest
    with runs.home_lock(settings, "backup restore", wait=wait, on_wait=on_wait):
        _check_empty_home(settings, doc)
        names = [n for n in sorted(doc["files"]) if n.split("/", 1)[0] in (LAKE, EXPORTS)]
        roots = {LAKE: settings.lake_path, EXPORTS: Path(settings.home) / snapshots.EXPORTS}
        pairs = [(n, root / n) for n in names]
        for folder in roots.values():
            folder.mkdir(parents=True, exist_ok=True)
        try:
            for prefix, dest_root in roots.items():
                mine = [(n.split("/", 1)[1], src) for n, src in pairs if n.startswith(prefix + "/")]
                _place(mine, dest_root, progress, f"restoring {prefix}")
            _restore_logs(settings, root, [n for n in doc["files"] if n.startswith(HOME + "/")])
            where = None
            if doc.get("warehouse"):
                wh = doc["warehouse"]
                where = dump.restore(settings, root / wh["file"], wh["kind"], progress)
                _repoint_loaded(settings, wh.get("loaded_as"))
        except BaseException:
            # Leave the home as empty as it was, so the restore can simply be run again.
            for folder in roots.values():
                shutil.rmtree(folder, ignore_errors=True)
            raise
    return RestoreResult(
        home=Path(settings.home),
        files=len(names),
        bytes=sum(int(doc["files"][n]["bytes"]) for n in names),
        warehouse=where,
        newest_run_id=doc.get("newest_run_id"),
        duration_s=time.perf_counter() - started,
    )


def _repoint_loaded(settings: Settings, loaded_as: str | None) -> None:
    """Make ``gold/_loaded.json`` name the restored warehouse. It names the database the
    gold checksums were loaded into; the restored one is that database's image, so the
    next load goes on incrementally and snapshots see a current warehouse (instead of
    a reload of everything into what looks like another database). A new file is
    written (a new inode): the backup's hard-linked copy stays as it was."""
    path = lake.layout(settings).loaded_state
    record = lake.read_json(path)
    if not record or not loaded_as or record.get("warehouse_url") != loaded_as:
        return
    record["warehouse_url"] = dump.loader_display_url(settings)
    lake.atomic_write_bytes(path, json.dumps(record).encode())


def _check_empty_home(settings: Settings, doc: dict[str, Any]) -> None:
    """Refuse a home that holds a lake, snapshots or a warehouse (nothing is merged)."""
    held = [
        str(folder)
        for folder in (settings.lake_path, Path(settings.home) / snapshots.EXPORTS)
        if _files_below(folder)
    ]
    if doc.get("warehouse"):
        empty, where = dump.is_empty(settings)
        if not empty:
            held.append(f"the warehouse {where}")
    if held:
        raise PipelineError(
            f"the home {settings.home} is not empty ({', '.join(held)} hold data): restore "
            "into a new STOCKBATCH_HOME (and an empty database), or move these away first"
        )
