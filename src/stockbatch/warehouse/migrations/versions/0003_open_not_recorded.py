"""Contract v2: a bar's open may be null ("not recorded", FEATURES.md section 4).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Yahoo-derived histories write ``open = 0`` when the open was not recorded; the
contract v2 keeps such rows with a null open. ``daily_bars.open`` becomes
nullable; the CHECK ``open > 0 AND ...`` stays as it is (a null open makes the
comparison unknown, which a CHECK accepts), so a zero or negative open is still
refused by the database. SQLite cannot alter a column in place: Alembic's batch
mode copies the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """``daily_bars.open`` nullable."""
    with op.batch_alter_table("daily_bars") as batch:
        batch.alter_column("open", existing_type=sa.Double(), nullable=True)


def downgrade() -> None:
    """Back to a required open (fails while a null open is stored)."""
    with op.batch_alter_table("daily_bars") as batch:
        batch.alter_column("open", existing_type=sa.Double(), nullable=False)
