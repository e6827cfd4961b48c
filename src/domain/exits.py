"""Why a position was closed, and the exit rules a strategy declares: one vocabulary for every world.

The backtester, replay, paper and live all name exits with ``ExitReason``; the rules that decide them
(``ExitPolicy``) belong to the strategy and are evaluated by one function, ``src.risk.exits.exit_code``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ExitReason(StrEnum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    TIME_OUT = "time_out"  # held for the strategy's max_hold_hours
    SIGNAL = "signal"  # the strategy (AI or rules) said sell
    SELL = "sell"  # a sell that closed the position without a recorded reason (e.g. by hand)
    MARKET_WARNING = "market_warning"  # Upbit flagged the market (warning or caution): MARKET_WARNING_ACTION=exit
    END = "end"  # backtest only: still open after the last bar, valued at the last close

    @classmethod
    def of_order_reason(cls, reason: str) -> ExitReason:
        """The exit reason recorded in a sell order's free-text reason: ``exit: stop_loss (...)`` ->
        ``STOP_LOSS``; any other sell reason is the strategy's ``SIGNAL``."""
        head, _, rest = reason.partition(":")
        return cls(rest.strip().split()[0]) if head == "exit" and rest.strip() else cls.SIGNAL


# What the trading path (live, paper, replay) stores on positions, orders and trades; the database allows these.
STORED_EXIT_REASONS: tuple[ExitReason, ...] = (
    ExitReason.STOP_LOSS,
    ExitReason.TAKE_PROFIT,
    ExitReason.TRAILING_STOP,
    ExitReason.TIME_OUT,
    ExitReason.SIGNAL,
    ExitReason.SELL,
    ExitReason.MARKET_WARNING,
)


@dataclass(frozen=True, slots=True)
class ExitPolicy:
    """A strategy's exit rules (0 = that rule is off). Levels are set from the entry's fill price.

    - stop: ``stop_loss_pct`` below the fill and/or ``stop_atr`` x ATR(14) of the decision bar below it
      (both set: the higher, i.e. tighter, stop);
    - target: ``take_profit_pct`` above and/or ``target_atr`` x ATR above (both set: the lower target);
    - trailing stop: ``trailing_stop_pct`` below the highest price seen at the exit checks since entry;
    - time-out: sold at the first exit check ``max_hold_hours`` or more after the entry;
    - signal exit: the strategy's own sell signal, acted on by the trading cycle.
    """

    stop_loss_pct: float = 0.0
    take_profit_pct: float = 0.0
    trailing_stop_pct: float = 0.0
    stop_atr: float = 0.0
    target_atr: float = 0.0
    max_hold_hours: float = 0.0

    @property
    def uses_atr(self) -> bool:
        return self.stop_atr > 0 or self.target_atr > 0

    def describe(self) -> str:
        parts = []
        if self.stop_loss_pct:
            parts.append(f"stop {self.stop_loss_pct:g}%")
        if self.stop_atr:
            parts.append(f"stop {self.stop_atr:g} ATR")
        if self.take_profit_pct:
            parts.append(f"target {self.take_profit_pct:g}%")
        if self.target_atr:
            parts.append(f"target {self.target_atr:g} ATR")
        if self.trailing_stop_pct:
            parts.append(f"trailing {self.trailing_stop_pct:g}%")
        if self.max_hold_hours:
            parts.append(f"time-out {self.max_hold_hours:g}h")
        return ", ".join(parts) or "signal exits only"
