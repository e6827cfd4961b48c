"""The scheduler's side of run-time settings: read the requests in ``bot_config``, apply what passes between
jobs, and keep what it applied (and refused) for the heartbeat.

``SettingsApplier.refresh`` runs on the control poll and before every job, always under the scheduler's work
lock, so a change never lands in the middle of an order. The rules are ``src/config/runtime_state.py``; the
strategy and its parameters (``strategy.name``, ``strategy.params``) are also checked against the strategy's
declared parameter space (``strategy_problems``, the API's check too), which ``src/config`` cannot import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from src.config.runtime import runtime_value_to_json
from src.config.runtime_state import STORED_KEYS, AppliedSettings, Rejection, apply_requests
from src.config.settings import Settings
from src.exceptions import ConfigurationError
from src.strategy.registry import strategy_from_settings
from src.utils.logger import get_logger

if TYPE_CHECKING:
    from backend.app.services.trading_engine import TradingEngine

log = get_logger(__name__)


def strategy_problems(settings: Settings) -> list[str]:
    """Why ``settings`` cannot trade its strategy (unknown strategy, unknown parameter, a value out of its
    declared range), or nothing: the strategy is built exactly as the scheduler builds it."""
    try:
        strategy_from_settings(settings)
    except ConfigurationError as exc:
        return [exc.message]
    return []


class SettingsApplier:
    def __init__(self, engine: TradingEngine) -> None:
        self.engine = engine
        self.applied = AppliedSettings.from_environment(engine.environment, engine.clock())

    def report(self) -> dict[str, Any]:
        return self.applied.to_json()

    async def refresh(self) -> None:
        """Read the requests and apply them from the next job on; on a read or write failure keep the
        settings in use (the next poll tries again)."""
        try:
            stored = await self.engine.bot.get_configs(STORED_KEYS)
            result = apply_requests(self.applied, stored, self.engine.clock(), strategy_problems)
            if result.changed:
                await self.engine.configure(result.settings)
        except Exception as exc:
            log.warning("settings.apply_failed", error=f"{type(exc).__name__}: {exc}")
            return
        previous, self.applied = self.applied, result
        await self._record(previous, result)

    async def _record(self, previous: AppliedSettings, result: AppliedSettings) -> None:
        changes = {
            key: {"from": runtime_value_to_json(previous.value(key)), "to": runtime_value_to_json(result.value(key))}
            for key in result.changed
        }
        new_rejections = {
            key: rejection for key, rejection in result.rejected.items() if previous.rejected.get(key) != rejection
        }
        try:
            if changes:
                log.info("settings.applied", changes=changes)
                await self.engine.bot.record_settings_applied(changes, f"settings applied: {_summary(changes)}")
            for key, rejection in new_rejections.items():
                log.warning("settings.rejected", key=key, reason=rejection.reason)
                context = _context(key, rejection)
                await self.engine.bot.log("warning", f"setting {key} rejected", source="scheduler", context=context)
        except Exception as exc:  # the record is a courtesy; the settings are applied already
            log.warning("settings.record_failed", error=str(exc))


def _summary(changes: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{key} {change['from']!r} -> {change['to']!r}" for key, change in changes.items())


def _context(key: str, rejection: Rejection) -> dict[str, Any]:
    return {"key": key, "value": rejection.value, "reason": rejection.reason}
