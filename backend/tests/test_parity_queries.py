"""What the parity report reads from a replay's database (``backend/app/db/queries/round_trips.py``), on SQLite
and PostgreSQL: one symbol's positions of one mode as round trips, oldest first, and each trading cycle's outcome
with the stage that decided it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.core.parity import round_trip_of
from backend.app.db.queries.round_trips import cycle_outcomes, round_trips
from backend.app.models import PositionRow, TradingCycleRow
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.risk.store import PositionStatus
from src.trading.pipeline.context import CycleStatus

T0 = datetime(2023, 9, 1, 3, tzinfo=UTC)
HOUR = timedelta(hours=1)


def position(symbol: str, mode: TradingMode, entry_hour: int, close_hour: int | None) -> PositionRow:
    closed = close_hour is not None
    return PositionRow(
        symbol=symbol,
        mode=mode,
        status=PositionStatus.CLOSED if closed else PositionStatus.OPEN,
        amount=Decimal("0.01"),
        avg_entry_price=Decimal("35000000"),
        entry_at=T0 + entry_hour * HOUR,
        highest_price=Decimal("35500000"),
        closed_at=T0 + close_hour * HOUR if closed else None,
        exit_price=Decimal("34300000") if closed else None,
        exit_reason=ExitReason.STOP_LOSS if closed else None,
    )


async def test_round_trips_are_one_symbol_and_mode_oldest_first_with_the_held_one_last(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Given replay positions of KRW-BTC (one closed, one held), one of KRW-ETH and a paper one of KRW-BTC
    async with db_sessions() as session, session.begin():
        session.add_all(
            [
                position("KRW-BTC", TradingMode.REPLAY, 10, None),
                position("KRW-BTC", TradingMode.REPLAY, 0, 5),
                position("KRW-ETH", TradingMode.REPLAY, 1, 2),
                position("KRW-BTC", TradingMode.PAPER, 2, 3),
            ]
        )

    # When the parity report reads the replay's KRW-BTC round trips
    async with db_sessions() as session:
        stored = await round_trips(session, TradingMode.REPLAY, "KRW-BTC")

    # Then it gets the two, oldest first, the held one with reason end and no exit
    trips = [round_trip_of(row) for row in stored]
    assert [(t.entry_at, t.exit_at, t.exit_price, t.exit_reason) for t in trips] == [
        (T0, T0 + 5 * HOUR, 34_300_000.0, "stop_loss"),
        (T0 + 10 * HOUR, None, None, "end"),
    ]
    assert trips[0].entry_price == 35_000_000.0


async def test_cycle_outcomes_name_the_deciding_stage(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    stages = [
        {"stage": "data", "outcome": "ok", "duration_ms": 1.0, "detail": {}},
        {"stage": "quick_filter", "outcome": "blocked", "duration_ms": 2.0, "detail": {"reason": "win rate 20 %"}},
        {"stage": "execution", "outcome": "skipped", "duration_ms": 0.0, "detail": {"reason": "blocked"}},
    ]
    async with db_sessions() as session, session.begin():
        session.add_all(
            [
                TradingCycleRow(
                    cycle_id="c1", symbol="KRW-BTC", mode=TradingMode.REPLAY, started_at=T0, status=CycleStatus.OK,
                    outcome="hold", stages=stages,
                ),
                TradingCycleRow(
                    cycle_id="c2", symbol="KRW-BTC", mode=TradingMode.REPLAY, started_at=T0 + HOUR,
                    status=CycleStatus.OK, outcome="buy_filled", stages=[stages[0]],
                ),
                TradingCycleRow(
                    cycle_id="c3", symbol="KRW-ETH", mode=TradingMode.REPLAY, started_at=T0, status=CycleStatus.OK,
                    outcome="hold", stages=[],
                ),
            ]
        )  # fmt: skip

    async with db_sessions() as session:
        outcomes = await cycle_outcomes(session, TradingMode.REPLAY, "KRW-BTC")

    assert outcomes == {
        T0: "hold (stage quick_filter: blocked, win rate 20 %)",
        T0 + HOUR: "buy_filled",
    }
