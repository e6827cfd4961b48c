"""Values the risk manager takes and gives: the portfolio it judges, its verdicts, exit signals, trade stats."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from src.domain.decisions import PositionSizing
from src.domain.exits import ExitReason
from src.domain.money import ZERO
from src.exceptions import InvalidInput
from src.risk.store import PositionRecord


class EntryRule(StrEnum):
    """Codes that start each reason of a refused entry (``"<code>: <detail>"``)."""

    SAFE_MODE = "safe_mode"
    MIN_TRADE_INTERVAL = "min_trade_interval"
    MAX_TRADES_PER_DAY = "max_trades_per_day"
    MAX_POSITIONS = "max_positions"
    MAX_POSITION_PCT = "max_position_pct"
    CASH_RESERVE = "cash_reserve"
    MIN_ORDER = "min_order"
    ALREADY_HELD = "already_held"  # the coin is already held: the strategy buys only when flat
    MARKET_WARNING = "market_warning"  # Upbit flags the market with an investment warning (market_event.warning)
    MARKET_CAUTION = "market_caution"  # Upbit flags the market with a caution (market_event.caution)


def _check_money(name: str, value: object) -> None:
    if not isinstance(value, Decimal) or value < 0:
        raise InvalidInput(f"PortfolioView.{name} must be a non-negative Decimal, got {value!r}")


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """The account as the pipeline sees it now, in KRW.

    ``holdings``: market value of each coin held (symbol such as ``KRW-BTC`` -> KRW), including coins
    the bot did not buy. ``open_position_count``: open positions of this mode (normally
    ``len(await position_service.open_positions())``). ``equity`` = cash + sum of holdings; use
    ``PortfolioView.of(...)`` to have it computed.
    """

    equity: Decimal
    cash_krw: Decimal
    holdings: Mapping[str, Decimal] = field(default_factory=dict)
    open_position_count: int = 0

    def __post_init__(self) -> None:
        _check_money("equity", self.equity)
        _check_money("cash_krw", self.cash_krw)
        for symbol, value in self.holdings.items():
            _check_money(f"holdings[{symbol!r}]", value)
        if self.open_position_count < 0:
            raise InvalidInput(f"PortfolioView.open_position_count must be >= 0, got {self.open_position_count}")

    @classmethod
    def of(
        cls, cash_krw: Decimal, holdings: Mapping[str, Decimal] | None = None, open_position_count: int = 0
    ) -> PortfolioView:
        held = dict(holdings or {})
        for symbol, value in held.items():
            _check_money(f"holdings[{symbol!r}]", value)
        return cls(
            equity=cash_krw + sum(held.values(), ZERO),
            cash_krw=cash_krw,
            holdings=held,
            open_position_count=open_position_count,
        )

    def holding(self, symbol: str) -> Decimal:
        return self.holdings.get(symbol, ZERO)


@dataclass(frozen=True, slots=True)
class RiskVerdict:
    """May a new buy happen, and for at most how many KRW (the order total, before the fee).

    ``reasons`` explain a refusal (each starts with an ``EntryRule`` code); ``max_krw`` is 0 when refused.
    """

    allowed: bool
    reasons: list[str] = field(default_factory=list)
    max_krw: Decimal = ZERO

    def blocked_by(self, rule: EntryRule) -> bool:
        return any(reason.startswith(f"{rule}:") for reason in self.reasons)


@dataclass(frozen=True, slots=True)
class ExitSignal:
    """Sell the whole position now. ``trigger_price``: the level that was crossed (stop, trailing
    stop or target; for a time-out the price itself); ``price``: the price the check saw (the current price)."""

    symbol: str
    reason: ExitReason
    trigger_price: Decimal
    price: Decimal
    position_id: int | None = None


@dataclass(frozen=True, slots=True)
class SizingDecision:
    """How much to buy (KRW order total) and why: the method used, its percent of equity, a note."""

    krw: Decimal
    method: PositionSizing
    fraction_pct: Decimal
    note: str = ""


@dataclass(frozen=True, slots=True)
class TradeStats:
    """Outcomes of closed positions, in KRW of realised P&L (net of fees). Break-even counts as a loss."""

    closed: int
    wins: int
    avg_win: Decimal
    avg_loss: Decimal  # positive number: the mean size of a losing position's loss

    @property
    def win_rate(self) -> Decimal:
        return Decimal(self.wins) / Decimal(self.closed) if self.closed else ZERO

    @property
    def payoff_ratio(self) -> Decimal | None:
        """Mean win over mean loss; ``None`` when there was no loss to divide by."""
        return self.avg_win / self.avg_loss if self.avg_loss > 0 else None

    @classmethod
    def from_pnls(cls, pnls: Iterable[Decimal]) -> TradeStats:
        values = list(pnls)
        wins = [p for p in values if p > 0]
        losses = [-p for p in values if p <= 0]
        return cls(
            closed=len(values),
            wins=len(wins),
            avg_win=sum(wins, ZERO) / len(wins) if wins else ZERO,
            avg_loss=sum(losses, ZERO) / len(losses) if losses else ZERO,
        )

    @classmethod
    def from_positions(cls, positions: Iterable[PositionRecord]) -> TradeStats:
        return cls.from_pnls(p.realized_pnl for p in positions if not p.is_open)
