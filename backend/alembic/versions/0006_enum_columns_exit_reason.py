"""Enum-constrained columns for every status, side, decision, source and outcome; exit_reason on orders and trades

Strings that carry one of a fixed set of values get a CHECK constraint (``<column> IN (...)``, named
``ck_<table>_<name>``), the portable form of SQLAlchemy's ``Enum(native_enum=False, create_constraint=True)`` that
orders and trades have used since 0001: a VARCHAR on both databases, no PostgreSQL enum type to alter when a value
is added. The models map these columns to the Python enums. ``ai_decisions.decision``, ``final_decision`` (0001)
and ``purpose`` (0005) are constrained already; ``system_logs.level`` and ``source`` stay free text.

The sells that close positions name the exit that caused them: ``orders.exit_reason`` and ``trades.exit_reason``
(``stop_loss``, ``take_profit``, ``trailing_stop``, ``signal``), NULL on buys and on rows written before this.

The values below are frozen copies of the enums at this revision (a migration never imports the code it migrates).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 14:50:00
"""

from collections.abc import Sequence
from itertools import combinations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXIT_REASONS = ("stop_loss", "take_profit", "trailing_stop", "signal", "sell")
DECISION_SOURCES = ("ai", "cache", "fallback", "disabled", "rules", "filter")
POSITION_STATUSES = ("open", "closed")
CYCLE_STATUSES = ("ok", "error")
BOT_STATES = ("starting", "running", "paused", "stopped")
MODES = ("paper", "live", "replay")
EXCHANGE_ORDER_STATES = ("wait", "watch", "done", "cancel")


def _cycle_outcomes() -> tuple[str, ...]:
    """``src.trading.pipeline.context.cycle_outcomes()`` at this revision."""
    statuses = sorted(("pending", "open", "filled", "cancelled", "failed"))
    sent = [",".join(chosen) for size in range(1, len(statuses) + 1) for chosen in combinations(statuses, size)]
    return (
        "none",
        "error",
        "hold",
        "buy_vetoed",
        "dry_run_buy",
        "dry_run_sell",
        *(f"{decision}_{result}" for decision in ("buy", "sell") for result in ["nothing_sent", *sent]),
    )


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


# table -> [(constraint name, column, legal values)]
CHECKS: dict[str, list[tuple[str, str, Sequence[str]]]] = {
    "ai_decisions": [("decision_source", "source", DECISION_SOURCES)],
    "positions": [
        ("position_status", "status", POSITION_STATUSES),
        ("position_exit_reason", "exit_reason", EXIT_REASONS),
    ],
    "trading_cycles": [("cycle_status", "status", CYCLE_STATUSES), ("cycle_outcome", "outcome", _cycle_outcomes())],
    "bot_state": [("bot_state", "state", BOT_STATES), ("bot_mode", "mode", MODES)],
    "paper_orders": [("paper_order_state", "state", EXCHANGE_ORDER_STATES)],
    "orders": [("order_exit_reason", "exit_reason", EXIT_REASONS)],
    "trades": [("trade_exit_reason", "exit_reason", EXIT_REASONS)],
}
NEW_COLUMNS = ("orders", "trades")  # exit_reason is added to these
# (table, column, type before, type after): widened to the enums' VARCHAR(20)
RETYPED = (
    ("positions", "status", sa.String(length=10), sa.String(length=20)),
    ("positions", "exit_reason", sa.Text(), sa.String(length=20)),
    ("bot_state", "mode", sa.String(length=10), sa.String(length=20)),
)


def _foreign_keys(enforced: bool) -> None:
    """SQLite: batch mode copies a table and drops the original, which a table referencing it (trades -> orders,
    position_fills -> positions) refuses while foreign keys are enforced. ``foreign_keys`` only changes outside a
    transaction and ``defer_foreign_keys`` only inside one (checked at commit), so both are set."""
    if op.get_context().dialect.name != "sqlite":
        return
    if enforced:
        op.execute("PRAGMA foreign_keys = ON")
        return
    op.execute("PRAGMA foreign_keys = OFF")
    op.execute("PRAGMA defer_foreign_keys = ON")


def upgrade() -> None:
    _foreign_keys(enforced=False)
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table in NEW_COLUMNS:
                batch_op.add_column(sa.Column("exit_reason", sa.String(length=20), nullable=True))
            for retyped_table, column, before, after in RETYPED:
                if retyped_table == table:
                    batch_op.alter_column(column, existing_type=before, type_=after, existing_nullable=True)
            for name, column, values in checks:
                batch_op.create_check_constraint(op.f(f"ck_{table}_{name}"), _in(column, values))
    _foreign_keys(enforced=True)


def downgrade() -> None:
    _foreign_keys(enforced=False)
    for table, checks in reversed(CHECKS.items()):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _column, _values in checks:
                batch_op.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
            for retyped_table, column, before, after in RETYPED:
                if retyped_table == table:
                    batch_op.alter_column(column, existing_type=after, type_=before, existing_nullable=True)
            if table in NEW_COLUMNS:
                batch_op.drop_column("exit_reason")
    _foreign_keys(enforced=True)
