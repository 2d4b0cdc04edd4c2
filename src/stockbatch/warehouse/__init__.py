"""The relational warehouse (SQLite embedded, PostgreSQL with services).

- ``models``: the tables (SQLAlchemy Core), one definition for both databases;
- ``db``: ``engine_for(url)``, ``migrate(url)`` (Alembic, migrations shipped in this package);
- ``loader``: transactional upserts from Arrow (``load_table``), the quarantine
  (``replace_quarantine``), run-scoped replaces (``replace_run_rows``),
  ``record_run``, ``audit``;
- ``queries``: the reads of the API, the dashboard and the ML export.
"""

from stockbatch.warehouse.db import ALEMBIC_INI, MIGRATIONS_DIR, engine_for, migrate
from stockbatch.warehouse.loader import (
    DuplicateKeyError,
    LoadStats,
    audit,
    load_table,
    record_run,
    replace_quarantine,
    replace_run_rows,
)
from stockbatch.warehouse.models import UPSERT_KEYS, metadata

__all__ = [
    "ALEMBIC_INI",
    "MIGRATIONS_DIR",
    "UPSERT_KEYS",
    "DuplicateKeyError",
    "LoadStats",
    "audit",
    "engine_for",
    "load_table",
    "metadata",
    "migrate",
    "record_run",
    "replace_quarantine",
    "replace_run_rows",
]
