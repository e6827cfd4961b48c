"""Why a position was closed: one enum for the risk manager, the pipeline and the backtester."""

from __future__ import annotations

from enum import StrEnum


class ExitReason(StrEnum):
    # Written on closed positions by the live/paper/replay path.
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    SIGNAL = "signal"  # the strategy (AI or rules) said sell
    SELL = "sell"  # a sell that closed the position without a recorded reason
    # The backtester's trade list names its exits with these shorter labels (kept so reports do not change).
    STOP = "stop"
    TARGET = "target"
    END = "end"  # still open at the last bar

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
    ExitReason.SIGNAL,
    ExitReason.SELL,
)
