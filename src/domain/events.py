"""Domain events: the live event stream's types (``EventType``, the ``events`` outbox the API streams over
WebSocket) and the notification port (``EventKind``, ``NotificationEvent``: what the pipeline, risk manager and
scheduler announce to a person, delivered by Telegram).

The two vocabularies answer different questions and are kept apart on purpose: ``EventType`` names a row the
scheduler wrote (one per order placed, fill, trade, heartbeat...), ``EventKind`` a message worth a person's
attention (a daily report, a validator override, an AI budget reached: none is a row of its own). Where a kind
is the same happening as a type, ``EventKind.event_type`` says which, so no third name exists for it.

A notifier must never block or fail a trading cycle: ``notify`` only enqueues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class EventType(StrEnum):
    """What one row of the ``events`` outbox records; written in the same transaction as the rows it describes."""

    DECISION = "decision"  # ai_decisions: a trading cycle's decision (AI, rule or cache)
    ORDER_PLACED = "order_placed"  # orders: a new order row (sent to the exchange next)
    ORDER_FILLED = "order_filled"  # orders: settled filled (its trades in the same transaction)
    ORDER_FAILED = "order_failed"  # orders: failed or cancelled
    TRADE = "trade"  # trades: one execution
    EXIT = "exit"  # positions: closed, with the exit reason and realised P&L
    SAFE_MODE_ON = "safe_mode_on"  # risk_state: safe mode entered
    SAFE_MODE_OFF = "safe_mode_off"  # risk_state: safe mode left
    ERROR = "error"  # system_logs: an error or critical line
    HEARTBEAT = "heartbeat"  # bot_state: the scheduler's heartbeat
    SETTINGS_APPLIED = "settings_applied"  # run-time settings the scheduler applied
    BOT_STATE = "bot_state"  # bot_config desired state (operator) or bot_state applied state (scheduler)
    ANNOUNCEMENT = "announcement"  # system_logs: an Upbit announcement from the private stream


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
    ANNOUNCEMENT = "announcement"  # Upbit's own notice (delisting, deposit/withdrawal halt, maintenance...)
    MARKET_WARNING = "market_warning"  # a held coin flagged warning/caution by Upbit, and what was done about it

    @property
    def event_type(self) -> EventType | None:
        """The stream's type for the same happening, or None for a message that is no row of its own."""
        return _TYPE_OF_KIND.get(self)


_TYPE_OF_KIND = {
    EventKind.TRADE_EXECUTED: EventType.TRADE,
    EventKind.AI_DECISION: EventType.DECISION,
    EventKind.ERROR: EventType.ERROR,
    EventKind.SAFE_MODE_ENTERED: EventType.SAFE_MODE_ON,
    EventKind.SAFE_MODE_LEFT: EventType.SAFE_MODE_OFF,
    EventKind.BOT_STATE_CHANGED: EventType.BOT_STATE,
    EventKind.ANNOUNCEMENT: EventType.ANNOUNCEMENT,
}


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
