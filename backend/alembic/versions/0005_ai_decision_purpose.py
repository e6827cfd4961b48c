"""ai_decisions.purpose: why the model was asked (the cycle's decision, or the quick filter's AI backtest)

The quick filter's model calls are now recorded too (tokens and cost, for the AI budget and its metrics);
rows written before this are all the trading cycle's, hence the default.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 14:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ai_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purpose", sa.String(length=20), server_default="decision", nullable=False))
        batch_op.create_check_constraint("purpose", "purpose IN ('decision', 'filter')")


def downgrade() -> None:
    with op.batch_alter_table("ai_decisions", schema=None) as batch_op:
        batch_op.drop_constraint("purpose", type_="check")
        batch_op.drop_column("purpose")
