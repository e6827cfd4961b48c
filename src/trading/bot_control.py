"""Keys of the bot's control rows in ``bot_config`` (the states themselves: ``src.domain.bot``)."""

from __future__ import annotations

DESIRED_STATE_KEY = "bot.desired_state"
# The operator asks the scheduler to end the risk manager's safe mode: {"by", "reason", "requested_at"}.
SAFE_MODE_RESET_KEY = "risk.safe_mode_reset"
