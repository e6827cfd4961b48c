"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 21:05:35.902795
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.app.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ai_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("confidence", backend.app.db.types.ExactDecimal(5, 2), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "market_data", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("final_decision", sa.String(length=20), nullable=False),
        sa.Column("overridden", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "override_reasons",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("prompt_hash", sa.String(length=64), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("raw_response", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("completion_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost_usd", backend.app.db.types.ExactDecimal(20, 8), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cycle_id", sa.String(length=80), nullable=True),
        sa.Column(
            "created_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("decision IN ('buy', 'sell', 'hold')", name=op.f("ck_ai_decisions_decision")),
        sa.CheckConstraint("final_decision IN ('buy', 'sell', 'hold')", name=op.f("ck_ai_decisions_final_decision")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_decisions")),
    )
    with op.batch_alter_table("ai_decisions", schema=None) as batch_op:
        batch_op.create_index("idx_ai_decisions_created_at", ["created_at"], unique=False)
        batch_op.create_index("idx_ai_decisions_symbol", ["symbol"], unique=False)
        batch_op.create_index(batch_op.f("ix_ai_decisions_cycle_id"), ["cycle_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ai_decisions_prompt_hash"), ["prompt_hash"], unique=False)

    op.create_table(
        "bot_config",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column(
            "value", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column(
            "updated_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_config")),
        sa.UniqueConstraint("key", name=op.f("uq_bot_config_key")),
    )
    op.create_table(
        "bot_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_name", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column(
            "symbols", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("schedule", sa.String(length=100), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("started_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("safe_mode", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("safe_mode_reason", sa.Text(), nullable=True),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column(
            "created_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_state")),
        sa.UniqueConstraint("instance_name", name=op.f("uq_bot_state_instance_name")),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=100), nullable=False),
        sa.Column("identifier", sa.String(length=100), nullable=False),
        sa.Column("exchange_uuid", sa.String(length=100), nullable=True),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column(
            "side",
            sa.Enum("buy", "sell", name="order_side", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column(
            "order_type",
            sa.Enum(
                "limit", "price", "market", name="order_type", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("price", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("amount", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("requested_total", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("filled_amount", backend.app.db.types.ExactDecimal(20, 8), server_default="0", nullable=False),
        sa.Column("executed_funds", backend.app.db.types.ExactDecimal(20, 8), server_default="0", nullable=False),
        sa.Column("avg_fill_price", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("paid_fee", backend.app.db.types.ExactDecimal(20, 8), server_default="0", nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "open",
                "filled",
                "cancelled",
                "failed",
                name="order_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("exchange_state", sa.String(length=20), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "mode",
            sa.Enum("paper", "live", "replay", name="order_mode", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("cycle_id", sa.String(length=80), nullable=True),
        sa.Column(
            "created_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("amount IS NOT NULL OR requested_total IS NOT NULL", name=op.f("ck_orders_has_quantity")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("exchange_uuid", name=op.f("uq_orders_exchange_uuid")),
        sa.UniqueConstraint("identifier", name=op.f("uq_orders_identifier")),
        sa.UniqueConstraint("order_id", name=op.f("uq_orders_order_id")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_created_at", ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_cycle_id"), ["cycle_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_symbol"), ["symbol"], unique=False)

    op.create_table(
        "paper_balances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=50), nullable=False),
        sa.Column("currency", sa.String(length=20), nullable=False),
        sa.Column("balance", backend.app.db.types.ExactDecimal(20, 8), nullable=False),
        sa.Column("locked", backend.app.db.types.ExactDecimal(20, 8), server_default="0", nullable=False),
        sa.Column("avg_buy_price", backend.app.db.types.ExactDecimal(20, 8), server_default="0", nullable=False),
        sa.Column(
            "updated_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_paper_balances")),
        sa.UniqueConstraint("account", "currency", name=op.f("uq_paper_balances_account_currency")),
    )
    op.create_table(
        "paper_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=50), nullable=False),
        sa.Column("uuid", sa.String(length=100), nullable=False),
        sa.Column("identifier", sa.String(length=100), nullable=True),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "created_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_paper_orders")),
        sa.UniqueConstraint("account", "identifier", name=op.f("uq_paper_orders_account_identifier")),
        sa.UniqueConstraint("uuid", name=op.f("uq_paper_orders_uuid")),
    )
    with op.batch_alter_table("paper_orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_paper_orders_state"), ["state"], unique=False)

    op.create_table(
        "portfolio_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("total_value_krw", backend.app.db.types.ExactDecimal(20, 2), nullable=False),
        sa.Column("total_value_usd", backend.app.db.types.ExactDecimal(20, 2), nullable=True),
        sa.Column("cash_krw", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("profit_rate", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column(
            "positions", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "mode",
            sa.Enum(
                "paper", "live", "replay", name="snapshot_mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portfolio_snapshots")),
    )
    with op.batch_alter_table("portfolio_snapshots", schema=None) as batch_op:
        batch_op.create_index("ix_portfolio_snapshots_created_at", ["created_at"], unique=False)

    op.create_table(
        "positions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "paper", "live", "replay", name="position_mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("amount", backend.app.db.types.ExactDecimal(20, 8), nullable=False),
        sa.Column("avg_entry_price", backend.app.db.types.ExactDecimal(20, 8), nullable=False),
        sa.Column("entry_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("highest_price", backend.app.db.types.ExactDecimal(20, 8), nullable=False),
        sa.Column("stop_price", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("take_profit_price", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("trailing_stop_pct", backend.app.db.types.ExactDecimal(10, 4), nullable=True),
        sa.Column("closed_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("exit_price", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("realized_pnl", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("exit_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
    )
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_positions_symbol"), ["symbol"], unique=False)
        batch_op.create_index(
            "uq_positions_open_symbol",
            ["mode", "symbol"],
            unique=True,
            postgresql_where=sa.text("status = 'open'"),
            sqlite_where=sa.text("status = 'open'"),
        )

    op.create_table(
        "risk_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "mode",
            sa.Enum("paper", "live", "replay", name="risk_mode", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("safe_mode", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("safe_mode_reason", sa.Text(), nullable=True),
        sa.Column("safe_mode_since", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("safe_mode_until", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("peak_equity", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("day_anchor_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("day_anchor_equity", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column("week_anchor_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("week_anchor_equity", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column(
            "updated_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_state")),
        sa.UniqueConstraint("mode", name=op.f("uq_risk_state_mode")),
    )
    op.create_table(
        "scheduler_locks",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_locks")),
    )
    op.create_table(
        "system_logs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=50), server_default="scheduler", nullable=False),
        sa.Column(
            "context", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column(
            "created_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_logs")),
    )
    with op.batch_alter_table("system_logs", schema=None) as batch_op:
        batch_op.create_index("ix_system_logs_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_system_logs_level", ["level"], unique=False)

    op.create_table(
        "trading_cycles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cycle_id", sa.String(length=80), nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column(
            "mode",
            sa.Enum("paper", "live", "replay", name="cycle_mode", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("started_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=50), nullable=True),
        sa.Column(
            "stages", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_cycles")),
        sa.UniqueConstraint("cycle_id", name=op.f("uq_trading_cycles_cycle_id")),
    )
    with op.batch_alter_table("trading_cycles", schema=None) as batch_op:
        batch_op.create_index("ix_trading_cycles_started_at", ["started_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_trading_cycles_symbol"), ["symbol"], unique=False)

    op.create_table(
        "trades",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trade_id", sa.String(length=100), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column(
            "side",
            sa.Enum("buy", "sell", name="trade_side", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("price", backend.app.db.types.ExactDecimal(20, 8), nullable=False),
        sa.Column("amount", backend.app.db.types.ExactDecimal(20, 8), nullable=False),
        sa.Column("total", backend.app.db.types.ExactDecimal(20, 8), nullable=False),
        sa.Column("fee", backend.app.db.types.ExactDecimal(20, 8), server_default="0", nullable=False),
        sa.Column("realized_pnl", backend.app.db.types.ExactDecimal(20, 8), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "completed",
                "pending",
                "failed",
                name="trade_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "mode",
            sa.Enum("paper", "live", "replay", name="trade_mode", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column(
            "created_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", backend.app.db.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_trades_order_id_orders"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trades")),
        sa.UniqueConstraint("trade_id", name=op.f("uq_trades_trade_id")),
    )
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.create_index("idx_trades_created_at", ["created_at"], unique=False)
        batch_op.create_index("idx_trades_symbol", ["symbol"], unique=False)
        batch_op.create_index("ix_trades_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_trades_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trades_order_id"))
        batch_op.drop_index("ix_trades_created_at_id")
        batch_op.drop_index("idx_trades_symbol")
        batch_op.drop_index("idx_trades_created_at")

    op.drop_table("trades")
    with op.batch_alter_table("trading_cycles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trading_cycles_symbol"))
        batch_op.drop_index("ix_trading_cycles_started_at")

    op.drop_table("trading_cycles")
    with op.batch_alter_table("system_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_system_logs_level")
        batch_op.drop_index("ix_system_logs_created_at")

    op.drop_table("system_logs")
    op.drop_table("scheduler_locks")
    op.drop_table("risk_state")
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_positions_open_symbol",
            postgresql_where=sa.text("status = 'open'"),
            sqlite_where=sa.text("status = 'open'"),
        )
        batch_op.drop_index(batch_op.f("ix_positions_symbol"))

    op.drop_table("positions")
    with op.batch_alter_table("portfolio_snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_portfolio_snapshots_created_at")

    op.drop_table("portfolio_snapshots")
    with op.batch_alter_table("paper_orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_paper_orders_state"))

    op.drop_table("paper_orders")
    op.drop_table("paper_balances")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_symbol"))
        batch_op.drop_index(batch_op.f("ix_orders_status"))
        batch_op.drop_index(batch_op.f("ix_orders_cycle_id"))
        batch_op.drop_index("ix_orders_created_at")

    op.drop_table("orders")
    op.drop_table("bot_state")
    op.drop_table("bot_config")
    with op.batch_alter_table("ai_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ai_decisions_prompt_hash"))
        batch_op.drop_index(batch_op.f("ix_ai_decisions_cycle_id"))
        batch_op.drop_index("idx_ai_decisions_symbol")
        batch_op.drop_index("idx_ai_decisions_created_at")

    op.drop_table("ai_decisions")
