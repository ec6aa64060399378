"""one booking per responder

Revision ID: 7c2e5a91d3b4
Revises: 4fb08583e997
Create Date: 2026-12-01 10:00:00.000000

Partial unique indexes: at most one pending offer and one active (not cleared) unit per
responder, so two dispatch instances can never book one responder twice. A database
that already holds such a double booking must have it settled before upgrading.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7c2e5a91d3b4"
down_revision: str | Sequence[str] | None = "4fb08583e997"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
ACTIVE = sa.text("status <> 'cleared'")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        "ix_offers_one_pending_per_responder",
        "offers",
        ["responder_id"],
        unique=True,
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ix_units_one_active_per_responder",
        "units",
        ["responder_id"],
        unique=True,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_units_one_active_per_responder", table_name="units")
    op.drop_index("ix_offers_one_pending_per_responder", table_name="offers")
