"""Initial warehouse schema: instruments, bars, features, quarantine, runs, quality, audit.

Revision ID: 0001
Revises:
Create Date: 2026-02-20

Spelled out literally (not read from models.py), as a migration is a frozen
snapshot; tests/unit/warehouse checks that models.py and this agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYMBOL = sa.String(length=64)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

DAILY_FEATURES = (
    "ret_1d",
    "log_ret_1d",
    "sma_5",
    "sma_20",
    "sma_50",
    "sma_200",
    "ema_12",
    "ema_26",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi_14",
    "true_range",
    "atr_14",
    "volatility_20",
    "bb_upper_20",
    "bb_lower_20",
    "volume_z_20",
    "dollar_volume",
)

QUARTERLY_DOUBLES_1 = (
    "q_open",
    "q_high",
    "q_low",
    "q_close",
    "q_return",
    "q_log_return",
    "q_volatility",
    "q_max_drawdown",
    "q_avg_volume",
    "q_dollar_volume",
)
QUARTERLY_INTS = ("q_trading_days", "q_expected_days", "q_missing_days")
QUARTERLY_DOUBLES_2 = (
    "sma_50_end",
    "sma_200_end",
    "rsi_14_end",
    "macd_end",
    "atr_14_end",
    "volatility_20_end",
    "close_to_sma_200_end",
)


def upgrade() -> None:
    """Create every table."""
    # Long on purpose: a migration is a frozen, declarative record of the schema at
    # revision 0001 (one create_table per table), read top to bottom; it must not call
    # helpers that could change later.
    op.create_table(
        "instruments",
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("exchange", sa.String(length=32), nullable=True),
        sa.Column("is_etf", sa.Boolean(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("symbol", name=op.f("pk_instruments")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "daily_bars",
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("trade_date", sa.Date(), nullable=False),
        sa.Column("open", sa.Double(), nullable=False),
        sa.Column("high", sa.Double(), nullable=False),
        sa.Column("low", sa.Double(), nullable=False),
        sa.Column("close", sa.Double(), nullable=False),
        sa.Column("adj_close", sa.Double(), nullable=True),
        sa.Column("volume", sa.Double(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.CheckConstraint(
            "open > 0 AND high > 0 AND low > 0 AND close > 0",
            name=op.f("ck_daily_bars_prices_positive"),
        ),
        sa.CheckConstraint("high >= low", name=op.f("ck_daily_bars_high_not_below_low")),
        sa.CheckConstraint("volume >= 0", name=op.f("ck_daily_bars_volume_not_negative")),
        sa.PrimaryKeyConstraint("symbol", "trade_date", name=op.f("pk_daily_bars")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "daily_features",
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("trade_date", sa.Date(), nullable=False),
        *[sa.Column(name, sa.Double(), nullable=True) for name in DAILY_FEATURES],
        sa.PrimaryKeyConstraint("symbol", "trade_date", name=op.f("pk_daily_features")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "quarterly_features",
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("quarter", sa.String(length=8), nullable=False),
        sa.Column("quarter_start", sa.Date(), nullable=True),
        sa.Column("quarter_end", sa.Date(), nullable=True),
        *[sa.Column(name, sa.Double(), nullable=True) for name in QUARTERLY_DOUBLES_1],
        *[sa.Column(name, sa.Integer(), nullable=True) for name in QUARTERLY_INTS],
        *[sa.Column(name, sa.Double(), nullable=True) for name in QUARTERLY_DOUBLES_2],
        sa.Column("available_at", sa.Date(), nullable=True),
        sa.Column("q_complete", sa.Boolean(), nullable=True),
        sa.Column("feature_set_version", sa.Integer(), nullable=True),
        sa.Column("label_next_q_return", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("symbol", "quarter", name=op.f("pk_quarterly_features")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        op.f("ix_quarterly_features_quarter"), "quarterly_features", ["quarter"], unique=False
    )
    op.create_table(
        "quarantine",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("ingest_run_id", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("source_file", sa.Text(), nullable=True),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("symbol", SYMBOL, nullable=True),
        sa.Column("trade_date", sa.Text(), nullable=True),
        sa.Column("open", sa.Text(), nullable=True),
        sa.Column("high", sa.Text(), nullable=True),
        sa.Column("low", sa.Text(), nullable=True),
        sa.Column("close", sa.Text(), nullable=True),
        sa.Column("adj_close", sa.Text(), nullable=True),
        sa.Column("volume", sa.Text(), nullable=True),
        sa.Column("is_adjusted", sa.Boolean(), nullable=True),
        sa.Column("n_fields", sa.SmallInteger(), nullable=True),
        sa.Column("raw_line", sa.Text(), nullable=True),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_index(op.f("ix_quarantine_run_id"), "quarantine", ["run_id"], unique=False)
    op.create_index(op.f("ix_quarantine_symbol"), "quarantine", ["symbol"], unique=False)
    op.create_table(
        "pipeline_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("command", sa.String(length=64), nullable=True),
        sa.Column("params", JSON_DOC, nullable=True),
        sa.Column("counts", JSON_DOC, nullable=True),
        sa.Column("rows_in", sa.BigInteger(), nullable=True),
        sa.Column("rows_clean", sa.BigInteger(), nullable=True),
        sa.Column("rows_quarantined", sa.BigInteger(), nullable=True),
        sa.Column("rows_deduplicated", sa.BigInteger(), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pipeline_runs")),
    )
    op.create_index(
        op.f("ix_pipeline_runs_started_at"), "pipeline_runs", ["started_at"], unique=False
    )
    op.create_table(
        "data_quality",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pipeline_runs.run_id"],
            name=op.f("fk_data_quality_run_id_pipeline_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "metric", name=op.f("pk_data_quality")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("detail", JSON_DOC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)


def downgrade() -> None:
    """Drop every table (children first)."""
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("data_quality")
    op.drop_index(op.f("ix_pipeline_runs_started_at"), table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
    op.drop_index(op.f("ix_quarantine_symbol"), table_name="quarantine")
    op.drop_index(op.f("ix_quarantine_run_id"), table_name="quarantine")
    op.drop_table("quarantine")
    op.drop_index(op.f("ix_quarterly_features_quarter"), table_name="quarterly_features")
    op.drop_table("quarterly_features")
    op.drop_table("daily_features")
    op.drop_table("daily_bars")
    op.drop_table("instruments")
