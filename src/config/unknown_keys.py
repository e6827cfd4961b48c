"""Keys that look like settings but are none: a warning for each, naming the closest known key.

A mistyped key (STOPLOSS_PCT, RISK_STOP_LOS_PCT) would be ignored and leave the default in place, so a key
that looks like ours but is unknown earns a warning naming the closest known key. "Looks like ours": it
starts with one of these prefixes, or it is very close to a known key (difflib ratio >= SIMILAR_KEY_RATIO).
Everything else in the environment (PATH, HOME, PYTHONPATH, CI, ...) is none of our business.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from src.config.env import USE_PROJECT_ENV_FILE, chosen_env_file
from src.config.removed_keys import REMOVED_KEYS, removed_key_message
from src.config.settings import GROUPS

SETTING_PREFIXES = (
    "AI_", "API_", "ATR_", "BACKTEST_", "DATABASE_", "DB_", "FEAR_GREED_", "HEARTBEAT_", "KELLY_",
    "LIQUIDITY_", "NOTIFY_", "OPENAI_", "PAPER_", "QUICK_FILTER_", "RISK_", "SCHEDULER_", "STOP_LOSS",
    "STRATEGY_", "TAKE_PROFIT", "TELEGRAM_", "TRADING_", "TRAILING_STOP", "UPBIT_", "VALIDATOR_",
)  # fmt: skip
SIMILAR_KEY_RATIO = 0.85
# Keys with our prefixes that are read by something else: Docker Compose (.env.example), the test runner,
# the OpenAI SDK.
NOT_SETTINGS = frozenset(
    {
        "API_HOST_PORT", "GRAFANA_ADMIN_PASSWORD", "GRAFANA_ADMIN_USER", "GRAFANA_HOST_PORT", "POSTGRES_PASSWORD",
        "PROMETHEUS_HOST_PORT", "SCHEDULER_METRICS_HOST_PORT", "ENV_FILE",
        "TEST_DATABASE_URL", "REQUIRE_POSTGRES",
        "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_LOG",
    }
)  # fmt: skip


def known_keys() -> frozenset[str]:
    """Every environment key a setting is read from."""
    names: set[str] = set()
    for group in GROUPS.values():
        for field in group.model_fields.values():
            alias = field.validation_alias
            names.update([alias] if isinstance(alias, str) else alias.choices)  # type: ignore[union-attr,arg-type]
    return frozenset(name.upper() for name in names)


def _env_file_keys(env_file: Path) -> list[str]:
    from dotenv import dotenv_values

    try:
        return list(dotenv_values(env_file, encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return []  # load_settings reports an unreadable file


def unknown_key_warnings(
    env_file: Path | object | None = USE_PROJECT_ENV_FILE, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One warning per key in ``environ`` (default: the process environment) or ``env_file`` that looks like
    a setting but is none, naming the closest known key."""
    known = known_keys()
    env_path = chosen_env_file(env_file)
    sources: list[tuple[str, list[str]]] = [("the environment", list(os.environ if environ is None else environ))]
    if env_path is not None and env_path.is_file():
        sources.append((str(env_path), _env_file_keys(env_path)))
    warnings: list[str] = []
    seen: set[str] = set()
    for where, keys in sources:
        for key in sorted(keys):
            name = key.upper()
            if name in known or name in NOT_SETTINGS or name in REMOVED_KEYS or name in seen:
                continue  # a removed key is an error of its own (load_settings)
            was = difflib.get_close_matches(name, REMOVED_KEYS, n=1, cutoff=SIMILAR_KEY_RATIO)
            if was:
                seen.add(name)
                warnings.append(f"{key} in {where} is not a setting and is ignored; {removed_key_message(was[0])}")
                continue
            similar = difflib.get_close_matches(name, known, n=1, cutoff=SIMILAR_KEY_RATIO)
            if not (similar or name.startswith(SETTING_PREFIXES)):
                continue
            seen.add(name)
            closest = similar or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {closest[0]}?" if closest else "no setting has a similar name (see .env.example)"
            warnings.append(f"{key} in {where} is not a setting and is ignored; {hint}")
    return warnings
