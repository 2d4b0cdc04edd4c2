"""Warehouse tables (SQLAlchemy Core), one ``MetaData`` for SQLite and PostgreSQL.

The column names and types follow ``stockbatch.schema`` (FEATURES.md). Only
portable types are used, so the same tables (and the same Alembic migrations)
serve the embedded SQLite file and PostgreSQL:

- prices, volumes and features: ``Double`` (SQLite REAL, PostgreSQL double
  precision). ``volume`` is a double, not an integer, because the canonical
  Arrow schemas carry it as float64 and the warehouse must give back exactly
  what it was given.
- dates: ``Date``; timestamps: ``DateTime(timezone=True)`` stored in UTC.
- JSON documents: ``JSON`` (``JSONB`` on PostgreSQL, so they can be indexed).

The wide keyed tables are ``WITHOUT ROWID`` on SQLite: the rows then live in
the primary-key B-tree itself, so an upsert maintains one tree instead of two
(ignored by PostgreSQL).

``migrations/versions/0001_initial.py`` spells the same tables out literally
(a migration is a frozen snapshot); a unit test checks that the migrated
database and this module do not differ.
"""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from stockbatch import schema

# Deterministic constraint names, so later migrations (and batch mode on SQLite) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

SYMBOL = sa.String(64)
"""Tickers are short; 64 leaves room for Yahoo's longest forms (``EURUSD=X``, ``^GSPC``)."""

# none_as_null: a missing document is SQL NULL, not the JSON text 'null'.
JSON_DOC = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)

# SQLite only auto-numbers an INTEGER PRIMARY KEY (the rowid alias); PostgreSQL gets a bigint
# identity.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _double(name: str, nullable: bool = True) -> sa.Column[float]:
    return sa.Column(name, sa.Double(), nullable=nullable)


instruments = sa.Table(
    "instruments",
    metadata,
    sa.Column("symbol", SYMBOL, primary_key=True),
    sa.Column("name", sa.Text()),
    sa.Column("exchange", sa.String(32)),
    sa.Column("is_etf", sa.Boolean()),
    sa.Column("source", sa.String(32)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

daily_bars = sa.Table(
    "daily_bars",
    metadata,
    sa.Column("symbol", SYMBOL, primary_key=True),
    sa.Column("trade_date", sa.Date(), primary_key=True),
    _double("open"),  # nullable: "not recorded" (contract v2, migration 0003)
    _double("high", nullable=False),
    _double("low", nullable=False),
    _double("close", nullable=False),
    _double("adj_close"),  # nullable: not every source has an adjusted close
    _double("volume", nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    # Mirrors the silver validation (FEATURES.md section 4): non_positive_price, high_below_low,
    # negative_volume. adj_close is not checked because validation does not refuse it either.
    # A null open passes the first check (unknown is accepted), a zero or negative one does not.
    sa.CheckConstraint("open > 0 AND high > 0 AND low > 0 AND close > 0", name="prices_positive"),
    sa.CheckConstraint("high >= low", name="high_not_below_low"),
    sa.CheckConstraint("volume >= 0", name="volume_not_negative"),
    sqlite_with_rowid=False,
)

daily_features = sa.Table(
    "daily_features",
    metadata,
    sa.Column("symbol", SYMBOL, primary_key=True),
    sa.Column("trade_date", sa.Date(), primary_key=True),
    *[_double(name) for name in schema.DAILY_FEATURE_COLUMNS],
    sqlite_with_rowid=False,
)


def _quarterly_columns() -> list[sa.Column[object]]:
    """Every column of schema.QUARTERLY_FEATURES with its SQL type."""
    cols: list[sa.Column[object]] = []
    for field in schema.QUARTERLY_FEATURES:
        if field.name == "symbol":
            cols.append(sa.Column("symbol", SYMBOL, primary_key=True))
        elif field.name == "quarter":
            cols.append(sa.Column("quarter", sa.String(8), primary_key=True))
        elif field.type == pa.date32():
            cols.append(sa.Column(field.name, sa.Date()))
        elif field.type == pa.int32():
            cols.append(sa.Column(field.name, sa.Integer()))
        elif field.type == pa.bool_():
            cols.append(sa.Column(field.name, sa.Boolean()))
        elif field.type == pa.float64():
            cols.append(sa.Column(field.name, sa.Double()))
        else:  # pragma: no cover - guards a future contract change
            raise TypeError(f"no SQL type for quarterly column {field.name}: {field.type}")
    return cols


quarterly_features = sa.Table(
    "quarterly_features",
    metadata,
    *_quarterly_columns(),
    sa.Index(None, "quarter"),  # the API and the ML export filter by quarter
    sqlite_with_rowid=False,
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("ingest_run_id", sa.String(64)),
    sa.Column("source", sa.String(32)),
    sa.Column("source_file", sa.Text()),
    sa.Column("line_no", sa.Integer()),
    sa.Column("symbol", SYMBOL),
    # Raw fields stay text: a quarantined row is kept exactly as it arrived.
    sa.Column("trade_date", sa.Text()),
    sa.Column("open", sa.Text()),
    sa.Column("high", sa.Text()),
    sa.Column("low", sa.Text()),
    sa.Column("close", sa.Text()),
    sa.Column("adj_close", sa.Text()),
    sa.Column("volume", sa.Text()),
    sa.Column("is_adjusted", sa.Boolean()),
    sa.Column("n_fields", sa.SmallInteger()),
    sa.Column("raw_line", sa.Text()),
    sa.Column("reasons", sa.Text(), nullable=False),  # comma-joined reason codes
    sa.Index(None, "run_id"),
    sa.Index(None, "symbol"),
)

pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16)),
    sa.Column("command", sa.String(64)),
    sa.Column("params", JSON_DOC),
    sa.Column("counts", JSON_DOC),
    sa.Column("rows_in", sa.BigInteger()),
    sa.Column("rows_clean", sa.BigInteger()),
    sa.Column("rows_quarantined", sa.BigInteger()),
    sa.Column("rows_deduplicated", sa.BigInteger()),
    sa.Column("duration_s", sa.Double()),
    sa.Column("manifest", JSON_DOC),  # the whole run manifest (migration 0004)
    sa.Index(None, "started_at"),
)

data_quality = sa.Table(
    "data_quality",
    metadata,
    sa.Column(
        "run_id",
        sa.String(64),
        sa.ForeignKey("pipeline_runs.run_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("metric", sa.String(128), primary_key=True),  # e.g. reasons.duplicate
    sa.Column("kind", sa.String(32), nullable=False),  # count | reasons | health | ...
    sa.Column("value", sa.Double(), nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("detail", JSON_DOC),
    sa.Index(None, "at"),
)

ROLES = ("viewer", "analyst", "admin")
"""API roles, each with every right of the ones before it."""

api_users = sa.Table(
    "api_users",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.Text()),  # argon2id; null: token-only account
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("failed_logins", sa.Integer(), nullable=False),
    sa.Column("locked_until", sa.DateTime(timezone=True)),
    sa.CheckConstraint("role IN ('viewer', 'analyst', 'admin')", name="role_known"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("user_id", BIG_ID, sa.ForeignKey("api_users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
)

SECRET_TABLES = ("api_users", "api_tokens")
"""Account tables: never readable by the reader role, never counted as data."""

UPSERT_KEYS: dict[str, tuple[str, ...]] = {
    "instruments": ("symbol",),
    "daily_bars": ("symbol", "trade_date"),
    "daily_features": ("symbol", "trade_date"),
    "quarterly_features": ("symbol", "quarter"),
}
"""Natural key of each upserted table (the loader's ``key`` argument)."""
