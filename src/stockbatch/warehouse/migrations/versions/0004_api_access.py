"""The API's users and bearer tokens; the whole manifest of every run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

``api_users`` (argon2id password hashes, role, lock after failed logins) and
``api_tokens`` (only the SHA-256 of each token is stored) back ``stockbatch
serve``; ``pipeline_runs.manifest`` keeps the full manifest so that
``GET /api/v1/runs/{id}`` answers from the warehouse alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``api_users`` and ``api_tokens``; add ``pipeline_runs.manifest``."""
    op.create_table(
        "api_users",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text()),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "role IN ('viewer', 'analyst', 'admin')", name="ck_api_users_role_known"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_users"),
        sa.UniqueConstraint("name", name="uq_api_users_name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["api_users.id"],
            name="fk_api_tokens_user_id_api_users",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.add_column(sa.Column("manifest", JSON_DOC))


def downgrade() -> None:
    """Drop the API's tables and the manifest column."""
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.drop_column("manifest")
    op.drop_table("api_tokens")
    op.drop_table("api_users")
