"""The bot's desired state (written by the API or Telegram) and actual state (written by the scheduler)."""

from __future__ import annotations

from enum import StrEnum

DESIRED_STATE_KEY = "bot.desired_state"
# The operator asks the scheduler to end the risk manager's safe mode: {"by", "reason", "requested_at"}.
SAFE_MODE_RESET_KEY = "risk.safe_mode_reset"


class DesiredState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # jobs keep running for exits and snapshots, but no new buys
    STOPPED = "stopped"  # no trading jobs at all


class BotState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"


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


def desired_state_for(action: BotAction) -> DesiredState:
    return _ACTION_TO_STATE[action]
