"""Held positions exit by the trading strategy's rule in the position job: real pipeline objects (paper exchange
over a replay source, risk manager, position service, execution) with in-memory stores; the strategy is a fake
whose exit policy the test chooses. The exit reason reaches the position, the sell order and its trade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from src.api.paper_account import InMemoryPaperAccountStore
from src.api.paper_exchange import PaperExchange
from src.config.runtime_state import with_value
from src.config.settings import Settings, load_settings
from src.data.replay import ReplayMarketSource
from src.domain.exits import ExitPolicy, ExitReason
from src.domain.modes import TradingMode
from src.domain.money import quantize_money
from src.domain.orders import Side
from src.risk import InMemoryRiskStore
from src.risk.exits import levels_for
from src.strategy.contract import Strategy, StrategySignals
from src.trading.pipeline import TradingPipeline
from src.trading.pipeline.compose import PipelineAdapters, apply_settings, build_pipeline
from src.trading.pipeline.memory import InMemoryTradingRepository
from tests.support.candles import make_candles

SYMBOL = "KRW-BTC"
START = datetime(2024, 3, 1, tzinfo=UTC)
NOW = START + timedelta(hours=300)
D = Decimal


class Scripted(Strategy):
    """Buys on the last bar while ``buy`` is set, sells on it while ``sell`` is set; exits from its parameters."""

    name = "scripted"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.buy = True
        self.sell = False

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        signals = self.signals(df, np.zeros(len(df), dtype=np.bool_))
        signals.entry[-1] = self.buy
        signals.exit[-1] = self.sell
        return signals


class Rig:
    def __init__(self, settings: Settings, strategy: Scripted) -> None:
        candles = make_candles(START, 320, "1h", start_price=50_000_000, seed=11)
        self.source = ReplayMarketSource({SYMBOL: {"1h": candles}}, start=NOW)
        self.repo = InMemoryTradingRepository()
        self.settings = with_value(settings, "trading.symbols", [SYMBOL])
        adapters = PipelineAdapters(
            exchange=PaperExchange.from_settings(
                self.settings, self.source, InMemoryPaperAccountStore(), clock=self.source.now
            ),
            repository=self.repo,
            risk_store=InMemoryRiskStore(orders=self.repo),
            clock=self.source.now,
            strategy=strategy,
            quick_filter=None,
        )
        self.pipeline: TradingPipeline = build_pipeline(self.settings, adapters, mode=TradingMode.PAPER, instance="t")
        self.strategy = strategy

    def sells(self) -> tuple[list[Any], list[Any]]:
        orders = [o for o in self.repo.orders.values() if o.side is Side.SELL]
        trades = [t for t in self.repo.trades.values() if t.side is Side.SELL]
        return orders, trades

    async def closed(self) -> list[Any]:
        return await self.pipeline.positions.store.list_closed_positions(TradingMode.PAPER)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("OPENAI_API_KEY", "TRADING_MODE", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIN_TRADE_INTERVAL_HOURS", "0")
    monkeypatch.setenv("AI_ENABLED", "false")
    return load_settings(env_file=None)


async def test_a_position_held_max_hold_hours_is_sold_by_the_time_out_at_the_position_job(settings: Settings) -> None:
    # Given a strategy that holds at most 2 hours and no level that the market reaches, and a position bought at NOW
    rig = Rig(settings, Scripted(max_hold_hours=2))
    await rig.pipeline.run_cycle()
    position = await rig.pipeline.positions.get(SYMBOL)
    assert position is not None
    assert position.entry_at == NOW
    # When the position job runs 1 h 45 min later, Then nothing is due
    rig.source.advance_to(NOW + timedelta(hours=1, minutes=45))
    assert await rig.pipeline.check_positions() == []
    # When it runs at 2 h, Then the whole position is sold through the execution path by the time-out
    rig.source.advance_to(NOW + timedelta(hours=2))
    [report] = await rig.pipeline.check_positions()
    assert report.result is not None
    assert report.result.filled
    assert report.reason.startswith("exit: time_out")
    assert await rig.pipeline.positions.get(SYMBOL) is None
    [closed] = await rig.closed()
    assert (closed.exit_reason, closed.closed_at) == (ExitReason.TIME_OUT, NOW + timedelta(hours=2))
    orders, trades = rig.sells()
    assert [o.exit_reason for o in orders] == ["time_out"]
    assert trades
    assert {t.exit_reason for t in trades} == {"time_out"}


async def test_levels_of_a_bought_position_are_the_backtests_levels_from_the_decision_bars_atr(
    settings: Settings,
) -> None:
    # Given a strategy with a 3% stop and 2 ATR stop (the tighter wins), a 4 ATR target and a 5% trailing stop
    policy = ExitPolicy(stop_loss_pct=3, stop_atr=2, target_atr=4, trailing_stop_pct=5)
    rig = Rig(settings, Scripted(stop_loss_pct=3, stop_atr=2, target_atr=4, trailing_stop_pct=5))
    # When the trading cycle buys
    await rig.pipeline.run_cycle()
    # Then the position's stop and target are levels_for(fill, the decision bar's ATR, policy), trailing 5%
    position = await rig.pipeline.positions.get(SYMBOL)
    atr = D(str(rig.repo.decisions[0].market_data["indicators"]["atr_14"]))
    assert position.entry_atr == quantize_money(atr)
    stop, target = levels_for(position.avg_entry_price, atr, policy)
    assert (position.stop_price, position.take_profit_price) == (stop, target)
    assert position.trailing_stop_pct == D("5")
    assert position.stop_price >= position.avg_entry_price * D("0.97")  # the tighter of 3% and 2 ATR


async def test_a_signal_sell_names_signal_on_the_position_the_order_and_the_trade(settings: Settings) -> None:
    # Given a held position
    rig = Rig(settings, Scripted())
    await rig.pipeline.run_cycle()
    # When the strategy's exit signal comes at the next candle
    rig.strategy.buy, rig.strategy.sell = False, True
    rig.source.advance_to(NOW + timedelta(hours=1))
    [report] = await rig.pipeline.run_cycle()
    # Then it is sold, and the exit reason is the strategy's signal everywhere
    assert report.final_decision == "sell"
    [closed] = await rig.closed()
    assert closed.exit_reason == ExitReason.SIGNAL
    orders, trades = rig.sells()
    assert [o.exit_reason for o in orders] == ["signal"]
    assert trades
    assert {t.exit_reason for t in trades} == {"signal"}


async def test_a_new_strategy_at_run_time_moves_the_held_levels_and_the_time_out(settings: Settings) -> None:
    # Given a position held under rule_breakout's exits (2 ATR stop, 3 ATR target)
    rig = Rig(settings, Scripted(stop_atr=2, target_atr=3))
    await rig.pipeline.run_cycle()
    before = await rig.pipeline.positions.get(SYMBOL)
    # When the run-time settings switch to volatility_breakout with a 20% stop and a 1 hour time-out
    wanted = with_value(rig.settings, "strategy.name", "volatility_breakout")
    wanted = with_value(wanted, "strategy.params", {"stop_loss_pct": 20, "max_hold_hours": 1})
    await apply_settings(rig.pipeline, rig.settings, wanted)
    # Then the held position's stop is 20% under its entry and no target is left
    after = await rig.pipeline.positions.get(SYMBOL)
    assert before.take_profit_price is not None
    assert (after.stop_price, after.take_profit_price) == (after.avg_entry_price * D("0.8"), None)
    assert rig.pipeline.risk.policy == ExitPolicy(stop_loss_pct=20, max_hold_hours=1)
    # And the position job an hour after the entry sells it by the time-out
    rig.source.advance_to(NOW + timedelta(hours=1))
    [report] = await rig.pipeline.check_positions()
    assert report.reason.startswith("exit: time_out")
    [closed] = await rig.closed()
    assert closed.exit_reason == ExitReason.TIME_OUT


async def test_the_exits_of_the_settings_strategy_apply_from_the_start(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given TRADING_STRATEGY=volatility_breakout with a stop and a time-out in STRATEGY_PARAMS
    monkeypatch.setenv("TRADING_STRATEGY", "volatility_breakout")
    monkeypatch.setenv("STRATEGY_PARAMS", '{"k": 0.6, "stop_loss_pct": 4, "max_hold_hours": 24}')
    configured = load_settings(env_file=None)
    # When the graph is built without a strategy of the caller's
    source = ReplayMarketSource({SYMBOL: {"1h": make_candles(START, 320, "1h", seed=3)}}, start=NOW)
    repo = InMemoryTradingRepository()
    adapters = PipelineAdapters(
        exchange=PaperExchange.from_settings(configured, source, InMemoryPaperAccountStore(), clock=source.now),
        repository=repo,
        risk_store=InMemoryRiskStore(orders=repo),
        clock=source.now,
        quick_filter=None,
    )
    pipeline = build_pipeline(configured, adapters, mode=TradingMode.PAPER, instance="t")
    # Then the position job and the positions use that strategy's exits
    expected = ExitPolicy(stop_loss_pct=4, max_hold_hours=24)
    assert pipeline.positions.policy == expected
    assert pipeline.risk.policy == expected
