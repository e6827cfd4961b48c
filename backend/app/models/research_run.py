"""A research run (``backtest.py optimize | monte-carlo | ai-value``): what was asked, its result, and whether
its chosen parameters were applied to the bot."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, validates

from backend.app.db.base import Base, created_at_column, updated_at_column
from backend.app.db.types import JSONType, UTCDateTime
from backend.app.models._columns import enum_column_type, without_secrets
from src.domain.research_runs import ResearchKind, ResearchStatus


class ResearchRunRow(Base):
    __tablename__ = "research_runs"
    __table_args__ = (
        Index("ix_research_runs_created_at_id", "created_at", "id"),
        Index("ix_research_runs_kind", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[ResearchKind] = mapped_column(enum_column_type(ResearchKind, "research_kind"))
    status: Mapped[ResearchStatus] = mapped_column(enum_column_type(ResearchStatus, "research_status"))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)  # what was asked: strategy, params, data, options
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # the headline numbers a list shows
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # the sub-command's JSON report
    chosen: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # {"strategy", "params"} --apply applies
    created_by: Mapped[str] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    applied_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    _no_secrets = validates("error")(without_secrets)
