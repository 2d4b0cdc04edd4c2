"""Engines and schema migrations of the warehouse.

``engine_for(url)`` is the one place an engine is made, so every caller (the
loader, the API, Alembic's CLI) gets the same SQLite settings. ``migrate(url)``
runs ``alembic upgrade head`` with the migrations shipped inside this package;
no ``alembic.ini`` is needed at run time. For the ``alembic`` command line
(``revision --autogenerate``, ``downgrade``, ``history``) point it at the ini
file shipped next to this module::

    alembic -c "$(python -c 'import stockbatch.warehouse as w; print(w.ALEMBIC_INI)')" upgrade head

The database it acts on is ``-x url=...`` if given, else the settings tree
(``STOCKBATCH_WAREHOUSE__URL`` / ``STOCKBATCH_HOME``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event

PACKAGE_DIR = Path(__file__).resolve().parent
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
ALEMBIC_INI = PACKAGE_DIR / "alembic.ini"

# Per-connection SQLite settings. WAL lets the API read while a load writes; synchronous=NORMAL
# is durable at every checkpoint and never corrupts in WAL mode, at a fraction of FULL's fsyncs;
# a 64 MiB page cache and memory-mapped reads keep bulk upserts and scans off the syscall path.
SQLITE_PRAGMAS: dict[str, str | int] = {
    "journal_mode": "WAL",
    "synchronous": "NORMAL",
    "foreign_keys": "ON",
    "busy_timeout": 30_000,
    "cache_size": -65_536,  # KiB when negative
    "mmap_size": 268_435_456,
    "temp_store": "FILE",  # staging tables of multi-million-row loads must not have to fit in RAM
    "journal_size_limit": 67_108_864,  # truncate the WAL after a big load is checkpointed
}


def _is_sqlite(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_file(url: sa.URL) -> Path | None:
    """Database file of a SQLite URL, or None for in-memory / URI forms."""
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:") or url.query.get("uri"):
        return None
    return Path(db)


def engine_for(url: str, **kwargs: Any) -> sa.Engine:
    """Make an engine for ``url``.

    For SQLite: creates the file's parent folder, applies ``SQLITE_PRAGMAS`` on
    every new connection and hands transaction control to SQLAlchemy (so DDL,
    e.g. a migration or a staging table, is transactional too). ``kwargs`` go to
    ``sqlalchemy.create_engine``.
    """
    parsed = sa.make_url(url)
    if not _is_sqlite(parsed):
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(parsed, **kwargs)

    path = _sqlite_file(parsed)
    if path is not None:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        # Legacy sqlite3 transaction control would skip BEGIN before DDL and SELECT; we emit it.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for name, value in SQLITE_PRAGMAS.items():
            cur.execute(f"PRAGMA {name} = {value}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration for the packaged migrations (no ini file read)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # configparser interpolation: a literal % (URL-encoded passwords) must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the newest).

    Idempotent: a database already at ``revision`` is left untouched. The whole
    upgrade runs in one transaction (also on SQLite), so a failing migration
    leaves the schema as it was.
    """
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def current_revision(engine: sa.Engine) -> str | None:
    """The Alembic revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
