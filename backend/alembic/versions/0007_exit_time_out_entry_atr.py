"""Exits belong to the strategy: the ``time_out`` exit reason, and the ATR a position was entered with

The strategy's exit policy may sell a position held ``max_hold_hours``: ``positions.exit_reason``,
``orders.exit_reason`` and ``trades.exit_reason`` (0006) now also allow ``time_out``. ``positions.entry_atr``
keeps the ATR(14) of the entry's decision bar, so that the stop and target can be set again from it when the
strategy or its parameters change at run time (NULL for positions opened before, or without an ATR).

The values below are frozen copies of the enum at this revision (a migration never imports the code it migrates).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.app.db.types import ExactDecimal

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXIT_REASONS_0006 = ("stop_loss", "take_profit", "trailing_stop", "signal", "sell")
EXIT_REASONS = ("stop_loss", "take_profit", "trailing_stop", "time_out", "signal", "sell")
# table -> the name of its exit_reason CHECK constraint (0006)
CHECKS = {"positions": "position_exit_reason", "orders": "order_exit_reason", "trades": "trade_exit_reason"}


def _in(values: Sequence[str]) -> str:
    return f"exit_reason IN ({', '.join(repr(value) for value in values)})"


def _foreign_keys(enforced: bool) -> None:
    """SQLite batch mode copies and drops tables that others reference; see 0006."""
    if op.get_context().dialect.name != "sqlite":
        return
    if enforced:
        op.execute("PRAGMA foreign_keys = ON")
        return
    op.execute("PRAGMA foreign_keys = OFF")
    op.execute("PRAGMA defer_foreign_keys = ON")


def _exit_reasons(values: Sequence[str]) -> None:
    for table, name in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
            batch_op.create_check_constraint(op.f(f"ck_{table}_{name}"), _in(values))


def upgrade() -> None:
    _foreign_keys(enforced=False)
    _exit_reasons(EXIT_REASONS)
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entry_atr", ExactDecimal(20, 8), nullable=True))
    _foreign_keys(enforced=True)


def downgrade() -> None:
    """Rows that timed out cannot be described at 0006: their exit reason becomes ``sell`` (a sell that closed
    the position without a recorded reason)."""
    _foreign_keys(enforced=False)
    for table in CHECKS:
        op.execute(sa.text(f"UPDATE {table} SET exit_reason = 'sell' WHERE exit_reason = 'time_out'"))
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_column("entry_atr")
    _exit_reasons(EXIT_REASONS_0006)
    _foreign_keys(enforced=True)
