"""Keyset paging indexes: every list paged on (created_at, id) gets one index on exactly those columns

A single-column ``created_at`` index next to the pair made PostgreSQL's generic plan for a cursor page scan the
single-column index and sort each ``created_at`` group by ``id`` (0.21 ms), where the pair's index answers the
row comparison directly (0.075 ms, as the first page). The spec's index names are kept; they now cover ``id``
too, which serves every query the single-column index served.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 01:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, index name) of the lists paged by (created_at, id)
_PAGED = (
    ("trades", "idx_trades_created_at"),
    ("ai_decisions", "idx_ai_decisions_created_at"),
    ("orders", "ix_orders_created_at"),
    ("portfolio_snapshots", "ix_portfolio_snapshots_created_at"),
)


def upgrade() -> None:
    op.drop_index("ix_trades_created_at_id", table_name="trades")
    for table, index in _PAGED:
        op.drop_index(index, table_name=table)
        op.create_index(index, table, ["created_at", "id"], unique=False)


def downgrade() -> None:
    for table, index in _PAGED:
        op.drop_index(index, table_name=table)
        op.create_index(index, table, ["created_at"], unique=False)
    op.create_index("ix_trades_created_at_id", "trades", ["created_at", "id"], unique=False)
