from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, validates

from backend.app.db.base import Base, created_at_column
from backend.app.db.types import JSONType
from backend.app.models._columns import without_secrets


class SystemLogRow(Base):
    __tablename__ = "system_logs"
    __table_args__ = (Index("ix_system_logs_created_at", "created_at"), Index("ix_system_logs_level", "level"))

    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[str] = mapped_column(String(20))  # info | warning | error | critical
    message: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(50), default="scheduler", server_default="scheduler")
    context: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = created_at_column()

    _no_secrets = validates("message", "context")(without_secrets)
