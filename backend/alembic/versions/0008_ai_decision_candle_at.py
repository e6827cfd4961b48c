"""ai_decisions.candle_at: the open time (UTC) of the bar decided, the key a decision is replayed by

Every decision the trading cycle records (live, paper, replay) names the candle it decided: with the symbol it
is the key an AI backtest (``backtest.py --strategy ai --decisions-from DATABASE_URL``) looks decisions up by,
through the index ``(symbol, candle_at)``. Rows written before this get the open time of the newest candle they
stored in ``market_data.candle.timestamp``; rows without one (the quick filter's calls) stay NULL.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 17:10:00
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import backend.app.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DECISIONS = sa.table(
    "ai_decisions",
    sa.column("id", sa.Integer),
    sa.column("market_data", backend.app.db.types.JSONType),
    sa.column("candle_at", backend.app.db.types.UTCDateTime(timezone=True)),
    sa.column("purpose", sa.String),
)


def _candle_open(market_data: Any) -> datetime | None:
    """``market_data.candle.timestamp`` as a UTC datetime, or None."""
    data = json.loads(market_data) if isinstance(market_data, str) else market_data
    candle = data.get("candle") if isinstance(data, dict) else None
    stamp = candle.get("timestamp") if isinstance(candle, dict) else None
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def upgrade() -> None:
    with op.batch_alter_table("ai_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("candle_at", backend.app.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("idx_ai_decisions_symbol_candle_at", ["symbol", "candle_at"], unique=False)
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_DECISIONS.c.id, _DECISIONS.c.market_data).where(
            _DECISIONS.c.purpose == "decision", _DECISIONS.c.market_data.is_not(None)
        )
    ).all()
    for row_id, market_data in rows:
        candle_at = _candle_open(market_data)
        if candle_at is not None:
            connection.execute(sa.update(_DECISIONS).where(_DECISIONS.c.id == row_id).values(candle_at=candle_at))


def downgrade() -> None:
    with op.batch_alter_table("ai_decisions", schema=None) as batch_op:
        batch_op.drop_index("idx_ai_decisions_symbol_candle_at")
        batch_op.drop_column("candle_at")
