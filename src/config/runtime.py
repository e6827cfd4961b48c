"""Settings the scheduler may take at run time from ``bot_config``: the one registry of keys and their rules.

Each key names a ``Settings`` field and validates with that field's own type (``src/config/rules.py``), so the
environment and the API share one rule per key. The API validates a value with ``validate_runtime_value``
before it writes it; the scheduler reads the stored JSON and applies it with ``runtime_state.apply_requests``
(the same function, plus the rules across keys). A key that is absent from ``bot_config`` means "use the value
from the environment" (``runtime_default``). ``KEY_GROUPS`` are keys applied together (all or none), such as
a strategy and its parameters. Adding a key here is all it takes to have the scheduler apply it,
provided the part that uses the field reads it from the ``Settings`` handed to ``TradingEngine.configure``.
Pure pydantic: importable without FastAPI or SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from src.config.removed_keys import REMOVED_RUNTIME_KEYS, removed_key_message
from src.config.settings import Settings
from src.exceptions import InvalidInput


@dataclass(frozen=True, slots=True)
class RuntimeKey:
    key: str
    description: str
    rule: str  # what a valid value is, for people
    settings_path: tuple[str, str]  # (group, field) of the environment default
    adapter: TypeAdapter[Any]  # the settings field's own type: one rule for the environment and the API


def _field_type(group: str, name: str) -> Any:
    """The declared type of ``Settings.<group>.<name>`` with its constraints (see ``src/config/rules.py``)."""
    field = Settings.model_fields[group].annotation.model_fields[name]  # type: ignore[union-attr]
    return Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation


def _key(key: str, description: str, rule: str, settings_path: tuple[str, str]) -> RuntimeKey:
    return RuntimeKey(key, description, rule, settings_path, TypeAdapter(_field_type(*settings_path)))


RUNTIME_KEYS: dict[str, RuntimeKey] = {
    entry.key: entry
    for entry in (
        _key(
            "trading.symbols",
            "Markets the trading cycle analyses",
            "list of 1-30 distinct Upbit KRW markets (KRW- and 1-15 ASCII capitals or digits), "
            'e.g. ["KRW-BTC", "KRW-ETH"]',
            ("trading", "symbols"),
        ),
        _key(
            "risk.max_positions",
            "Most positions held at once",
            "integer 1..50",
            ("risk", "max_positions"),
        ),
        _key(
            "risk.max_trades_per_day",
            "Most trades per day",
            "integer 1..10000",
            ("risk", "max_trades_per_day"),
        ),
        _key(
            "risk.max_position_pct",
            "Largest position, percent of equity",
            "decimal, 0 < x <= 100",
            ("risk", "max_position_pct"),
        ),
        _key(
            "risk.daily_loss_limit_pct",
            "Daily loss that stops new buys (circuit breaker, safe mode), percent of equity",
            "decimal, 0 < x < 100",
            ("risk", "daily_loss_limit_pct"),
        ),
        _key(
            "risk.weekly_loss_limit_pct",
            "Weekly loss that stops new buys (circuit breaker, safe mode), percent of equity",
            "decimal, 0 < x < 100",
            ("risk", "weekly_loss_limit_pct"),
        ),
        _key(
            "risk.min_trade_interval_hours",
            "Least time between two trades, hours (0 = no spacing)",
            "decimal, 0 <= x <= 8760",
            ("risk", "min_trade_interval_hours"),
        ),
        _key(
            "risk.cash_reserve_pct",
            "KRW kept unspent, percent of equity",
            "decimal, 0 <= x < 100",
            ("risk", "cash_reserve_pct"),
        ),
        _key(
            "strategy.name",
            "The strategy that trades (bundled: rule_breakout, volatility_breakout, ai; or a user strategy in "
            "STRATEGY_PATH); applied at the next candle, never mid-order",
            "a strategy name (lower case letters, digits and _), known to the scheduler",
            ("strategy", "name"),
        ),
        _key(
            "strategy.params",
            "The strategy's parameters, exits included (stop_loss_pct, take_profit_pct, trailing_stop_pct, "
            "stop_atr, target_atr, max_hold_hours); the others keep their defaults; held positions move to the "
            "new exit levels",
            "a JSON object of the strategy's declared parameters, each in its range, "
            'e.g. {"k": 0.6, "stop_loss_pct": 3}',
            ("strategy", "params"),
        ),
        _key(
            "ai.enabled",
            "Ask the AI adviser at all",
            "true or false",
            ("ai", "enabled"),
        ),
        _key(
            "ai.min_confidence",
            "Buys with AI confidence below this become holds",
            "decimal, 0 <= x <= 100",
            ("ai", "min_confidence"),
        ),
        _key(
            "ai.daily_budget_usd",
            "Most USD the AI may spend per UTC day (decisions and quick filter); 0 = no cap",
            "decimal, 0 <= x <= 100000",
            ("ai", "daily_budget_usd"),
        ),
        _key(
            "ai.monthly_budget_usd",
            "Most USD the AI may spend per UTC month (decisions and quick filter); 0 = no cap",
            "decimal, 0 <= x <= 1000000",
            ("ai", "monthly_budget_usd"),
        ),
    )
}


# Keys the scheduler applies together, all or none: a strategy's parameters only make sense with its name.
KEY_GROUPS: tuple[tuple[str, ...], ...] = (("strategy.name", "strategy.params"),)


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def validate_runtime_value(key: str, value: Any) -> Any:
    """The typed value (``Decimal``, ``int``, ``bool``, ``list[str]``, ``dict``) of ``value`` for ``key``.

    Raises ``InvalidInput`` naming the key and what is expected, for an unknown key or a bad value, and naming
    why a removed key went (``removed_keys.REMOVED_RUNTIME_KEYS``). Whether a strategy name and its
    parameters fit the strategy's declared space is checked where strategies are known (the API and the
    scheduler), not here.
    """
    entry = RUNTIME_KEYS.get(key)
    if key in REMOVED_RUNTIME_KEYS:
        raise InvalidInput(removed_key_message(key), key=key)
    if entry is None:
        raise InvalidInput(f"unknown run-time key {key!r}; known keys: {', '.join(sorted(RUNTIME_KEYS))}", key=key)
    try:
        return entry.adapter.validate_python(value, strict=True)  # JSON brings real types; text is the environment's
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise InvalidInput(f"{key}: expected {entry.rule} ({problems})", key=key) from None


def runtime_value_to_json(value: Any) -> Any:
    """The JSON form stored in ``bot_config``: decimals as strings so no digit is lost."""
    if isinstance(value, Decimal):
        return str(value)
    return value


def runtime_default(settings: Settings, key: str) -> Any:
    """The value from the environment that applies while ``bot_config`` has no row for ``key``."""
    group, field = RUNTIME_KEYS[key].settings_path
    return getattr(getattr(settings, group), field)
