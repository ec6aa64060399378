"""last positions

Revision ID: 5d1b8e6f0a27
Revises: 1f845a8df830
Create Date: 2026-12-01 10:00:00.000000

Each responder's newest known position, written at most every few seconds, so the
index can be rebuilt with positions when Redis comes back empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

# revision identifiers, used by Alembic.
revision: str = "5d1b8e6f0a27"
down_revision: str | Sequence[str] | None = "1f845a8df830"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "last_positions",
        sa.Column("responder_id", sa.Uuid(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("recorded_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("responder_id"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("last_positions")
