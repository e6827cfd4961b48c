"""One validation rule per setting, shared by the environment (``settings.py``) and run-time keys (``runtime.py``).

Each rule is an ``Annotated`` type: the settings field is declared with it, and the run-time registry takes the
field's type from the settings model, so a value is valid from the API exactly when it is valid from the
environment. The sources differ only in how text is decoded: the environment is text (``"5"``, ``"true"``,
``KRW-BTC,KRW-ETH``), the API is JSON and is validated strictly (``5``, ``true``, ``["KRW-BTC"]``).
Pure pydantic, imports nothing of the project.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

MARKET_BASE_MAX_LENGTH = 15
MAX_SYMBOLS = 30
# ASCII only: str.isalnum() and str.upper() also accept Greek or full-width letters, which Upbit never lists.
_KRW_MARKET = re.compile(rf"KRW-[A-Z0-9]{{1,{MARKET_BASE_MAX_LENGTH}}}", re.ASCII)


def krw_market(symbol: str) -> str:
    """An Upbit KRW market: ``KRW-`` and 1-15 ASCII capital letters or digits (``KRW-BTC``, ``KRW-1INCH``)."""
    if not _KRW_MARKET.fullmatch(symbol):
        shown = symbol if len(symbol) <= 40 else symbol[:40] + "..."
        raise ValueError(
            f"expected Upbit KRW markets like KRW-BTC (KRW- and 1-{MARKET_BASE_MAX_LENGTH} ASCII capital letters "
            f"or digits), got {shown!r}"
        )
    return symbol


def _each_once(symbols: list[str]) -> list[str]:
    if len(set(symbols)) != len(symbols):
        raise ValueError("expected each market once")
    return symbols


def _number(value: Any) -> Any:
    """A decimal from text or a JSON number: never true/false, floats through their shortest text (0.1 stays 0.1)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    if isinstance(value, float | int):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"expected a number, got {value!r}") from None
        if not number.is_finite():  # here, so the error shows the text as typed (NaN, inf)
            raise ValueError("Input should be a finite number")
        return number
    return value


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("expected a finite number")
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected an integer, not true/false")
    return value


_NUMBER = BeforeValidator(_number)
_FINITE = AfterValidator(_finite)
_NOT_BOOL = BeforeValidator(_no_bool)


KrwMarket = Annotated[str, AfterValidator(krw_market)]
KrwMarkets = Annotated[
    list[KrwMarket],
    Field(min_length=1, max_length=MAX_SYMBOLS),
    AfterValidator(_each_once),
]

# The rules of the settings that may change at run time (``runtime.RUNTIME_KEYS``); percentages have at most
# 4 decimal places.
MaxPositions = Annotated[int, _NOT_BOOL, Field(ge=1, le=50)]
MaxTradesPerDay = Annotated[int, _NOT_BOOL, Field(ge=1, le=10_000)]
MaxPositionPct = Annotated[Decimal, _NUMBER, _FINITE, Field(gt=0, le=100, max_digits=12, decimal_places=4)]
LossLimitPct = Annotated[Decimal, _NUMBER, _FINITE, Field(gt=0, lt=100, max_digits=12, decimal_places=4)]
CashReservePct = Annotated[Decimal, _NUMBER, _FINITE, Field(ge=0, lt=100, max_digits=12, decimal_places=4)]
TradeSpacingHours = Annotated[Decimal, _NUMBER, _FINITE, Field(ge=0, le=8760, max_digits=12, decimal_places=4)]
ConfidencePct = Annotated[Decimal, _NUMBER, _FINITE, Field(ge=0, le=100, max_digits=12, decimal_places=4)]
DailyBudgetUsd = Annotated[Decimal, _NUMBER, _FINITE, Field(ge=0, le=100_000, max_digits=14, decimal_places=4)]
MonthlyBudgetUsd = Annotated[Decimal, _NUMBER, _FINITE, Field(ge=0, le=1_000_000, max_digits=14, decimal_places=4)]

# The trading strategy: its name, and its parameters as a JSON object of names to numbers, true/false or text. Which
# names and values a strategy takes is its declared parameter space, checked where strategies are known (the API
# and the scheduler build the strategy: ``src.strategy.registry``); here only the shape.
STRATEGY_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
MAX_STRATEGY_PARAMS = 64
_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)


def _param_values(params: dict[str, Any]) -> dict[str, Any]:
    """Names in lower case letters, digits and _; values JSON scalars (a finite number, true/false or text)."""
    for name, value in params.items():
        if not _PARAM_NAME.fullmatch(name):
            raise ValueError(f"expected parameter names in lower case letters, digits and _, got {name!r}")
        finite = not isinstance(value, float) or math.isfinite(value)
        if not isinstance(value, bool | int | float | str) or not finite:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
            raise ValueError(f"parameter {name}: expected a number, true/false or text, got {shown}")
    return params


StrategyName = Annotated[str, Field(pattern=STRATEGY_NAME_PATTERN)]
StrategyParams = Annotated[dict[str, Any], Field(max_length=MAX_STRATEGY_PARAMS), AfterValidator(_param_values)]
