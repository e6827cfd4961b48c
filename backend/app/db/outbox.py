"""Writing the live event stream's outbox (``events``) inside the writer's own transaction.

``add_event(session, ...)`` is called by the repositories last in the transaction that writes the rows the event
describes, so an event exists exactly when its rows do. Ids must become visible in increasing order, or a
client resuming ``after`` an id could miss an event committed later with a smaller one:

- PostgreSQL: the writer first takes a transaction-level advisory lock (held until its commit), so the next
  writer draws its id only after this one committed; the insert notifies ``events`` with the id, delivered to
  listeners at commit (``NOTIFY`` is transactional).
- SQLite: one writer at a time, so commit order is id order; the API polls.

Event data stays small and JSON-safe: ids, symbol, side, prices and amounts as decimal strings, reasons.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import String, cast, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.app.db.types import utcnow
from backend.app.models import EventRow
from src.domain.events import EventType
from src.domain.modes import TradingMode
from src.utils.logger import redactor

NOTIFY_CHANNEL = "events"
# pg_advisory_xact_lock key of the outbox's writers ("events" as an integer); no other lock in the system uses it.
ADVISORY_LOCK_KEY = 0x6576656E7473


def json_safe(value: Any) -> Any:
    """Decimals as strings, enums as their values, datetimes as ISO text; containers recursively."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


async def add_event(
    session: AsyncSession,
    event_type: EventType,
    *,
    mode: TradingMode | str | None,
    symbol: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> int:
    """Insert one event in ``session``'s transaction and return its id (see the module's docstring). Fields of
    ``data`` without a value are left out (nested values are kept as they are: ``{"from": null}`` says something)."""
    values = {
        "type": event_type,
        "mode": None if mode is None else TradingMode(mode),
        "symbol": symbol,
        "data": redactor.scrub({key: json_safe(item) for key, item in (data or {}).items() if item is not None}),
        "at": at or utcnow(),
    }
    statement = insert(EventRow).values(**values)
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
        notify = func.pg_notify(NOTIFY_CHANNEL, cast(EventRow.id, String))
        result = await session.execute(statement.returning(EventRow.id, notify))
    else:
        result = await session.execute(statement.returning(EventRow.id))
    return int(result.scalar_one())
