"""The ``events`` outbox as the WebSocket stream reads it: by id, oldest first."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.app.models import EventRow

_EVENTS = EventRow.__table__


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    """One event as sent: its id and its JSON text (encoded once, whatever the number of clients)."""

    id: int
    text: str


async def latest_event_id(connection: AsyncConnection) -> int:
    """The newest event's id, 0 when there is none."""
    return int(await connection.scalar(select(func.max(_EVENTS.c.id))) or 0)


async def events_after(connection: AsyncConnection, after: int, limit: int) -> list[StreamedEvent]:
    """Up to ``limit`` events with ``id > after``, oldest first, each as its wire message."""
    query = select(_EVENTS).where(_EVENTS.c.id > after).order_by(_EVENTS.c.id).limit(limit)
    rows = (await connection.execute(query)).all()
    return [
        StreamedEvent(
            row.id,
            json.dumps(
                {
                    "id": row.id,
                    "type": row.type.value,
                    "at": row.at.isoformat(),
                    "mode": None if row.mode is None else row.mode.value,
                    "symbol": row.symbol,
                    "data": row.data,
                },
                separators=(",", ":"),
            ),
        )
        for row in rows
    ]
