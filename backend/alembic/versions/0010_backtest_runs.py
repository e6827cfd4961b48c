"""backtest_runs: backtests started through the API (``POST /api/v1/backtests``), their status and result

One row per run: the request as sent, the status (queued, running, done, failed, cancelled), progress 0..1,
and when done the metrics, trades, equity curve and candles the chart draws. ``owner`` is the API process
running it (``host:pid``): a process that starts fails only the unfinished runs of processes that are gone.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 17:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.app.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("queued", "running", "done", "failed", "cancelled")


def upgrade() -> None:
    json_type = backend.app.db.types.JSONType
    when = backend.app.db.types.UTCDateTime(timezone=True)
    op.create_table(
        "backtest_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(*STATUSES, name="backtest_status", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("progress", sa.Float(), server_default="0", nullable=False),
        sa.Column("request", json_type, nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=300), nullable=False),
        sa.Column("metrics", json_type, nullable=True),
        sa.Column("trades", json_type, nullable=True),
        sa.Column("equity", json_type, nullable=True),
        sa.Column("candles", json_type, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", when, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", when, server_default=sa.func.now(), nullable=False),
        sa.Column("started_at", when, nullable=True),
        sa.Column("finished_at", when, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtest_runs")),
    )
    with op.batch_alter_table("backtest_runs", schema=None) as batch_op:
        batch_op.create_index("ix_backtest_runs_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_backtest_runs_status", ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("backtest_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_backtest_runs_status")
        batch_op.drop_index("ix_backtest_runs_created_at_id")
    op.drop_table("backtest_runs")
