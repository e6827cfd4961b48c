"""The fill model shared by the backtester and the replay exchange: the one place that says at what price a
market order of the bot fills when only candles are known.

At a moment T the reference price is the close of the newest complete candle (what the ticker shows in
replay). A market buy fills at ``reference x (1 + slippage)`` rounded UP onto the KRW tick grid in force at
T; a market sell at ``reference x (1 - slippage)`` rounded DOWN. ``slippage`` is ``BACKTEST_SLIPPAGE_PCT``
(percent). The replay exchange quotes exactly these prices as its best ask and best bid (``ReplayMarketSource``),
so the paper fill of an order that the first level covers is this price; the backtest engine computes the
same formula inside its compiled loop (``src.backtesting.engine``; a test holds the two equal). Fees are
``TRADING_FEE_RATE`` on the executed KRW, on top of a buy and out of a sell's proceeds.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from src.domain.market_rules import round_to_tick
from src.domain.orders import Side

HUNDRED = Decimal("100")


def fill_price(reference: Decimal, side: Side, slippage_pct: Decimal, at: datetime) -> Decimal:
    """The price a market order of ``side`` fills at, by the model above."""
    if side is Side.BUY:
        return round_to_tick(reference * (1 + slippage_pct / HUNDRED), at, up=True)
    return round_to_tick(reference * (1 - slippage_pct / HUNDRED), at)
