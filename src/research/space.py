"""What a search varies: dimensions over a strategy's declared parameter space, with ``name=lo:hi:step`` overrides.

A ``SearchSpace`` is built from the strategy's ``ParameterSpace`` (the ranges it declares, which bound every
search) and the ``--space`` specifications:

- ``name=lo:hi:step``: numbers from ``lo`` to ``hi`` (inclusive when on the step) in steps of ``step``;
- ``name=lo:hi``: any number in ``lo..hi`` (whole numbers for an integer parameter); a grid takes
  ``GRID_POINTS`` evenly spaced values;
- ``name=a,b,c``: these values (any type: numbers, ``true``/``false``, choices); ``name=value``: fixed.

Without ``--space`` the strategy's own parameters (not the exit parameters) are searched over their declared
ranges. Every value is checked against the declared space: an unknown parameter, a value outside the declared
range, ``lo > hi``, a step that is not positive or an empty list is one ``ConfigurationError``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from src.exceptions import ConfigurationError
from src.strategy.params import EXIT_PARAMS, Param, ParameterSpace, ParamValue

GRID_POINTS = 5  # values of a dimension without a step in a grid
_NUMBER_TYPES = (int, float)


@dataclass(frozen=True, slots=True)
class Dimension:
    """One searched parameter: a numeric range (``step`` None: continuous) or a list of ``choices``."""

    name: str
    kind: type
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[ParamValue, ...] = ()

    @property
    def is_range(self) -> bool:
        return not self.choices

    def _value(self, x: float) -> ParamValue:
        return round(x) if self.kind is int else float(round(x, 12))

    def stepped(self) -> list[ParamValue]:
        """The values on the step from ``low`` to ``high``."""
        assert self.low is not None
        assert self.high is not None
        assert self.step is not None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [self._value(self.low + i * self.step) for i in range(count)]

    def grid(self, points: int = GRID_POINTS) -> list[ParamValue]:
        if self.choices:
            return list(self.choices)
        if self.step is not None:
            return self.stepped()
        assert self.low is not None
        assert self.high is not None
        if points <= 1 or self.low == self.high:
            return [self._value(self.low)]
        values = [self._value(self.low + (self.high - self.low) * i / (points - 1)) for i in range(points)]
        return list(dict.fromkeys(values))  # an integer range narrower than the points: each value once

    def sample(self, rng: random.Random) -> ParamValue:
        if self.choices:
            return rng.choice(self.choices)
        if self.step is not None:
            return rng.choice(self.stepped())
        assert self.low is not None
        assert self.high is not None
        if self.kind is int:
            return rng.randint(int(self.low), int(self.high))
        return rng.uniform(self.low, self.high)

    def suggest(self, trial: Any) -> ParamValue:
        """The value an Optuna trial asks for (``trial.suggest_*`` with this dimension's distribution)."""
        if self.choices:
            value: ParamValue = trial.suggest_categorical(self.name, list(self.choices))
            return value
        assert self.low is not None
        assert self.high is not None
        if self.step is not None:
            top = self.stepped()[-1]  # Optuna wants high on the step
            if self.kind is int:
                return int(trial.suggest_int(self.name, int(self.low), int(top), step=int(self.step)))
            return float(trial.suggest_float(self.name, self.low, float(top), step=self.step))
        if self.kind is int:
            return int(trial.suggest_int(self.name, int(self.low), int(self.high)))
        return float(trial.suggest_float(self.name, self.low, self.high))

    def describe(self) -> dict[str, Any]:
        if self.choices:
            return {"name": self.name, "choices": list(self.choices)}
        return {"name": self.name, "low": self.low, "high": self.high, "step": self.step}


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """The dimensions searched and the fixed values of every other parameter (``base``)."""

    strategy: str
    dimensions: tuple[Dimension, ...]
    base: dict[str, ParamValue]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def grid_size(self, points: int = GRID_POINTS) -> int:
        return math.prod(len(d.grid(points)) for d in self.dimensions)

    def grid(self, points: int = GRID_POINTS) -> Iterator[dict[str, ParamValue]]:
        for combo in itertools.product(*(d.grid(points) for d in self.dimensions)):
            yield {**self.base, **dict(zip(self.names, combo, strict=True))}

    def sample(self, count: int, seed: int) -> list[dict[str, ParamValue]]:
        rng = random.Random(seed)
        return [{**self.base, **{d.name: d.sample(rng) for d in self.dimensions}} for _ in range(count)]

    def suggest(self, trial: Any) -> dict[str, ParamValue]:
        return {**self.base, **{d.name: d.suggest(trial) for d in self.dimensions}}

    def describe(self) -> list[dict[str, Any]]:
        return [d.describe() for d in self.dimensions]


def _number(text: str, param: Param, owner: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"--space {param.name}: expected a number, got {text!r}") from None
    param.coerce(int(value) if param.kind is int and value.is_integer() else value, owner)  # in the declared range
    return value


def _choice(text: str, param: Param, owner: str) -> ParamValue:
    raw: Any = text
    if param.kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ConfigurationError(f"--space {param.name}: expected true or false, got {text!r}")
        raw = lowered == "true"
    elif param.kind in _NUMBER_TYPES:
        try:
            raw = float(text)
        except ValueError:
            raise ConfigurationError(f"--space {param.name}: expected a number, got {text!r}") from None
        if param.kind is int and raw.is_integer():
            raw = int(raw)
    return param.coerce(raw, owner)


def parse_dimension(spec: str, space: ParameterSpace, owner: str) -> Dimension:
    """One ``--space`` specification (``name=lo:hi[:step]``, ``name=a,b,c`` or ``name=value``)."""
    name, sep, body = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigurationError(f"--space {spec!r}: expected name=lo:hi:step, name=lo:hi or name=a,b,c")
    known = {p.name: p for p in space}
    if name not in known:
        raise ConfigurationError(f"strategy {owner} has no parameter {name}; its parameters: {', '.join(known)}")
    param = known[name]
    body = body.strip()
    if not body:
        raise ConfigurationError(f"--space {name}: empty space (give lo:hi:step or a list of values)")
    if ":" in body:
        if param.kind not in _NUMBER_TYPES:
            raise ConfigurationError(f"--space {name}: a range needs a number parameter; give values: {name}=a,b")
        parts = body.split(":")
        if len(parts) not in (2, 3):
            raise ConfigurationError(f"--space {name}: expected lo:hi or lo:hi:step, got {body!r}")
        low, high = _number(parts[0], param, owner), _number(parts[1], param, owner)
        if low > high:
            raise ConfigurationError(f"--space {name}: lo {parts[0]} is above hi {parts[1]}")
        step = None
        if len(parts) == 3:
            try:
                step = float(parts[2])
            except ValueError:
                raise ConfigurationError(f"--space {name}: expected a step number, got {parts[2]!r}") from None
            if not math.isfinite(step) or step <= 0:
                raise ConfigurationError(f"--space {name}: the step must be > 0, got {parts[2]}")
        if param.kind is int and not all(v is None or float(v).is_integer() for v in (low, high, step)):
            raise ConfigurationError(f"--space {name}: an integer parameter needs whole lo, hi and step")
        return Dimension(name, param.kind, low, high, step)
    values = [v for v in (part.strip() for part in body.split(",")) if v]
    if not values:
        raise ConfigurationError(f"--space {name}: empty space (no values in {body!r})")
    choices = tuple(dict.fromkeys(_choice(v, param, owner) for v in values))
    return Dimension(name, param.kind, choices=choices)


def _declared(param: Param) -> Dimension:
    if param.kind is bool:
        return Dimension(param.name, bool, choices=(False, True))
    if param.kind is str:
        return Dimension(param.name, str, choices=param.choices or (str(param.default),))
    if param.low is None or param.high is None:
        raise ConfigurationError(f"parameter {param.name} declares no range; give --space {param.name}=lo:hi:step")
    return Dimension(param.name, param.kind, float(param.low), float(param.high))


def search_space(
    owner: str, declared: ParameterSpace, specs: Sequence[str] = (), base: Mapping[str, Any] | None = None
) -> SearchSpace:
    """The dimensions of ``specs`` (or, without any, the strategy's own declared parameters), the other
    parameters at ``base`` (validated) or their defaults."""
    fixed = declared.resolve(dict(base or {}), owner)
    if specs:
        dims = [parse_dimension(spec, declared, owner) for spec in specs]
        names = [d.name for d in dims]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigurationError(f"--space names {', '.join(twice)} more than once")
    else:
        exit_names = set(EXIT_PARAMS.names)
        dims = [_declared(p) for p in declared if p.name not in exit_names]
    if not dims:
        raise ConfigurationError(f"empty space: strategy {owner} declares no parameter of its own; give --space")
    searched = {d.name for d in dims}
    return SearchSpace(owner, tuple(dims), {k: v for k, v in fixed.items() if k not in searched})
