"""The A/B comparison: each instance's account read from its own database (``GET /api/v1/instances``).

Only reads: the database of an instance that never ran (no SQLite file) is not created, and one that cannot be
read (unreachable, not migrated, broken) makes that instance ``available: false`` with the reason, never an error
of the whole answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from backend.app.core.instances import Instance, failure_reason
from backend.app.core.replay import max_drawdown_pct
from backend.app.db.migrations import ensure_schema_current
from backend.app.db.queries import portfolio, reports
from backend.app.db.queries.bot_status import bot_status
from backend.app.db.session import create_engine, session_factory
from src.domain.modes import TradingMode
from src.domain.money import ZERO
from src.exceptions import TradingSystemError

READ_TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class InstanceReport:
    name: str
    strategy: str
    params: dict[str, Any]
    symbols: list[str]
    mode: TradingMode
    starting_krw: Decimal
    available: bool = False
    reason: str | None = None  # why the instance is unavailable
    equity_krw: Decimal | None = None
    return_pct: Decimal | None = None
    max_drawdown_pct: Decimal | None = None
    trades: int = 0
    buys: int = 0
    sells: int = 0
    realized_pnl_krw: Decimal = ZERO
    fees_krw: Decimal = ZERO
    open_positions: list[str] = field(default_factory=list)
    state: str | None = None  # the heartbeat's state (running, paused, stopped, ...), None without one
    last_heartbeat: datetime | None = None


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database)
    return None


async def instance_report(instance: Instance, mode: TradingMode = TradingMode.PAPER) -> InstanceReport:
    """``instance``'s account in ``mode`` (paper: its database; replay: its last replay's database)."""
    starting = instance.settings.trading.paper_starting_krw
    report = InstanceReport(
        name=instance.name,
        strategy=instance.strategy,
        params=instance.params,
        symbols=instance.symbols,
        mode=mode,
        starting_krw=starting,
    )
    url = instance.replay_database_url if mode is TradingMode.REPLAY else instance.database_url
    path = _sqlite_file(url)
    if path is not None and not path.is_file():
        report.reason = "no database yet (the instance has not run)"
        return report
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            await ensure_schema_current(engine)
            async with session_factory(engine)() as session:
                equities = await portfolio.equity_curve(session, mode)
                sums = await reports.trade_sums(session, mode)
                report.open_positions = await reports.open_position_symbols(session, mode)
            async with engine.connect() as connection:
                status = await bot_status(connection, instance.name, mode)
    except (SQLAlchemyError, OSError, TradingSystemError, TimeoutError) as exc:
        report.reason = "timed out" if isinstance(exc, TimeoutError) else failure_reason(exc)
        return report
    finally:
        await engine.dispose()
    equity = equities[-1] if equities else starting
    report.available = True
    report.equity_krw = equity
    report.return_pct = ((equity / starting - 1) * 100).quantize(Decimal("0.01"))
    report.max_drawdown_pct = max_drawdown_pct([starting, *equities])
    report.trades, report.buys, report.sells = sums.trades, sums.buys, sums.sells
    report.realized_pnl_krw, report.fees_krw = sums.realized_pnl_krw, sums.fees_krw
    if status.heartbeat is not None:
        report.state = str(status.heartbeat.state)
        report.last_heartbeat = status.heartbeat.heartbeat_at
    return report


async def instance_reports(instances: list[Instance], mode: TradingMode = TradingMode.PAPER) -> list[InstanceReport]:
    return list(await asyncio.gather(*(instance_report(instance, mode) for instance in instances)))


__all__ = ["InstanceReport", "instance_report", "instance_reports"]
