"""Strategies side by side (A/B): named instances, each with its own strategy, parameters, symbols and paper account.

An instances file (``INSTANCES_FILE``, or ``scheduler_main.py --instances FILE``; TOML, or JSON when the name ends
in ``.json``) lists the instances; see ``instances.example.toml`` and docs/SCHEDULER_GUIDE.md, "A/B: strategies side
by side"::

    data_dir = "data/instances"        # optional; relative to the project root

    [[instance]]
    name = "breakout"
    strategy = "rule_breakout"
    symbols = ["KRW-BTC"]

    [[instance]]
    name = "volatility"
    strategy = "volatility_breakout"
    params = { k = 0.6 }
    paper_starting_krw = 1000000
    settings = { MAX_TRADES_PER_DAY = 4 }   # any other setting, by its .env name

Each instance's settings are the process's settings with the instance's keys replaced, validated by the same rules
as the environment (every group's field rules, the rules across keys, the strategy's declared parameter space), so
a bad entry is one start-up error naming the file, the instance and the key. Each instance has its own database
(``database_url``, default ``<data_dir>/<name>.db``): its own rows, its own single-trader lock and heartbeat, its
own paper account, with no change to the schema. Instances always trade paper (their own accounts); a replay of
the instances writes ``<data_dir>/replay/<name>.db``, recreated at every run.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import make_url

from src.config.env import PROJECT_ROOT
from src.config.settings import GROUPS, Settings
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError, TradingSystemError
from src.strategy.registry import strategy_from_settings

DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "instances"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")

# The instance's own keys, and the setting each one replaces.
INSTANCE_KEYS: dict[str, str] = {
    "strategy": "TRADING_STRATEGY",
    "params": "STRATEGY_PARAMS",
    "symbols": "TRADING_SYMBOLS",
    "paper_starting_krw": "PAPER_STARTING_KRW",
    "database_url": "DATABASE_URL",
}
_TOP_KEYS = frozenset({"data_dir", "instance"})
_ENTRY_KEYS = frozenset({"name", "settings", *INSTANCE_KEYS})
# Settings an instance may not change: what makes it an instance (its name, its account, its database) and what
# the process has once for all instances (one metrics endpoint).
_FIXED = {
    "TRADING_MODE": "instances trade their own paper accounts",
    "SCHEDULER_INSTANCE_NAME": "the instance's name is its scheduler name",
    "DATABASE_URL": "give it as the instance's database_url",
    "SCHEDULER_METRICS_PORT": "the process serves one metrics endpoint for all instances",
    "SCHEDULER_METRICS_HOST": "the process serves one metrics endpoint for all instances",
}


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    settings: Settings  # the base settings with the instance's keys; mode paper; scheduler name = ``name``
    replay_database_url: str  # where a replay of this instance writes (recreated at every replay)

    @property
    def database_url(self) -> str:
        return self.settings.database.url

    @property
    def strategy(self) -> str:
        return self.settings.strategy.name

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.settings.strategy.params)

    @property
    def symbols(self) -> list[str]:
        return list(self.settings.trading.symbols)


@dataclass(frozen=True, slots=True)
class InstancesFile:
    path: Path
    data_dir: Path
    instances: list[Instance]

    def names(self) -> list[str]:
        return [instance.name for instance in self.instances]


def _fields_by_alias() -> dict[str, tuple[str, str]]:
    """``ENV_NAME -> (group, field)`` for every setting."""
    found: dict[str, tuple[str, str]] = {}
    for group_name, group_cls in GROUPS.items():
        for field_name, field in group_cls.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else field_name
            found[alias.upper()] = (group_name, field_name)
    return found


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"instances file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"instances file {path}: cannot be read ({exc})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"instances file {path}: not valid {_format(path)} ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"instances file {path}: expected an object with an 'instance' list")
    return data


def _format(path: Path) -> str:
    return "JSON" if path.suffix.lower() == ".json" else "TOML"


def _rebuild(group: BaseModel, updates: Mapping[str, Any]) -> BaseModel:
    """``group`` with fields replaced, validated by the group's own rules (the environment is not read again)."""
    data: dict[str, Any] = {}
    for field_name, field in type(group).model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field_name
        data[alias] = getattr(group, field_name)
    data.update(updates)
    return type(group).model_validate(data)


def _setting_error(where: str, error: Any) -> ConfigurationError:
    key = str(error["loc"][0]) if error["loc"] else "value"
    message = str(error["msg"]).removeprefix("Value error, ")
    return ConfigurationError(f"{where}: {key}: {message}")


def instance_settings(base: Settings, name: str, overrides: Mapping[str, Any], *, where: str | None = None) -> Settings:
    """``base`` with ``overrides`` (by .env name) replaced, mode paper and scheduler name ``name``; validated by the
    group rules, the rules across keys and the strategy's parameter space. One ``ConfigurationError`` naming the key."""
    where = where or f"instance {name!r}"
    fields = _fields_by_alias()
    by_group: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        upper = key.upper()
        if upper not in fields:
            raise ConfigurationError(f"{where}: {key}: not a setting (give settings by their .env name)")
        group_name, _ = fields[upper]
        by_group.setdefault(group_name, {})[upper] = value
    by_group.setdefault("trading", {})["TRADING_MODE"] = TradingMode.PAPER
    by_group.setdefault("scheduler", {})["SCHEDULER_INSTANCE_NAME"] = name
    groups = {group_name: getattr(base, group_name) for group_name in GROUPS}
    for group_name, updates in by_group.items():
        try:
            groups[group_name] = _rebuild(groups[group_name], updates)
        except ValidationError as exc:
            raise _setting_error(where, exc.errors()[0]) from None
    settings = Settings(**groups)
    try:
        strategy_from_settings(settings)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: TRADING_STRATEGY/STRATEGY_PARAMS: {exc.message}") from None
    return settings


def _entry_overrides(where: str, entry: Mapping[str, Any], data_dir: Path, name: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    extra = entry.get("settings", {})
    if not isinstance(extra, dict):
        raise ConfigurationError(f"{where}: settings: expected a table of .env names and values")
    for key, value in extra.items():
        reason = _FIXED.get(str(key).upper())
        if reason:
            raise ConfigurationError(f"{where}: settings.{key}: cannot be set per instance ({reason})")
        overrides[str(key)] = value
    for key, setting in INSTANCE_KEYS.items():
        if key in entry:
            value = entry[key]
            if key == "params" and not isinstance(value, dict):
                raise ConfigurationError(f"{where}: params: expected a table (a JSON object), got {value!r}")
            if key == "symbols" and isinstance(value, list):
                value = ",".join(str(symbol) for symbol in value)
            overrides[setting] = value
    overrides.setdefault("DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / f'{name}.db'}")
    return overrides


def _database_key(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return str(Path(parsed.database).resolve())
    return parsed.render_as_string(hide_password=True)


def load_instances(path: Path, base: Settings) -> InstancesFile:
    """The instances of ``path`` with their settings; one ``ConfigurationError`` for the first problem."""
    data = _read(path)
    if unknown := sorted(set(data) - _TOP_KEYS):
        raise ConfigurationError(f"instances file {path}: unknown key {unknown[0]!r} (known: data_dir, instance)")
    raw_dir = data.get("data_dir", str(DEFAULT_DATA_DIR))
    if not isinstance(raw_dir, str) or not raw_dir.strip():
        raise ConfigurationError(f"instances file {path}: data_dir: expected a folder path")
    data_dir = Path(raw_dir) if Path(raw_dir).is_absolute() else PROJECT_ROOT / raw_dir
    entries = data.get("instance")
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"instances file {path}: no instances (add one [[instance]] table per instance)")
    instances: list[Instance] = []
    databases: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ConfigurationError(f"instances file {path}: instance #{number}: expected a table")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ConfigurationError(
                f"instances file {path}: instance #{number}: name {name!r}: expected lowercase letters, digits, "
                "'_' or '-', starting with a letter, at most 40 characters"
            )
        where = f"instances file {path}: instance {name!r}"
        if name in (instance.name for instance in instances):
            raise ConfigurationError(f"{where}: the name is used twice")
        if unknown := sorted(set(entry) - _ENTRY_KEYS):
            raise ConfigurationError(
                f"{where}: unknown key {unknown[0]!r} (known: name, {', '.join(INSTANCE_KEYS)}, settings)"
            )
        overrides = _entry_overrides(where, entry, data_dir, name)
        settings = instance_settings(base, name, overrides, where=where)
        database = _database_key(settings.database.url)
        if database in databases:
            raise ConfigurationError(
                f"{where}: database_url is also instance {databases[database]!r}'s; each instance needs its own"
            )
        databases[database] = name
        replay_url = f"sqlite+aiosqlite:///{data_dir / 'replay' / f'{name}.db'}"
        instances.append(Instance(name=name, settings=settings, replay_database_url=replay_url))
    return InstancesFile(path=path, data_dir=data_dir, instances=instances)


__all__ = ["DEFAULT_DATA_DIR", "INSTANCE_KEYS", "Instance", "InstancesFile", "instance_settings", "load_instances"]


def failure_reason(exc: BaseException) -> str:
    """Why an instance could not start or be read, in one line: our own errors' message, else the (driver's)
    exception type and the first line of its text."""
    if isinstance(exc, TradingSystemError):
        return exc.message
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__
