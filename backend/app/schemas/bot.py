from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from backend.app.schemas.common import ApiModel, Reason
from src.trading.bot_control import BotAction, DesiredState


class BotStatusOut(ApiModel):
    """The scheduler's real state from its heartbeat, and the state it was asked to be in."""

    instance: str
    state: str = Field(description="starting | running | paused | stopped | error, or unknown without a heartbeat")
    desired_state: DesiredState
    stale: bool = Field(description="No heartbeat, or the heartbeat is older than HEARTBEAT_STALE_SECONDS")
    message: str | None = Field(description="Why the status is stale or unknown")
    mode: str | None
    symbols: list[str]
    schedule: str | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_age_seconds: float | None
    last_run: datetime | None
    next_run: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    safe_mode: bool
    safe_mode_reason: str | None
    safe_mode_since: datetime | None


class BotControlIn(ApiModel):
    action: BotAction
    reason: Reason


class SafeModeResetIn(ApiModel):
    reason: Reason


class SafeModeResetOut(ApiModel):
    requested_by: str
    reason: str
    message: str


class BotControlOut(ApiModel):
    action: BotAction
    desired_state: DesiredState
    requested_by: str
    reason: str
    message: str


class BotConfigEntry(ApiModel):
    key: str
    description: str
    rule: str = Field(description="What a valid value is")
    value: Any = Field(description="Stored run-time value; null means the environment default applies")
    default: Any = Field(description="Value from the environment")
    effective: Any = Field(description="What the scheduler uses")
    updated_by: str | None
    updated_at: datetime | None


class BotConfigOut(ApiModel):
    entries: list[BotConfigEntry]


class BotConfigUpdate(ApiModel):
    values: dict[str, Any] = Field(
        min_length=1, max_length=20, description="Keys to change; each is validated by its own rule"
    )
    reason: Reason
