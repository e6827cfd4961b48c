"""Which strategy trades: the bundled ones by name, and users' own from ``STRATEGY_PATH``.

A user strategy is a ``.py`` file in ``STRATEGY_PATH`` (default ``strategies/``) that defines a subclass of
``src.strategy.Strategy`` with its own ``name``; see ``strategies/README.md``. Files are loaded once, at
start-up; a file that does not load is one ``ConfigurationError`` naming the file and the line.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config.settings import Settings
from src.exceptions import ConfigurationError
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from src.strategy.contract import WARMUP_BARS, Strategy, StrategySignals
from src.strategy.params import EXIT_PARAMS, ParameterSpace

BUNDLED: dict[str, type[Strategy]] = {
    RuleBasedBreakoutStrategy.name: RuleBasedBreakoutStrategy,
    VolatilityBreakoutStrategy.name: VolatilityBreakoutStrategy,
}
# The AI strategy is composed from a rule strategy and the adviser (``src.backtesting.ai_strategy``); its
# parameters are those of its candidate strategy (``AI_CANDIDATE_STRATEGY``... see docs/AI.md).
AI_STRATEGY = "ai"
STRATEGY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # as TRADING_STRATEGY accepts

_loaded: dict[Path, dict[str, type[Strategy]]] = {}

# The look-ahead check at load time: signals over the first ``cut`` candles must equal those over all candles
# for the bars both see, so a conclusion for bar t never depends on a later candle.
_PROBE_BARS = WARMUP_BARS + 150
_PROBE_CUTS = tuple(range(WARMUP_BARS + 10, _PROBE_BARS, 10))


def _where(path: Path, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.lineno is not None and Path(exc.filename or path) == path:
        return f"{path}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def _describe(exc: BaseException, path: Path | None = None) -> str:
    if isinstance(exc, ConfigurationError):
        return exc.message
    if isinstance(exc, SyntaxError):
        other = exc.filename is not None and path is not None and Path(exc.filename) != path
        elsewhere = f" (in {exc.filename}:{exc.lineno})" if other else ""
        return f"SyntaxError: {exc.msg}{elsewhere}"
    return f"{type(exc).__name__}: {exc}"


def _load_file(path: Path) -> list[type[Strategy]]:
    module_name = f"user_strategies.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"strategy file {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a user file that calls sys.exit() at import is broken too
        del sys.modules[module_name]
        raise ConfigurationError(f"strategy file {_where(path, exc)}: {_describe(exc, path)}") from None
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Strategy) and obj.__module__ == module_name and not inspect.isabstract(obj)
    ]


def _load_with_helpers(path: Path, folder: Path) -> list[type[Strategy]]:
    """``_load_file`` with ``folder`` importable while the file runs, so it can import its helper files
    (``from _indicators import zscore`` for ``_indicators.py``)."""
    sys.path.insert(0, str(folder))
    try:
        return _load_file(path)
    finally:
        sys.path.remove(str(folder))


def _line_of(cls: type) -> int:
    try:
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return 0


def _probe_candles() -> pd.DataFrame:
    """A seeded random walk with trends: enough candles for the warm-up and some signals."""
    rng = np.random.default_rng(13)
    steps = rng.normal(0.0, 0.01, _PROBE_BARS) + 0.004 * np.sin(np.arange(_PROBE_BARS) / 25)
    close = 50_000_000 * np.exp(np.cumsum(steps))
    open_ = np.concatenate(([close[0]], close[:-1]))
    spread = np.abs(rng.normal(0.0, 0.004, _PROBE_BARS)) * close
    index = pd.date_range("2020-01-01", periods=_PROBE_BARS, freq="h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.uniform(1.0, 10.0, _PROBE_BARS),
            "value": np.full(_PROBE_BARS, np.nan),
        },
        index=index,
    )


def _check_class(cls: type[Strategy], path: Path, line: int) -> None:
    """What a strategy class must satisfy to trade: a parameter space with valid defaults and the exit
    parameters, and signals that are arrays as long as the candles, decided without later candles."""
    where = f"strategy file {path}:{line}: {cls.__name__}"
    space = cls.space
    if not isinstance(space, ParameterSpace):
        raise ConfigurationError(f"{where}.space must be a ParameterSpace, got {type(space).__name__}")
    missing = [name for name in EXIT_PARAMS.names if name not in space.names]
    if missing:
        raise ConfigurationError(
            f"{where}.space lacks the exit parameters {', '.join(missing)}; add EXIT_PARAMS (or "
            "EXIT_PARAMS.with_defaults(...)) to it"
        )
    for param in space:
        try:
            param.coerce(param.default, cls.name)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: bad declared default: {exc.message}") from None
    try:
        strategy = cls()  # the declared defaults must make a valid strategy
    except Exception as exc:
        raise ConfigurationError(f"{where}() with its defaults fails: {_describe(exc)}") from None
    candles = _probe_candles()
    try:
        full = strategy.generate_signals(candles)
        prefixes = {cut: strategy.generate_signals(candles.iloc[:cut]) for cut in _PROBE_CUTS}
    except Exception as exc:
        raise ConfigurationError(
            f"strategy file {_where(path, exc)}: {cls.__name__}.generate_signals fails on test candles: "
            f"{_describe(exc)}"
        ) from None
    for signals, n in ((full, len(candles)), *((prefixes[cut], cut) for cut in _PROBE_CUTS)):
        if not isinstance(signals, StrategySignals):
            raise ConfigurationError(
                f"{where}.generate_signals must return self.signals(df, entry, exit, details), "
                f"got {type(signals).__name__}"
            )
        lengths = {"entry": len(signals.entry), "exit": len(signals.exit), "atr": len(signals.atr)}
        if any(length != n for length in lengths.values()):
            raise ConfigurationError(f"{where}.generate_signals returned arrays of {lengths} for {n} candles")
    for cut, prefix in prefixes.items():
        for kind in ("entry", "exit"):
            seen = getattr(prefix, kind)[WARMUP_BARS:cut]
            later = getattr(full, kind)[WARMUP_BARS:cut]
            if not np.array_equal(seen, later):
                bar = WARMUP_BARS + int(np.argmax(seen != later))
                raise ConfigurationError(
                    f"{where} looks ahead: its {kind} signal for bar {bar} changes when later candles are "
                    "added (a conclusion for bar t may use candles <= t only; see strategies/README.md)"
                )


def user_strategies(folder: Path | None) -> dict[str, type[Strategy]]:
    """The strategy classes defined in ``folder``'s ``.py`` files (loaded and checked once per folder), by name.
    Files whose name starts with ``_`` are skipped (helpers a strategy file may import)."""
    if folder is None or not folder.is_dir():
        return {}
    folder = folder.resolve()
    if folder in _loaded:
        return _loaded[folder]
    found: dict[str, type[Strategy]] = {}
    defined_at: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for cls in _load_with_helpers(path, folder):
            line = _line_of(cls)
            if cls.name in (*BUNDLED, AI_STRATEGY, "strategy"):
                taken = "the default" if cls.name == "strategy" else "taken by a bundled strategy"
                raise ConfigurationError(
                    f"strategy file {path}:{line}: class {cls.__name__} needs its own name "
                    f"(name = {cls.name!r} is {taken})"
                )
            if not STRATEGY_NAME.fullmatch(cls.name):
                raise ConfigurationError(
                    f"strategy file {path}:{line}: class {cls.__name__}: name {cls.name!r} must be lower case "
                    "letters, digits and _, starting with a letter (it is what TRADING_STRATEGY names)"
                )
            if cls.name in found:
                raise ConfigurationError(
                    f"strategy file {path}:{line}: a strategy named {cls.name!r} already exists "
                    f"({defined_at[cls.name]})"
                )
            _check_class(cls, path, line)
            found[cls.name] = cls
            defined_at[cls.name] = f"{path}:{line}"
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
