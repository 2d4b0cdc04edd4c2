"""The warehouse half of a backup: dump it to one file, and restore that file.

SQLite: Python's online backup API (``sqlite3.Connection.backup``) copies a
transaction-consistent image while readers (the API) go on; the restore copies
that file into place. PostgreSQL: ``pg_dump -Fc`` (custom format, one file) as
the owner role, and ``pg_restore`` into an empty database, then the loader and
reader group roles get their privileges again (:func:`stockbatch.warehouse.db.grant_roles`).
The tools are the newest Debian ``/usr/lib/postgresql/<v>/bin`` (``STOCKBATCH_PG_BINDIR``
wins), as the PostgreSQL service finds them: a ``pg_dump`` at least as new as the server.
Passwords go to the tools through ``PGPASSWORD`` in their environment, never on the
command line (where ``ps`` would show them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from stockbatch.errors import PipelineError
from stockbatch.results import Progress, no_progress
from stockbatch.settings import Settings
from stockbatch.warehouse import db, models

SQLITE_FILE = "warehouse.db"
PG_FILE = "warehouse.pgdump"
STOCKBATCH_TABLES = frozenset({*models.metadata.tables, "alembic_version"})
"""Tables whose presence means a database already holds a stockbatch warehouse."""

PG_TIMEOUT_S = 3600
"""Upper bound of one pg_dump / pg_restore (the tools otherwise wait forever on a lock)."""


def warehouse_url(settings: Settings) -> str:
    """The owner's URL: it owns every table, so it can dump (and restore) them all,
    including the API's password hashes that the reader may not read."""
    return db.resolve_urls(settings).owner


def loader_display_url(settings: Settings) -> str:
    """How ``gold/_loaded.json`` names the warehouse (the loader's URL, password masked)."""
    return db.display_url(db.resolve_urls(settings).loader)


def sqlite_path(url: str) -> Path:
    """The database file of a SQLite URL (in-memory or URI forms cannot be backed up)."""
    parsed = sa.make_url(url)
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:") or parsed.query.get("uri"):
        raise PipelineError(
            f"the SQLite warehouse {db.display_url(url)} is not a plain file; set "
            "STOCKBATCH_WAREHOUSE__URL to sqlite:////path/warehouse.db to back it up"
        )
    return Path(name).expanduser()


def dump(
    settings: Settings, folder: Path, progress: Progress = no_progress
) -> dict[str, Any] | None:
    """Dump the configured warehouse into ``folder``; what the manifest records about it
    (``kind``, ``file`` relative to ``folder``'s parent), or None when there is none yet."""
    url = warehouse_url(settings)
    folder.mkdir(parents=True, exist_ok=True)
    if settings.warehouse.kind == "sqlite":
        source = sqlite_path(url)
        if not source.exists() or source.stat().st_size == 0:
            return None
        target = folder / SQLITE_FILE
        _sqlite_copy(source, target, progress, "backing up warehouse")
        return {
            "kind": "sqlite",
            "file": f"{folder.name}/{SQLITE_FILE}",
            "loaded_as": loader_display_url(settings),
        }
    target = folder / PG_FILE
    tool = pg_tool("pg_dump")
    # -Fc: compressed, and pg_restore can restore it into a database of another name.
    _run([str(tool), "--format=custom", "--no-password", f"--file={target}"], url, "pg_dump")
    return {
        "kind": "postgresql",
        "file": f"{folder.name}/{PG_FILE}",
        "pg_dump": _tool_version(tool),
        "source": db.display_url(url),
        "loaded_as": loader_display_url(settings),
    }


SQLITE_STEP_PAGES = 4096
"""Pages the online backup copies per step (16 MiB at SQLite's 4 KiB pages): a step
holds the source's read lock, and the progress bar moves once per step."""


def _sqlite_copy(
    source: Path, target: Path, progress: Progress = no_progress, what: str = ""
) -> None:
    """A consistent copy of a live SQLite database (the online backup API), mode 0600.

    A writer between two steps makes SQLite restart the copy, so the result is
    always one transaction's image."""
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    pages = int(src.execute("PRAGMA page_count").fetchone()[0])
    task = progress(what or "copying warehouse", pages)
    done = [0]

    def step(_status: int, remaining: int, total: int) -> None:
        task.advance(max(total - remaining - done[0], 0))
        done[0] = total - remaining

    try:
        src.backup(dst, pages=SQLITE_STEP_PAGES, progress=step)
        # One self-contained file: no -wal beside it (the live database is in WAL mode).
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        task.close()
        dst.close()
        src.close()


def is_empty(settings: Settings) -> tuple[bool, str]:
    """Whether the configured warehouse holds no stockbatch table (and where it is)."""
    url = warehouse_url(settings)
    if settings.warehouse.kind == "sqlite":
        path = sqlite_path(url)
        if not path.exists() or path.stat().st_size == 0:
            return True, str(path)
        names = set(_sqlite_tables(path))
        return not (names & STOCKBATCH_TABLES), str(path)
    engine = db.engine_for(url)
    try:
        names = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    return not (names & STOCKBATCH_TABLES), db.display_url(url)


def _sqlite_tables(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    finally:
        conn.close()


def restore(
    settings: Settings, dump_file: Path, kind: str, progress: Progress = no_progress
) -> str:
    """Restore ``dump_file`` (made by :func:`dump`) into the configured, empty warehouse;
    returns where it went. The caller checked emptiness (:func:`is_empty`)."""
    if kind != settings.warehouse.kind:
        raise PipelineError(
            f"the backup holds a {kind} warehouse but this home is configured for "
            f"{settings.warehouse.kind}: set STOCKBATCH_WAREHOUSE__KIND={kind} (and its URL)"
        )
    url = warehouse_url(settings)
    if kind == "sqlite":
        target = sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        # A copy, never a hard link: SQLite changes its file in place, which would alter
        # the backup too.
        _sqlite_copy(dump_file, tmp, progress, "restoring warehouse")
        for stale in (f"{target}-wal", f"{target}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        os.replace(tmp, target)
        return str(target)
    tool = pg_tool("pg_restore")
    # --no-owner/--no-privileges: the objects belong to the role restoring them (this
    # server's owner role), and the group roles get their grants from grant_roles below,
    # so a dump restores on another server whose roles differ. One transaction: a
    # failed restore leaves the database empty.
    _run(
        [
            str(tool),
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            "--no-password",
            f"--dbname={_libpq_dbname(url)}",
            str(dump_file),
        ],
        url,
        "pg_restore",
    )
    engine = db.engine_for(url)
    try:
        with engine.begin() as conn:
            db.grant_roles(conn)
    finally:
        engine.dispose()
    return db.display_url(url)


# ----------------------------------------------------------------------------- tools


def pg_tool(name: str) -> Path:
    """``pg_dump`` or ``pg_restore`` of the newest PostgreSQL installed (see the module)."""
    from stockbatch.services.postgresql import INSTALL_HINT, find_pg_bindir
    from stockbatch.services.system import ServiceError

    try:
        folder = find_pg_bindir()
    except ServiceError:
        folder = None
    candidates = [folder / name] if folder is not None else []
    if found := shutil.which(name):
        candidates.append(Path(found))
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise PipelineError(f"{name} was not found: {INSTALL_HINT}")


def _tool_version(tool: Path) -> str:
    done = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def _libpq_env(url: str) -> dict[str, str]:
    """The libpq variables of a SQLAlchemy URL (the password travels here, not in argv)."""
    parsed = sa.make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    values = {
        "PGHOST": parsed.host,
        "PGPORT": str(parsed.port) if parsed.port else None,
        "PGUSER": parsed.username,
        "PGPASSWORD": parsed.password,
        "PGDATABASE": parsed.database,
        "PGCONNECT_TIMEOUT": str(db.CONNECT_TIMEOUT_S),
        # The URL's TLS parameters (services.json records verify-full and the local CA),
        # so the tools check the server's certificate like every other client.
        "PGSSLMODE": _query_value(parsed.query.get("sslmode")),
        "PGSSLROOTCERT": _query_value(parsed.query.get("sslrootcert")),
    }
    env.update({k: v for k, v in values.items() if v})
    return env


def _query_value(value: str | tuple[str, ...] | None) -> str | None:
    """One value of a URL query parameter (SQLAlchemy gives a tuple when repeated)."""
    if isinstance(value, tuple):
        return value[-1] if value else None
    return value


def _libpq_dbname(url: str) -> str:
    return sa.make_url(url).database or "postgres"


def _run(command: list[str], url: str, what: str) -> None:
    try:
        done = subprocess.run(
            command,
            env=_libpq_env(url),
            capture_output=True,
            text=True,
            timeout=PG_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PipelineError(
            f"{what} did not finish within {PG_TIMEOUT_S} s on {db.display_url(url)}; "
            "check the server's locks and log, then try again"
        ) from exc
    if done.returncode != 0:
        detail = " ".join(done.stderr.strip().splitlines()[-3:]) or f"exit code {done.returncode}"
        raise PipelineError(
            f"{what} failed on {db.display_url(url)}: {detail}. Check that the server is up "
            "(`stockbatch services status`) and that the owner role may connect"
        )
