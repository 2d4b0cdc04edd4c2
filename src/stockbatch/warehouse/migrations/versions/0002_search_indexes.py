"""Indexes for the API's instrument search (PostgreSQL); checks re-asserted on both.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

What the API reads and which index serves it:

- bars / daily features of one symbol over a date range: the primary keys
  ``(symbol, trade_date)`` of ``daily_bars`` and ``daily_features`` (0001);
- quarterly features by quarter: ``ix_quarterly_features_quarter`` (0001);
- instrument search (``queries.instruments``: ``lower(symbol) LIKE 'x%'`` or
  ``lower(name) LIKE '%x%'``): new here, PostgreSQL only. A trigram GIN index
  (``pg_trgm``, in Debian's postgresql-contrib, part of the postgresql package)
  on ``lower(name)`` serves the substring match, and a ``text_pattern_ops``
  B-tree on ``lower(symbol)`` the prefix match. Without ``pg_trgm`` on the
  server a plain B-tree on ``lower(name)`` is created instead (exact and prefix
  matches only). SQLite gets nothing: it cannot use an index for ``LIKE '%x%'``
  and its instruments table is a few thousand rows.

The CHECK constraints of the contract (prices > 0, high >= low, volume >= 0 on
``daily_bars``) already exist since 0001 on both databases; nothing to add.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _trgm_available() -> bool:
    bind = op.get_bind()
    return (
        bind.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
        ).scalar()
        is not None
    )


def upgrade() -> None:
    """PostgreSQL: search indexes on instruments (trigram when pg_trgm is available)."""
    if not _is_postgresql():
        return
    op.execute(
        "CREATE INDEX ix_instruments_lower_symbol ON instruments (lower(symbol) text_pattern_ops)"
    )
    if _trgm_available():
        # pg_trgm is a trusted extension (PG 13+): the database owner may create it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_instruments_lower_name ON instruments "
            "USING gin (lower(name) gin_trgm_ops)"
        )
    else:
        op.execute("CREATE INDEX ix_instruments_lower_name ON instruments (lower(name))")


def downgrade() -> None:
    """Drop the search indexes (the extension stays: other objects may use it)."""
    if not _is_postgresql():
        return
    op.execute("DROP INDEX IF EXISTS ix_instruments_lower_name")
    op.execute("DROP INDEX IF EXISTS ix_instruments_lower_symbol")
