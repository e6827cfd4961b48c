"""Upbit's own risk signals: the ``market_warning`` exit reason and the ``announcement`` event type

A held coin that Upbit flags (``market_event.warning``/``caution``) is sold when ``MARKET_WARNING_ACTION=exit``:
``positions.exit_reason``, ``orders.exit_reason`` and ``trades.exit_reason`` now also allow ``market_warning``.
Announcements from the private stream are recorded in ``system_logs`` with an ``announcement`` row in the
``events`` outbox: ``events.type`` allows it.

The values below are frozen copies of the enums at this revision (a migration never imports the code it migrates).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXIT_REASONS_0007 = ("stop_loss", "take_profit", "trailing_stop", "time_out", "signal", "sell")
EXIT_REASONS = (*EXIT_REASONS_0007, "market_warning")
EVENT_TYPES_0009 = (
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
EVENT_TYPES = (*EVENT_TYPES_0009, "announcement")
# table -> the name of its exit_reason CHECK constraint (0006)
CHECKS = {"positions": "position_exit_reason", "orders": "order_exit_reason", "trades": "trade_exit_reason"}


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _foreign_keys(enforced: bool) -> None:
    """SQLite batch mode copies and drops tables that others reference; see 0006."""
    if op.get_context().dialect.name != "sqlite":
        return
    if enforced:
        op.execute("PRAGMA foreign_keys = ON")
        return
    op.execute("PRAGMA foreign_keys = OFF")
    op.execute("PRAGMA defer_foreign_keys = ON")


def _checks(exit_reasons: Sequence[str], event_types: Sequence[str]) -> None:
    for table, name in CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
            batch_op.create_check_constraint(op.f(f"ck_{table}_{name}"), _in("exit_reason", exit_reasons))
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_events_event_type"), type_="check")
        batch_op.create_check_constraint(op.f("ck_events_event_type"), _in("type", event_types))


def upgrade() -> None:
    _foreign_keys(enforced=False)
    _checks(EXIT_REASONS, EVENT_TYPES)
    _foreign_keys(enforced=True)


def downgrade() -> None:
    """Rows that 0010 cannot describe: a ``market_warning`` exit becomes ``sell`` (a sell that closed the position
    without a recorded reason); ``announcement`` events are deleted (their ``system_logs`` lines stay)."""
    _foreign_keys(enforced=False)
    for table in CHECKS:
        op.execute(sa.text(f"UPDATE {table} SET exit_reason = 'sell' WHERE exit_reason = 'market_warning'"))
    op.execute(sa.text("DELETE FROM events WHERE type = 'announcement'"))
    _checks(EXIT_REASONS_0007, EVENT_TYPES_0009)
    _foreign_keys(enforced=True)
