"""A backtest started through the API (``POST /api/v1/backtests``): request, status, progress and result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, validates

from backend.app.db.base import Base, created_at_column, updated_at_column
from backend.app.db.types import JSONType, UTCDateTime
from backend.app.models._columns import enum_column_type, without_secrets
from src.domain.backtest_runs import BacktestStatus


class BacktestRunRow(Base):
    __tablename__ = "backtest_runs"
    __table_args__ = (
        Index("ix_backtest_runs_created_at_id", "created_at", "id"),
        Index("ix_backtest_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[BacktestStatus] = mapped_column(enum_column_type(BacktestStatus, "backtest_status"))
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    requested_by: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(300))  # the API process that runs it: "host:pid"
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    trades: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    equity: Mapped[list[list[Any]] | None] = mapped_column(JSONType)
    candles: Mapped[list[list[Any]] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    _no_secrets = validates("error")(without_secrets)
