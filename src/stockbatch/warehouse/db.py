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

PostgreSQL: ``resolve_urls(settings)`` gives the three role URLs (owner for
``migrate``, loader for loads, reader for reads). ``engine_for`` connects once
at creation and bounds every connection attempt (``connect_timeout``, default
``CONNECT_TIMEOUT_S``): an unreachable server raises :class:`WarehouseUnavailable`
with a one-line message saying what to do, instead of a driver traceback.
``migrate`` then grants the group roles ``stockbatch_write`` / ``stockbatch_read``
(when they exist) their privileges on every table, so the loader and the reader
can work on what the owner just created.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event

from stockbatch.errors import PipelineError
from stockbatch.warehouse import models

if TYPE_CHECKING:
    from stockbatch.settings import Settings

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


CONNECT_TIMEOUT_S = 10
"""Seconds a PostgreSQL connection attempt may take before the warehouse counts as down."""

WRITE_ROLE = "stockbatch_write"
READ_ROLE = "stockbatch_read"
"""Group roles of the loader and the reader (``stockbatch services up postgresql`` creates
them; on another server a DBA may). ``migrate`` grants them their table privileges."""

_START_HINT = "start it with `stockbatch services up postgresql` or check STOCKBATCH_WAREHOUSE__URL"


class WarehouseUnavailable(RuntimeError):
    """The warehouse server cannot be reached; the message is one line saying what to do."""


class WarehouseNotConfigured(PipelineError, ValueError):
    """``warehouse.kind=postgresql`` but no URL is set and none is recorded."""


@dataclass(frozen=True)
class WarehouseUrls:
    """The URL of each warehouse role (SQLite: the same file three times)."""

    owner: str
    """Runs migrations (owns the schema)."""
    loader: str
    """Loads: SELECT/INSERT/UPDATE/DELETE and temp tables, no DDL on the schema."""
    reader: str
    """Reads only (API, dashboard, exports)."""


def resolve_urls(settings: Settings) -> WarehouseUrls:
    """The owner, loader and reader URLs of ``settings.warehouse``.

    SQLite: ``settings.warehouse.url`` or ``$STOCKBATCH_HOME/warehouse.db``, for all
    three. PostgreSQL: each explicit setting wins (``url`` is the loader's;
    ``owner_url`` / ``reader_url`` default to ``url`` when that is set), the rest
    come from ``$STOCKBATCH_HOME/services.json`` (``stockbatch services up
    postgresql``). Raises :class:`WarehouseNotConfigured` when a URL is still missing.
    """
    wh = settings.warehouse
    if wh.kind == "sqlite":
        url = wh.url or f"sqlite:///{(settings.home / 'warehouse.db').resolve()}"
        return WarehouseUrls(owner=wh.owner_url or url, loader=url, reader=wh.reader_url or url)
    from stockbatch.services.endpoints import recorded_endpoints

    if wh.url:
        return WarehouseUrls(
            owner=wh.owner_url or wh.url, loader=wh.url, reader=wh.reader_url or wh.url
        )
    record = recorded_endpoints(settings.home).get("postgresql") or {}
    owner = wh.owner_url or record.get("owner_url")
    loader = record.get("loader_url")
    reader = wh.reader_url or record.get("reader_url")
    if not (owner and loader and reader):
        raise WarehouseNotConfigured(
            "warehouse.kind=postgresql but no PostgreSQL is recorded in "
            f"{Path(settings.home).resolve() / 'services.json'}: run `stockbatch services up "
            "postgresql` (same STOCKBATCH_HOME) or set STOCKBATCH_WAREHOUSE__URL"
        )
    return WarehouseUrls(owner=owner, loader=loader, reader=reader)


def loaded_reader(settings: Settings) -> sa.Engine:
    """A read-only connection (the reader role on PostgreSQL) to a loaded warehouse.

    Raises a :class:`PipelineError` that says what to run when nothing was loaded yet.
    """
    engine = engine_for(resolve_urls(settings).reader)
    if not sa.inspect(engine).has_table("quarterly_features"):
        raise PipelineError(
            "the warehouse is empty: run `stockbatch run` (or `stockbatch load`) first."
        )
    return engine


def display_url(url: str) -> str:
    """A URL fit to store or print: the password masked."""
    return sa.make_url(url).render_as_string(hide_password=True)


def _where(url: sa.URL) -> str:
    """``host:port/database`` of a URL, without user or password (for messages)."""
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unavailable(url: sa.URL, exc: BaseException) -> WarehouseUnavailable:
    """The one-line error for a server at ``url`` that failed with ``exc``."""
    return WarehouseUnavailable(
        f"PostgreSQL warehouse at {_where(url)} is unavailable ({_first_line(exc)}); {_START_HINT}"
    )


def _postgres_engine(parsed: sa.URL, check: bool, kwargs: dict[str, Any]) -> sa.Engine:
    kwargs.setdefault("pool_pre_ping", True)
    connect_args = dict(kwargs.pop("connect_args", {}))
    if "connect_timeout" not in parsed.query:
        connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: sa.engine.ExceptionContext) -> BaseException | None:
        # A lost or refused connection becomes one clear error; SQL errors stay as they are.
        # Pre-ping failures are left alone: the pool reconnects by itself.
        if ctx.is_pre_ping:
            return None
        if ctx.is_disconnect or (
            ctx.connection is None and isinstance(ctx.sqlalchemy_exception, sa.exc.OperationalError)
        ):
            return unavailable(parsed, ctx.original_exception)
        return None

    if check:
        try:
            with engine.connect():
                pass
        except WarehouseUnavailable:
            engine.dispose()
            raise
        except sa.exc.OperationalError as exc:
            engine.dispose()
            raise unavailable(parsed, exc) from None
    return engine


def engine_for(url: str, *, check: bool = True, **kwargs: Any) -> sa.Engine:
    """Make an engine for ``url``.

    For SQLite: creates the file's parent folder and the file (mode 0600), applies
    ``SQLITE_PRAGMAS`` on every new connection and hands transaction control to SQLAlchemy (so DDL,
    e.g. a migration or a staging table, is transactional too). For a server
    (PostgreSQL): every connection attempt is bounded by ``connect_timeout``
    (``CONNECT_TIMEOUT_S`` unless the URL sets it); with ``check`` one connection
    is made at once, and a server that cannot be reached (now or later) raises
    :class:`WarehouseUnavailable`. ``kwargs`` go to ``sqlalchemy.create_engine``.
    """
    parsed = sa.make_url(url)
    if not _is_sqlite(parsed):
        return _postgres_engine(parsed, check, kwargs)

    path = _sqlite_file(parsed)
    if path is not None:
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        # The same rule as the lake's files: readable by the owner only. SQLite gives its
        # -wal and -shm files the database file's mode, so creating it 0600 covers them.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
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
            if conn.dialect.name == "postgresql":
                grant_roles(conn)
    finally:
        engine.dispose()


SECRET_TABLES = models.SECRET_TABLES
"""Tables the reader role may not read (``grant_roles``)."""


def grant_roles(conn: sa.Connection, schema: str = "public") -> list[str]:
    """Grant ``WRITE_ROLE`` / ``READ_ROLE`` (those that exist) their privileges in ``schema``.

    Write: SELECT/INSERT/UPDATE/DELETE on every table, USAGE/SELECT on every
    sequence (the ids of quarantine and audit_log). Read: SELECT on every table but
    ``SECRET_TABLES``.
    Idempotent; run by ``migrate`` as the owner, in the migration's transaction.
    Returns the roles granted to.
    """
    existing = set(
        conn.execute(
            sa.text("SELECT rolname FROM pg_roles WHERE rolname IN (:w, :r)"),
            {"w": WRITE_ROLE, "r": READ_ROLE},
        ).scalars()
    )
    ident = conn.dialect.identifier_preparer.quote
    where = ident(schema)
    if WRITE_ROLE in existing:
        role = ident(WRITE_ROLE)
        conn.exec_driver_sql(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {where} TO {role}"
        )
        conn.exec_driver_sql(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {where} TO {role}")
        # Alembic's bookkeeping is the owner's alone: a loader must not move the revision.
        conn.exec_driver_sql(
            f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {where}.alembic_version FROM {role}"
        )
    if READ_ROLE in existing:
        reader = ident(READ_ROLE)
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {where} TO {reader}")
        # Password and token hashes are for the API's auth store alone, not for every reader.
        for table in SECRET_TABLES:
            if sa.inspect(conn).has_table(table, schema=schema):
                conn.exec_driver_sql(f"REVOKE ALL ON {where}.{ident(table)} FROM {reader}")
    return sorted(existing)


def current_revision(engine: sa.Engine) -> str | None:
    """The Alembic revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
