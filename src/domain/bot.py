"""The bot's desired state (written by the API or Telegram), its actual state (written by the scheduler)
and the legal moves of the actual state."""

from __future__ import annotations

from enum import StrEnum

from src.exceptions import TradingSystemError


class DesiredState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # jobs keep running for exits and snapshots, but no new buys
    STOPPED = "stopped"  # no trading jobs at all


class BotState(StrEnum):
    """What the scheduler is doing: ``starting`` until it first reads the desired state, then the
    desired state it follows."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class BotAction(StrEnum):
    START = "start"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"


_ACTION_TO_STATE = {
    BotAction.START: DesiredState.RUNNING,
    BotAction.RESUME: DesiredState.RUNNING,
    BotAction.PAUSE: DesiredState.PAUSED,
    BotAction.STOP: DesiredState.STOPPED,
}

BOT_TRANSITIONS: dict[BotState, frozenset[BotState]] = {
    BotState.STARTING: frozenset({BotState.RUNNING, BotState.PAUSED, BotState.STOPPED}),
    BotState.RUNNING: frozenset({BotState.PAUSED, BotState.STOPPED}),
    BotState.PAUSED: frozenset({BotState.RUNNING, BotState.STOPPED}),
    BotState.STOPPED: frozenset({BotState.RUNNING, BotState.PAUSED}),
}


class IllegalBotTransition(TradingSystemError):
    """The bot was asked to move to a state it cannot reach from where it is."""


def desired_state_for(action: BotAction) -> DesiredState:
    return _ACTION_TO_STATE[action]


def check_bot_transition(current: BotState, new: BotState) -> BotState:
    """``new`` when the move is legal (staying is); raises ``IllegalBotTransition`` otherwise."""
    if new is not current and new not in BOT_TRANSITIONS[current]:
        raise IllegalBotTransition(f"bot cannot go from {current} to {new}", current=current, new=new)
    return new


def following(current: BotState, desired: DesiredState) -> BotState:
    """The state the scheduler moves to when it follows ``desired``."""
    return check_bot_transition(current, BotState(desired.value))
