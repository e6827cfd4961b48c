from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, validates

from backend.app.db.base import Base, created_at_column, updated_at_column
from backend.app.db.types import JSONType, UTCDateTime
from backend.app.models._columns import enum_column_type, without_secrets
from src.domain.bot import BotState
from src.domain.modes import TradingMode


class BotConfigRow(Base):
    """Run-time settings and the desired bot state, written by the API and Telegram, read by the scheduler."""

    __tablename__ = "bot_config"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    value: Mapped[Any] = mapped_column(JSONType)
    description: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = updated_at_column()


class BotStateRow(Base):
    """The scheduler's heartbeat: what it actually is, written by the scheduler only."""

    __tablename__ = "bot_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_name: Mapped[str] = mapped_column(String(100), unique=True)
    state: Mapped[BotState] = mapped_column(enum_column_type(BotState, "bot_state"))  # 0006
    mode: Mapped[TradingMode] = mapped_column(enum_column_type(TradingMode, "bot_mode"))  # 0006
    symbols: Mapped[list[str]] = mapped_column(JSONType)
    schedule: Mapped[str | None] = mapped_column(String(100))
    pid: Mapped[int | None] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    safe_mode: Mapped[bool] = mapped_column(default=False, server_default=false())
    safe_mode_reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = created_at_column()

    _no_secrets = validates("last_error", "safe_mode_reason")(without_secrets)


class SchedulerLockRow(Base):
    """The single-trader lock on SQLite (PostgreSQL uses an advisory lock): a lease renewed by the holder."""

    __tablename__ = "scheduler_locks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
