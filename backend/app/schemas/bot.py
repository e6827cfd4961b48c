from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from backend.app.schemas.common import ApiModel, Reason
from src.config.runtime_state import SettingStatus
from src.domain.bot import BotAction, DesiredState
from src.domain.market_stream import StreamState


class SettingState(ApiModel):
    """A run-time setting as requested and as the scheduler applies it (from its heartbeat)."""

    key: str
    requested: Any = Field(description="The stored value, or the default while none is stored")
    applied: Any = Field(description="What the scheduler uses; null until its heartbeat reports settings")
    applied_since: datetime | None = Field(description="When the scheduler started using the applied value")
    status: SettingStatus = Field(
        description="applied | pending (the scheduler takes it before its next job) | rejected (refused, the "
        "previous value stays) | unknown (no heartbeat with settings)"
    )
    message: str | None = Field(description="Why the request is pending, rejected or unknown")


class RealtimeStatus(ApiModel):
    """The real-time exits as the scheduler reported them with its heartbeat (``details.realtime``)."""

    enabled: bool = Field(description="REALTIME_EXITS_ENABLED in the scheduler (false in replay)")
    stream: StreamState = Field(description="The public price stream: off (none held), connecting, live, stale, down")
    since: datetime | None = Field(default=None, description="When the stream entered that state")
    fallback: bool = Field(description="True while the REST fallback polls the held coins' prices")
    watched: list[str] = Field(description="The held coins whose stop, target and trailing level are watched")
    last_tick_at: datetime | None = Field(default=None, description="The last price received (stream or REST)")
    reconnects: int = Field(default=0, description="Reconnects of the stream since the scheduler started")
    fallback_polls: int = Field(default=0, description="REST polls made by the fallback since the scheduler started")
    exits: int = Field(default=0, description="Crossings the real-time path handled since the scheduler started")


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
    settings: list[SettingState] = Field(description="Run-time settings: requested and applied, by key")
    realtime: RealtimeStatus | None = Field(
        default=None, description="The real-time exits (price stream, REST fallback); null until a heartbeat has them"
    )


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


class BotConfigEntry(SettingState):
    description: str
    rule: str = Field(description="What a valid value is")
    value: Any = Field(description="Stored run-time value; null means the default applies")
    default: Any = Field(description="Value from the environment (the scheduler's own, once it has reported it)")
    updated_by: str | None
    updated_at: datetime | None


class BotConfigOut(ApiModel):
    entries: list[BotConfigEntry]


class BotConfigUpdate(ApiModel):
    values: dict[str, Any] = Field(
        min_length=1, max_length=20, description="Keys to change; each is validated by its own rule"
    )
    reason: Reason
