from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column, validates

from backend.app.db.base import Base, created_at_column
from backend.app.db.types import JSONType
from backend.app.models._columns import enum_column_type, without_secrets
from src.domain.events import EventType
from src.domain.modes import TradingMode


class EventRow(Base):
    """The outbox of the live event stream (``/api/v1/ws/events``): one row per thing the scheduler wrote,
    inserted in the same transaction as that thing (``backend.app.db.outbox.add_event``). Ids increase in
    commit order, so a client resumes with ``after=<last id it saw>``."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[EventType] = mapped_column(enum_column_type(EventType, "event_type", length=20))
    at: Mapped[datetime] = created_at_column()
    mode: Mapped[TradingMode | None] = mapped_column(enum_column_type(TradingMode, "event_mode"))
    symbol: Mapped[str | None] = mapped_column(String(20))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)

    _no_secrets = validates("data")(without_secrets)
