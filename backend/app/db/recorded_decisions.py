"""The decisions a bot recorded, read from its database for an AI backtest (``backtest.py --decisions-from``).

``database_decision_loader(url)`` is the ``src.backtesting.recorded_decisions.DecisionLoader`` over
``ai_decisions``: the database must exist and be at the newest migration (``candle_at`` is 0008); nothing is
written to it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from backend.app.db.migrations import ensure_schema_current
from backend.app.db.queries.decisions import decisions_by_candle
from backend.app.db.session import create_engine
from src.backtesting.recorded_decisions import DecisionLoader, RecordedDecision
from src.exceptions import ConfigurationError, DatabaseUnavailable


def display_url(url: str) -> str:
    """``url`` without its password, for messages and reports."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


def database_decision_loader(url: str) -> DecisionLoader:
    """Read the decisions of one symbol and period from the database at ``url`` (one ``TradingSystemError``
    naming the URL, without its password, when it cannot)."""
    where = display_url(url)

    async def load(symbol: str, start: datetime, end: datetime) -> list[RecordedDecision]:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigurationError(
                "--decisions-from expects a database URL such as sqlite+aiosqlite:///data/replay.db or "
                "postgresql+asyncpg://user@host/db"
            ) from None
        sqlite_file = Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None
        if sqlite_file is not None and not await asyncio.to_thread(sqlite_file.is_file):
            raise ConfigurationError(f"--decisions-from: no database file {parsed.database}")
        try:
            engine = create_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise ConfigurationError(f"--decisions-from {where}: {type(exc).__name__}: {exc}") from None
        try:
            await ensure_schema_current(engine)
            async with engine.connect() as connection:
                rows = await decisions_by_candle(connection, symbol, start, end)
        except (OSError, SQLAlchemyError) as exc:
            raise DatabaseUnavailable(f"--decisions-from {where}: cannot read ai_decisions ({exc})") from None
        finally:
            await engine.dispose()
        return [RecordedDecision.from_row(row) for row in rows]

    return load
