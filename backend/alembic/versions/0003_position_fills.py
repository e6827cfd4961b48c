"""position_fills: an order's fills were applied to positions, written with the position change (exactly once)

Orders already filled when this runs are marked applied (their positions were updated by the old code),
so the start-up reconciliation does not apply them a second time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.app.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "position_fills",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_identifier", sa.String(length=100), nullable=False),
        sa.Column("position_id", sa.Integer(), nullable=True),
        sa.Column(
            "mode",
            sa.Enum(
                "paper",
                "live",
                "replay",
                name="position_fill_mode",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("realized_pnl", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("applied_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["position_id"],
            ["positions.id"],
            name=op.f("fk_position_fills_position_id_positions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_position_fills")),
        sa.UniqueConstraint("order_identifier", name=op.f("uq_position_fills_order_identifier")),
    )
    op.execute(
        "INSERT INTO position_fills (order_identifier, position_id, mode, realized_pnl, applied_at) "
        "SELECT o.identifier, NULL, o.mode, NULL, o.updated_at FROM orders o "
        "WHERE o.status = 'filled' AND EXISTS (SELECT 1 FROM trades t WHERE t.order_id = o.id)"
    )


def downgrade() -> None:
    op.drop_table("position_fills")
