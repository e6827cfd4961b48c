"""The data stage: candles, price, orderbook and the market's mood for one symbol, as the pipeline reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from src.api.interfaces import Orderbook
from src.data.collector import DataCollector, MarketSnapshot
from src.trading.pipeline.context import CycleContext, StageOutcome
from src.trading.pipeline.observer import PipelineObserver
from src.trading.pipeline.payloads import finite


@dataclass(slots=True)
class MarketView:
    """The parts of the collector's ``MarketSnapshot`` the pipeline reads."""

    candles: pd.DataFrame
    price: Decimal | None
    orderbook: Orderbook | None
    fear_greed: dict[str, Any] | None
    flash_crash: bool
    extra: dict[str, Any] = field(default_factory=dict)
    orderbook_payload: dict[str, Any] | None = None

    @classmethod
    def from_snapshot(cls, snapshot: MarketSnapshot, timeframe: str) -> MarketView:
        extra: dict[str, Any] = {}
        if snapshot.btc_correlation is not None:
            extra["btc_correlation"] = finite(snapshot.btc_correlation)
        if snapshot.errors:
            extra["errors"] = dict(snapshot.errors)
        return cls(
            candles=snapshot.candles[timeframe],
            price=snapshot.price,
            orderbook=snapshot.orderbook,
            fear_greed=snapshot.fear_greed_payload(),
            flash_crash=snapshot.flash_crash,
            extra=extra,
            orderbook_payload=snapshot.orderbook_payload(),
        )

    def last_candle(self) -> dict[str, Any] | None:
        if self.candles.empty:
            return None
        row = self.candles.iloc[-1]
        return {"timestamp": self.candles.index[-1].isoformat(), **{c: finite(row[c]) for c in self.candles.columns}}

    def orderbook_summary(self) -> dict[str, Any] | None:
        return self.orderbook_payload


async def data_stage(
    ctx: CycleContext, *, collector: DataCollector, timeframe: str, observer: PipelineObserver
) -> MarketView:
    with ctx.stage("data") as stage:
        snapshot = await collector.collect(ctx.symbol, [timeframe])
        market = MarketView.from_snapshot(snapshot, timeframe)
        stage.detail.update(
            candles=len(market.candles),
            last_candle=market.candles.index[-1].isoformat() if len(market.candles) else None,
            price=None if market.price is None else str(market.price),
            orderbook=market.orderbook is not None,
            fear_greed=market.fear_greed,
            flash_crash=market.flash_crash,
        )
        if market.candles.empty:
            stage.outcome = StageOutcome.NO_CANDLES
    observer.on_stage("data", ctx.stages[-1].duration_ms / 1000)
    return market
