"""The relational warehouse (SQLite embedded, PostgreSQL with services).

- ``models``: the tables (SQLAlchemy Core), one definition for both databases;
- ``db``: ``engine_for(url)``, ``migrate(url)`` (Alembic, migrations shipped in this package),
  ``resolve_urls(settings)`` (owner/loader/reader URLs), ``WarehouseUnavailable``;
- ``loader``: transactional upserts from Arrow (``load_table``), the quarantine
  (``replace_quarantine``), run-scoped replaces (``replace_run_rows``),
  ``record_run``, ``audit``; all of them in ONE transaction per run with
  ``run_transaction(engine)``; PostgreSQL loads by binary ``COPY`` (``pgcopy``);
- ``queries``: the reads of the API, the dashboard and the ML export.
"""

from stockbatch.warehouse.db import (
    ALEMBIC_INI,
    MIGRATIONS_DIR,
    WarehouseNotConfigured,
    WarehouseUnavailable,
    WarehouseUrls,
    engine_for,
    migrate,
    resolve_urls,
)
from stockbatch.warehouse.loader import (
    DuplicateKeyError,
    LoadStats,
    WarehouseTransaction,
    audit,
    load_table,
    load_tables,
    record_run,
    replace_quarantine,
    replace_run_rows,
    run_transaction,
)
from stockbatch.warehouse.models import UPSERT_KEYS, metadata

__all__ = [
    "ALEMBIC_INI",
    "MIGRATIONS_DIR",
    "UPSERT_KEYS",
    "DuplicateKeyError",
    "LoadStats",
    "WarehouseNotConfigured",
    "WarehouseTransaction",
    "WarehouseUnavailable",
    "WarehouseUrls",
    "audit",
    "engine_for",
    "load_table",
    "load_tables",
    "metadata",
    "migrate",
    "record_run",
    "replace_quarantine",
    "replace_run_rows",
    "resolve_urls",
    "run_transaction",
]
