"""Which strategy trades: the bundled ones by name, and users' own from ``STRATEGY_PATH``.

A user strategy is a ``.py`` file in ``STRATEGY_PATH`` (default ``strategies/``) that defines a subclass of
``src.strategy.Strategy`` with its own ``name``; see ``strategies/README.md``. Files are loaded once, at
start-up; a file that does not load is one ``ConfigurationError`` naming the file and the line.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.config.settings import Settings
from src.domain.exits import ExitPolicy
from src.exceptions import ConfigurationError
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from src.strategy.contract import Strategy

BUNDLED: dict[str, type[Strategy]] = {
    RuleBasedBreakoutStrategy.name: RuleBasedBreakoutStrategy,
    VolatilityBreakoutStrategy.name: VolatilityBreakoutStrategy,
}
# The AI strategy is composed from a rule strategy and the adviser (``src.backtesting.ai_strategy``); its
# parameters are those of its candidate strategy (``AI_CANDIDATE_STRATEGY``... see docs/AI.md).
AI_STRATEGY = "ai"

_loaded: dict[Path, dict[str, type[Strategy]]] = {}


def _where(path: Path, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return f"{path}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def _load_file(path: Path) -> list[type[Strategy]]:
    module_name = f"user_strategies.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"strategy file {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigurationError as exc:
        raise ConfigurationError(f"strategy file {_where(path, exc)}: {exc.message}") from None
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigurationError(f"strategy file {_where(path, exc)}: {type(exc).__name__}: {exc}") from None
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Strategy) and obj.__module__ == module_name and not inspect.isabstract(obj)
    ]


def user_strategies(folder: Path | None) -> dict[str, type[Strategy]]:
    """The strategy classes defined in ``folder``'s ``.py`` files (loaded once per folder), by name."""
    if folder is None or not folder.is_dir():
        return {}
    folder = folder.resolve()
    if folder in _loaded:
        return _loaded[folder]
    found: dict[str, type[Strategy]] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for cls in _load_file(path):
            line = inspect.getsourcelines(cls)[1]
            if cls.name in (*BUNDLED, AI_STRATEGY, "strategy"):
                raise ConfigurationError(
                    f"strategy file {path}:{line}: class {cls.__name__} needs its own name "
                    f"(name = {cls.name!r} is {'taken' if cls.name != 'strategy' else 'the default'})"
                )
            if cls.name in found:
                raise ConfigurationError(f"strategy file {path}:{line}: a strategy named {cls.name!r} already exists")
            try:
                cls()  # the declared defaults must make a valid strategy
            except Exception as exc:
                raise ConfigurationError(
                    f"strategy file {path}:{line}: {cls.__name__}() with its defaults fails: {exc}"
                ) from None
            found[cls.name] = cls
    _loaded[folder] = found
    return found


def available(folder: Path | None) -> dict[str, type[Strategy]]:
    """Every strategy that can trade: the bundled ones and the user's."""
    return {**BUNDLED, **user_strategies(folder)}


def strategy_class(name: str, folder: Path | None) -> type[Strategy]:
    classes = available(folder)
    if name not in classes:
        names = ", ".join([*classes, AI_STRATEGY])
        raise ConfigurationError(f"unknown strategy {name!r}; available: {names}")
    return classes[name]


def build_strategy(name: str, params: Mapping[str, Any], folder: Path | None) -> Strategy:
    """The named strategy with ``params`` (validated against its declared space)."""
    return strategy_class(name, folder).from_params(params)


def strategy_from_settings(settings: Settings) -> Strategy:
    """``TRADING_STRATEGY`` with ``STRATEGY_PARAMS``; for ``ai``, its candidate rule strategy (the adviser is
    added by the caller)."""
    config = settings.strategy
    name = config.candidate if config.name == AI_STRATEGY else config.name
    return build_strategy(name, config.params, config.path)


def exit_policy_for(settings: Settings) -> ExitPolicy:
    """The exits of the strategy that trades (for ``ai``: its candidate strategy's, whose entries the adviser
    confirms): what the position job sells by, in live, paper and replay alike."""
    return strategy_from_settings(settings).exit_policy
