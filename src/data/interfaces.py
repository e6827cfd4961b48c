"""The read side of an exchange: what the paper exchange and the collector need for market data.

``IExchangeClient`` implementations (``UpbitClient``) satisfy it as they are; the replay source
implements only this part.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

import pandas as pd

from src.api.interfaces import Orderbook, Ticker


@runtime_checkable
class MarketDataSource(Protocol):
    async def get_tickers(self, symbols: list[str]) -> list[Ticker]: ...

    async def get_orderbooks(self, symbols: list[str]) -> list[Orderbook]: ...

    async def get_candles(
        self, symbol: str, timeframe: str, count: int = 200, to: datetime | None = None
    ) -> pd.DataFrame: ...
