"""events: the outbox of the live event stream (``GET /api/v1/ws/events``)

The scheduler's repositories insert one row per decision, order placed, fill, failure, trade, exit, safe-mode
change, error, heartbeat, applied settings and bot state change, in the same transaction as the rows it
describes (``backend.app.db.outbox.add_event``). Ids increase in commit order: on PostgreSQL the writers take a
transaction-level advisory lock before inserting and ``NOTIFY events, '<id>'`` in the same transaction; SQLite
has one writer at a time.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 17:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.app.db.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_TYPES = (
    "decision",
    "order_placed",
    "order_filled",
    "order_failed",
    "trade",
    "exit",
    "safe_mode_on",
    "safe_mode_off",
    "error",
    "heartbeat",
    "settings_applied",
    "bot_state",
)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "type",
            sa.Enum(*EVENT_TYPES, name="event_type", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column(
            "mode",
            sa.Enum("paper", "live", "replay", name="event_mode", native_enum=False, create_constraint=True, length=20),
            nullable=True,
        ),
        sa.Column("symbol", sa.String(length=20), nullable=True),
        sa.Column("data", backend.app.db.types.JSONType, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )


def downgrade() -> None:
    op.drop_table("events")
