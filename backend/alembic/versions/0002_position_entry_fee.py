"""positions.entry_fee: the buy fee not yet charged against a sale (realised P&L net of both fees)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.app.db.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("entry_fee", backend.app.db.types.ExactDecimal(20, 8), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_column("entry_fee")
