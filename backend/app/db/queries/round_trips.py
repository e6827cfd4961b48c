"""What the parity report reads from a replay: the round trips (positions, open or closed) of one symbol and the
outcome of each trading cycle, in time order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.app.models import PositionRow, TradingCycleRow
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode


@dataclass(frozen=True, slots=True)
class StoredRoundTrip:
    entry_at: datetime
    avg_entry_price: Decimal
    closed_at: datetime | None
    exit_price: Decimal | None
    exit_reason: ExitReason | None


async def round_trips(session: AsyncSession, mode: TradingMode, symbol: str) -> list[StoredRoundTrip]:
    """Every position of ``symbol`` in ``mode``, oldest entry first; a held one has no close."""
    query = (
        select(
            PositionRow.entry_at,
            PositionRow.avg_entry_price,
            PositionRow.closed_at,
            PositionRow.exit_price,
            PositionRow.exit_reason,
        )
        .where(PositionRow.mode == mode, PositionRow.symbol == symbol)
        .order_by(PositionRow.entry_at, PositionRow.id)
    )
    return [StoredRoundTrip(*row) for row in (await session.execute(query)).all()]


def _cycle_text(outcome: str | None, stages: list[dict[str, Any]] | None) -> str:
    """The cycle's outcome and the stage that decided it (the last one neither ``ok`` nor ``skipped``)."""
    text = outcome or "no outcome"
    deciding = [
        stage for stage in stages or [] if isinstance(stage, dict) and stage.get("outcome") not in ("ok", "skipped")
    ]
    if deciding:
        stage = deciding[-1]
        detail = stage.get("detail") or {}
        reason = detail.get("reason") if isinstance(detail, dict) else None
        suffix = f", {reason}" if reason else ""
        text += f" (stage {stage.get('stage')}: {stage.get('outcome')}{suffix})"
    return text


async def cycle_outcomes(session: AsyncSession, mode: TradingMode, symbol: str) -> dict[datetime, str]:
    """Each trading cycle of ``symbol`` by its start moment: its outcome and the stage that decided it."""
    query = (
        select(TradingCycleRow.started_at, TradingCycleRow.outcome, TradingCycleRow.stages)
        .where(TradingCycleRow.mode == mode, TradingCycleRow.symbol == symbol)
        .order_by(TradingCycleRow.started_at)
    )
    return {started: _cycle_text(outcome, stages) for started, outcome, stages in (await session.execute(query)).all()}
