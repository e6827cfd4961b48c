"""Domain events and the notification port: the pipeline, risk manager and scheduler announce events;
the backend delivers them (Telegram).

A notifier must never block or fail a trading cycle: ``notify`` only enqueues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class EventKind(StrEnum):
    TRADE_EXECUTED = "trade_executed"
    AI_DECISION = "ai_decision"
    VALIDATOR_OVERRIDE = "validator_override"
    ERROR = "error"
    SAFE_MODE_ENTERED = "safe_mode_entered"
    SAFE_MODE_LEFT = "safe_mode_left"
    BOT_STATE_CHANGED = "bot_state_changed"
    DAILY_REPORT = "daily_report"
    AI_BUDGET_REACHED = "ai_budget_reached"  # the AI is off until the period rolls over; ai entries are held
    AI_BUDGET_RESTORED = "ai_budget_restored"


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    kind: EventKind
    title: str
    fields: dict[str, Any] = field(default_factory=dict)  # e.g. symbol, side, price (Decimal), pnl
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Notifier(Protocol):
    def notify(self, event: NotificationEvent) -> None:
        """Enqueue; returns at once and never raises."""


class NullNotifier:
    """Used where no channel is configured; keeps what it was given, for tests and replay summaries."""

    def __init__(self) -> None:
        self.events: list[NotificationEvent] = []

    def notify(self, event: NotificationEvent) -> None:
        self.events.append(event)
