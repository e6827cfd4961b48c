"""Settings that were removed, and where each went: one clear error instead of a value silently ignored.

Exits belong to the trading strategy (its parameters in ``STRATEGY_PARAMS``, checked against its declared
space, and the run-time key ``strategy.params``), so the backtest and the bot exit by one rule. The strategy
buys only when flat (one position per coin), so adding to a held coin is gone; backtests start from the bot's
own capital ``PAPER_STARTING_KRW``. An environment or ``.env`` that still sets one of the old keys stops the
start with one error naming why and what to do; a stored run-time request for one of the old run-time keys is
refused with the same reason.
Pure: imports nothing of the project but ``env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from src.config.env import USE_PROJECT_ENV_FILE, chosen_env_file

_EXITS = "exits belong to the strategy"
_FLAT = "the strategy buys only when flat (one position per coin)"
_CAPITAL = "backtests start from PAPER_STARTING_KRW, the bot's own capital"

# environment key -> why it went and what to set instead
REMOVED_KEYS: dict[str, str] = {
    "STOP_LOSS_PCT": f"{_EXITS}; set stop_loss_pct in STRATEGY_PARAMS",
    "TAKE_PROFIT_PCT": f"{_EXITS}; set take_profit_pct in STRATEGY_PARAMS",
    "TRAILING_STOP_PCT": f"{_EXITS}; set trailing_stop_pct in STRATEGY_PARAMS",
    "USE_ATR_EXITS": f"{_EXITS}; set stop_atr and target_atr in STRATEGY_PARAMS (0 = off)",
    "ATR_STOP_MULTIPLIER": f"{_EXITS}; set stop_atr in STRATEGY_PARAMS",
    "ATR_TARGET_MULTIPLIER": f"{_EXITS}; set target_atr in STRATEGY_PARAMS",
    "RISK_ALLOW_ADD_TO_POSITION": f"{_FLAT}; delete the setting",
    "RISK_MIN_ADD_KRW": f"{_FLAT}; delete the setting",
    "BACKTEST_INITIAL_CAPITAL": f"{_CAPITAL}; set PAPER_STARTING_KRW or use backtest.py --capital to override",
}

# run-time key (``bot_config``) -> why it went and what to request instead
REMOVED_RUNTIME_KEYS: dict[str, str] = {
    "risk.stop_loss_pct": f"{_EXITS}; set stop_loss_pct in strategy.params",
    "risk.take_profit_pct": f"{_EXITS}; set take_profit_pct in strategy.params",
    "risk.trailing_stop_pct": f"{_EXITS}; set trailing_stop_pct in strategy.params",
    "risk.allow_add_to_position": _FLAT,
    "risk.min_add_krw": _FLAT,
}


def removed_key_message(key: str) -> str:
    """``STOP_LOSS_PCT was removed: exits belong to the strategy; set stop_loss_pct in STRATEGY_PARAMS``."""
    why = REMOVED_KEYS.get(key.upper()) or REMOVED_RUNTIME_KEYS[key]
    return f"{key} was removed: {why}"


def _env_file_values(env_file: Path) -> dict[str, str | None]:
    from dotenv import dotenv_values

    try:
        return dict(dotenv_values(env_file, encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}  # load_settings reports an unreadable file


def removed_keys_set(
    env_file: Path | object | None = USE_PROJECT_ENV_FILE, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One message per removed key that ``environ`` (default: the process environment) or ``env_file`` still
    sets to a non-empty value (an empty value is ignored, as for every setting)."""
    env_path = chosen_env_file(env_file)
    sources: list[Mapping[str, str | None]] = [os.environ if environ is None else environ]
    if env_path is not None and env_path.is_file():
        sources.append(_env_file_values(env_path))
    found: list[str] = []
    for values in sources:
        for key, value in values.items():
            name = key.upper()
            if name in REMOVED_KEYS and (value or "").strip() and name not in found:
                found.append(name)
    return [removed_key_message(name) for name in sorted(found)]
