"""research_runs: the runs of backtest.py optimize | monte-carlo | ai-value, served at /api/v1/research/runs

One row per run: its kind, status, the request (``params``), the headline numbers (``summary``), the full JSON
report (``result``), the parameters it chose (``chosen``: strategy and params, what ``apply`` writes as the bot's
run-time settings), and when and by whom they were applied.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.app.db.types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the enums at this revision (a migration never imports the code it migrates).
KINDS = ("optimize", "monte_carlo", "ai_value")
STATUSES = ("running", "done", "failed")


def upgrade() -> None:
    json_type = backend.app.db.types.JSONType
    when = backend.app.db.types.UTCDateTime(timezone=True)
    op.create_table(
        "research_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(*KINDS, name="research_kind", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(*STATUSES, name="research_status", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("params", json_type, nullable=False),
        sa.Column("summary", json_type, nullable=True),
        sa.Column("result", json_type, nullable=True),
        sa.Column("chosen", json_type, nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("applied_at", when, nullable=True),
        sa.Column("applied_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", when, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", when, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_research_runs")),
    )
    with op.batch_alter_table("research_runs", schema=None) as batch_op:
        batch_op.create_index("ix_research_runs_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_research_runs_kind", ["kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("research_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_research_runs_kind")
        batch_op.drop_index("ix_research_runs_created_at_id")
    op.drop_table("research_runs")
