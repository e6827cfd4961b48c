"""A strategy's declared parameter space: each parameter's name, type, range and default, validated in one place.

The same declaration checks ``STRATEGY_PARAMS`` at start-up, a run-time change through the API, the flags of
``backtest.py``, and bounds what an optimiser may search. Every strategy shares the exit parameters
(``EXIT_PARAMS``); each declares its own defaults for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from src.domain.exits import ExitPolicy
from src.exceptions import ConfigurationError

ParamValue = int | float | bool | str


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter. ``kind`` is ``int``, ``float``, ``bool`` or ``str``; numbers have an inclusive
    ``low``..``high`` range; strings have ``choices``."""

    name: str
    kind: type
    default: ParamValue
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def coerce(self, value: Any, owner: str) -> ParamValue:
        """``value`` as this parameter's type, or a ConfigurationError naming the strategy and the parameter."""
        where = f"strategy {owner}: parameter {self.name}"
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise ConfigurationError(f"{where} must be true or false, got {value!r}")
        if self.kind is str:
            if isinstance(value, str) and (not self.choices or value in self.choices):
                return value
            raise ConfigurationError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{where} must be a number, got {value!r}")
        if self.kind is int and float(value) != int(value):
            raise ConfigurationError(f"{where} must be a whole number, got {value!r}")
        number: int | float = int(value) if self.kind is int else float(value)
        if not math.isfinite(number):
            raise ConfigurationError(f"{where} must be a finite number, got {value!r}")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise ConfigurationError(f"{where} must be in {self.low:g}..{self.high:g}, got {value!r}")
        return number

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind.__name__, "default": self.default}
        if self.low is not None or self.high is not None:
            out["range"] = [self.low, self.high]
        if self.choices:
            out["choices"] = list(self.choices)
        if self.doc:
            out["doc"] = self.doc
        return out


@dataclass(frozen=True, slots=True)
class ParameterSpace:
    params: tuple[Param, ...]

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"duplicate parameter names in {names}")

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, ParamValue]:
        return {p.name: p.default for p in self.params}

    def resolve(self, overrides: Mapping[str, Any], owner: str) -> dict[str, ParamValue]:
        """Defaults with ``overrides`` applied; unknown names and bad values are one clear error."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigurationError(
                f"strategy {owner} has no parameter {', '.join(unknown)}; its parameters: {', '.join(known)}"
            )
        values = self.defaults()
        for name, value in overrides.items():
            values[name] = known[name].coerce(value, owner)
        return values

    def with_defaults(self, **defaults: ParamValue) -> ParameterSpace:
        """The same space with other defaults (a strategy's own exit defaults)."""
        unknown = set(defaults) - set(self.names)
        if unknown:
            raise ConfigurationError(f"no parameter {', '.join(sorted(unknown))} to give a default")
        return ParameterSpace(tuple(replace(p, default=defaults.get(p.name, p.default)) for p in self.params))

    def __add__(self, other: ParameterSpace) -> ParameterSpace:
        return ParameterSpace(self.params + other.params)

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.params]


EXIT_PARAMS = ParameterSpace(
    (
        Param("stop_loss_pct", float, 0.0, 0.0, 50.0, doc="stop this percent below the entry fill (0 = off)"),
        Param("take_profit_pct", float, 0.0, 0.0, 1000.0, doc="target this percent above the entry fill (0 = off)"),
        Param("trailing_stop_pct", float, 0.0, 0.0, 50.0, doc="trailing stop below the highest price (0 = off)"),
        Param("stop_atr", float, 0.0, 0.0, 20.0, doc="stop this many ATR(14) below the entry fill (0 = off)"),
        Param("target_atr", float, 0.0, 0.0, 50.0, doc="target this many ATR(14) above the entry fill (0 = off)"),
        Param("max_hold_hours", float, 0.0, 0.0, 8760.0, doc="sell after holding this long (0 = off)"),
    )
)


def exit_policy_of(values: Mapping[str, Any]) -> ExitPolicy:
    return ExitPolicy(**{p.name: float(values[p.name]) for p in EXIT_PARAMS})
