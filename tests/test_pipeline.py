"""The trading pipeline at unit level: real domain objects (paper exchange over a replay source, risk
manager, position service, validator, liquidity, the strategy the settings name, the quick filter) with in-memory
stores and fakes of our own classes (strategy, AI adviser, quick filter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from src.ai.models import AIDecision, MarketContext
from src.api.paper_account import InMemoryPaperAccountStore
from src.api.paper_exchange import PaperExchange
from src.backtesting.quick_filter import QuickBacktestFilter, QuickFilterThresholds
from src.config.env import PROJECT_ROOT
from src.config.runtime_state import with_value
from src.config.settings import Settings, load_settings
from src.config.trading_groups import RiskConfig, StrategyConfig
from src.data.replay import ReplayMarketSource
from src.domain.decisions import Decision, DecisionSource
from src.domain.events import EventKind, NullNotifier
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, Side
from src.exceptions import ConfigurationError
from src.position.service import PositionService
from src.risk import InMemoryRiskStore, RiskManager
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from src.strategy.contract import Strategy, StrategySignals
from src.trading.pipeline import TradingPipeline
from src.trading.pipeline.compose import FROM_SETTINGS, PipelineAdapters, apply_settings, build_pipeline
from src.trading.pipeline.memory import InMemoryTradingRepository
from src.trading.pipeline.observer import NullPipelineObserver
from tests.support.candles import make_candles
from tests.support.exchange_faults import AnswerFaults
from tests.support.strategies import AlwaysBuy

SYMBOL = "KRW-BTC"
START = datetime(2024, 3, 1, tzinfo=UTC)


class SignalStrategy(Strategy):
    """Buys (or sells) on the last bar when told to."""

    name = "fake_signal"

    def __init__(self, buy: bool = False, sell: bool = False) -> None:
        super().__init__()  # the declared defaults: no exit rule but the signal
        self.buy = buy
        self.sell = sell

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        signals = StrategySignals.empty(df.index)
        signals.entry = np.zeros(len(df), dtype=np.bool_)
        signals.entry[-1] = self.buy
        signals.exit[-1] = self.sell
        return signals


class ScriptedAI:
    """An adviser that answers what the test says and counts the questions."""

    def __init__(self, decision: Decision = Decision.HOLD, confidence: str = "80", error: str | None = None) -> None:
        self.answer = (decision, Decimal(confidence), error)
        self.asked: list[MarketContext] = []
        self.available = True
        self.off_reason: str | None = None

    async def check_budget(self, *, reread: bool = False) -> str | None:
        return None

    async def decide(self, context: MarketContext) -> AIDecision:
        self.asked.append(context)
        decision, confidence, error = self.answer
        return AIDecision(
            decision=decision,
            confidence=confidence,
            reason=error or f"scripted {decision.value}",
            source=DecisionSource.FALLBACK if error else DecisionSource.AI,
            model="fake-model",
            prompt_hash="h" * 64,
            prompt="{}",
            raw_response="{}",
            prompt_tokens=100,
            completion_tokens=10,
            error=error,
        )


CANDIDATE = SignalStrategy(buy=True)  # the ai strategy's candidate, with an entry on the last bar


def ai_settings(settings: Settings) -> Settings:
    """``TRADING_STRATEGY=ai``: the adviser confirms the candidate strategy's entries."""
    return with_strategy(settings, "ai")


@dataclass
class FailingFilter:
    async def aevaluate(self, symbol: str, df: pd.DataFrame) -> Any:
        return _FilterResult()


class _FilterResult:
    passed = False

    def to_dict(self) -> dict[str, Any]:
        return {"passed": False, "stage": "rule", "failed_thresholds": ["min_sharpe"], "metrics": {}}


@dataclass
class Rig:
    settings: Settings  # what the pipeline was built with
    pipeline: TradingPipeline
    repo: InMemoryTradingRepository
    source: ReplayMarketSource
    store: InMemoryPaperAccountStore
    risk: RiskManager
    positions: PositionService
    notifier: NullNotifier


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("OPENAI_API_KEY", "TRADING_MODE", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIN_TRADE_INTERVAL_HOURS", "0")
    return load_settings(env_file=None)


def with_strategy(
    settings: Settings, name: str, params: dict[str, Any] | None = None, path: Path | None = None
) -> Settings:
    """``settings`` trading ``TRADING_STRATEGY=name`` (``STRATEGY_PARAMS``, ``STRATEGY_PATH``)."""
    fields: dict[str, Any] = {"TRADING_STRATEGY": name, "STRATEGY_PARAMS": json.dumps(params or {})}
    if path is not None:
        fields["STRATEGY_PATH"] = str(path)
    return settings.model_copy(update={"strategy": StrategyConfig(_env_file=None, **fields)})


def build(
    settings: Settings,
    *,
    strategy: Strategy | None = None,
    ai: ScriptedAI | None = None,
    risk_config: RiskConfig | None = None,
    quick_filter: Any = None,
    with_usdt: bool = False,
) -> Rig:
    """The pipeline from ``settings``; ``strategy`` None: the strategy the settings name; ``with_usdt``: the market
    data has Upbit's KRW-USDT too (the dollar price)."""
    candles = {SYMBOL: {"1h": make_candles(START, 300, "1h", start_price=50_000_000, seed=11)}}
    if with_usdt:
        candles["KRW-USDT"] = {"1h": make_candles(START, 300, "1h", start_price=1_400, seed=5)}
    source = ReplayMarketSource(candles, start=START + timedelta(hours=300))
    store = InMemoryPaperAccountStore()
    repo = InMemoryTradingRepository()
    notifier = NullNotifier()
    settings = with_value(settings, "trading.symbols", [SYMBOL])
    if risk_config is not None:
        settings = settings.model_copy(update={"risk": risk_config})
    adapters = PipelineAdapters(
        exchange=PaperExchange.from_settings(settings, source, store, clock=source.now),
        repository=repo,
        risk_store=InMemoryRiskStore(orders=repo),
        clock=source.now,
        notifier=notifier,
        adviser=ai,
        strategy=strategy,
        quick_filter=quick_filter,
    )
    pipeline = build_pipeline(settings, adapters, mode=TradingMode.PAPER, instance="test")
    return Rig(settings, pipeline, repo, source, store, pipeline.risk, pipeline.positions, notifier)


async def test_rule_buy_fills_and_records_every_stage(settings: Settings) -> None:
    """Given no AI key and a strategy entry signal, when a cycle runs, then one market buy fills on the
    paper exchange and the order, its trade, the decision (source rules) and the cycle's stages are recorded."""
    rig = build(settings, strategy=SignalStrategy(buy=True))

    [report] = await rig.pipeline.run_cycle()

    assert report.final_decision == "buy"
    assert report.source == "rules"
    assert [r.status for r in report.orders] == [OrderStatus.FILLED]
    [order] = rig.repo.orders.values()
    assert order.status is OrderStatus.FILLED
    assert order.exchange_uuid
    assert order.identifier.startswith("test-")
    [trade] = rig.repo.trades.values()
    assert trade.order_identifier == order.identifier
    assert trade.amount > 0
    assert trade.fee > 0
    [decision] = rig.repo.decisions
    assert decision.source == "rules"
    assert decision.final_decision == "buy"
    assert decision.error is None  # the strategy does not use the adviser
    assert decision.reason.startswith("fake_signal: entry signal")
    assert decision.market_data["indicators"]["rsi_14"] is not None
    [cycle] = rig.repo.cycles
    assert [s.stage for s in cycle.stages] == ["risk", "data", "analysis", "execution"]
    assert all(s.duration_ms >= 0 for s in cycle.stages)
    assert cycle.status == "ok"
    assert (await rig.positions.get(SYMBOL)) is not None
    assert any(e.kind is EventKind.TRADE_EXECUTED for e in rig.notifier.events)
    [announced] = [e for e in rig.notifier.events if e.kind is EventKind.AI_DECISION]
    assert announced.fields["decision"] == "buy"
    assert announced.fields["source"] == "rules"
    [snapshot] = rig.repo.snapshots  # every cycle ends with a portfolio snapshot
    assert snapshot.positions[SYMBOL]["amount"] == str(trade.amount)


async def test_risk_veto_stops_the_buy(settings: Settings) -> None:
    """Given safe mode (a risk rule), when the strategy says buy, then no order is written or sent."""
    rig = build(settings, strategy=SignalStrategy(buy=True))
    await rig.risk.enter_safe_mode("test", "manual check")

    [report] = await rig.pipeline.run_cycle()

    assert report.outcome == "buy_vetoed"
    assert report.orders == []
    assert rig.repo.orders == {}
    assert rig.store.orders == {}
    assert any("safe_mode" in reason for reason in rig.repo.decisions[0].market_data["risk"]["reasons"])


@pytest.mark.parametrize(
    ("env", "reason_part"),
    [({"MAX_TRADES_PER_DAY": "2"}, "max_trades_per_day"), ({"MIN_TRADE_INTERVAL_HOURS": "24"}, "min_trade_interval")],
)
async def test_trade_spacing_rules_veto_the_next_buy(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], reason_part: str
) -> None:
    """Given a buy and a sell already executed today, when the strategy buys again, the spacing rule refuses it."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rig = build(settings, strategy=SignalStrategy(buy=True), risk_config=RiskConfig(_env_file=None))
    await rig.pipeline.run_cycle()
    held = await rig.positions.get(SYMBOL)
    await rig.pipeline.trading.market_sell(SYMBOL, held.amount, reason="test", cycle_id=None)
    orders_before = len(rig.repo.orders)

    [report] = await rig.pipeline.run_cycle()

    assert report.outcome == "buy_vetoed"
    assert len(rig.repo.orders) == orders_before
    assert any(reason_part in r for r in rig.repo.decisions[-1].market_data["risk"]["reasons"])


async def test_max_positions_vetoes_a_buy_in_a_new_symbol(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_POSITIONS", "1")
    rig = build(settings, strategy=SignalStrategy(buy=True), risk_config=RiskConfig(_env_file=None))
    await rig.positions.on_fill(
        "KRW-ETH", Side.BUY, Decimal("3000000"), Decimal("0.1"), Decimal("150"), START, order_identifier="eth-buy"
    )

    [report] = await rig.pipeline.run_cycle()

    assert report.outcome == "buy_vetoed"
    assert rig.repo.orders == {}
    assert any("max_positions" in r for r in rig.repo.decisions[-1].market_data["risk"]["reasons"])


async def test_paused_bot_places_no_new_buy(settings: Settings) -> None:
    """Given the bot is paused (allow_buys=False), when the strategy says buy, then nothing is ordered."""
    rig = build(settings, strategy=SignalStrategy(buy=True))

    [report] = await rig.pipeline.run_cycle(allow_buys=False)

    assert report.outcome == "buy_vetoed"
    assert rig.repo.orders == {}


async def test_dry_run_decides_and_records_but_sends_nothing(settings: Settings) -> None:
    rig = build(settings, strategy=SignalStrategy(buy=True))

    [report] = await rig.pipeline.run_cycle(dry_run=True)

    assert report.outcome == "dry_run_buy"
    assert rig.repo.orders == {}
    assert rig.store.orders == {}
    assert rig.repo.decisions[0].final_decision == "buy"


async def test_validator_turns_an_ai_buy_into_a_hold_and_records_why(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the ai strategy, a candidate entry the adviser confirms and a validator that refuses any RSI above 1,
    then the final decision is hold, the override and its reasons are recorded, and no order is sent."""
    monkeypatch.setenv("VALIDATOR_MAX_RSI", "1")
    ai = ScriptedAI(Decision.BUY, "90")
    rig = build(ai_settings(settings), strategy=CANDIDATE, ai=ai, risk_config=RiskConfig(_env_file=None))

    [report] = await rig.pipeline.run_cycle()

    assert report.decision == "buy"
    assert report.final_decision == "hold"
    assert report.orders == []
    [decision] = rig.repo.decisions
    assert decision.source == "ai"
    assert decision.overridden
    assert any("rsi" in reason for reason in decision.override_reasons or [])
    assert decision.prompt_tokens == 100
    assert decision.model == "fake-model"
    assert any(e.kind is EventKind.VALIDATOR_OVERRIDE for e in rig.notifier.events)


async def test_ai_buy_that_passes_the_validator_is_executed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "VALIDATOR_MAX_RSI": "100",
        "VALIDATOR_MAX_ATR_PCT": "100",
        "VALIDATOR_FAKEOUT_ADX": "0",
    }.items():
        monkeypatch.setenv(name, value)
    rig = build(
        ai_settings(settings),
        strategy=CANDIDATE,
        ai=ScriptedAI(Decision.BUY, "90"),
        risk_config=RiskConfig(_env_file=None),
    )

    [report] = await rig.pipeline.run_cycle()

    assert report.final_decision == "buy"
    assert report.source == "ai"
    assert [o.status for o in report.orders] == [OrderStatus.FILLED]


async def test_ai_failure_becomes_a_hold_with_the_reason(settings: Settings) -> None:
    """Given the adviser failed (a fallback hold with an error), then nothing is bought and the error is stored."""
    ai = ScriptedAI(Decision.HOLD, "0", error="timeout: no answer within 30s")
    rig = build(ai_settings(settings), strategy=CANDIDATE, ai=ai)

    [report] = await rig.pipeline.run_cycle()

    assert report.final_decision == "hold"
    assert report.source == "fallback"
    assert report.orders == []
    assert rig.repo.decisions[0].error == "timeout: no answer within 30s"


async def test_failed_quick_filter_means_the_adviser_is_not_asked(settings: Settings) -> None:
    """Given the ai strategy on a candidate entry bar and a quick filter whose rule stage fails, then the adviser
    is not asked and the proposed buy is a hold with source filter and the stage and thresholds recorded."""
    ai = ScriptedAI(Decision.BUY, "95")
    rig = build(ai_settings(settings), strategy=CANDIDATE, ai=ai, quick_filter=FailingFilter())

    [report] = await rig.pipeline.run_cycle()

    assert ai.asked == []
    assert (report.decision, report.final_decision, report.source) == ("buy", "hold", "filter")
    quick = rig.repo.decisions[0].market_data["quick_filter"]
    assert quick["failed_thresholds"] == ["min_sharpe"]
    assert quick["blocked_by"] == "rule"


async def test_strategy_exit_sells_the_held_position_with_realised_pnl(settings: Settings) -> None:
    """Given a held position, when the strategy signals an exit, then the whole balance is sold and the
    sell's trade carries the realised P&L from the position service."""
    rig = build(settings, strategy=SignalStrategy(buy=True))
    await rig.pipeline.run_cycle()
    rig.pipeline.analyzer.strategy = SignalStrategy(sell=True)

    [report] = await rig.pipeline.run_cycle()

    assert report.final_decision == "sell"
    assert [o.status for o in report.orders] == [OrderStatus.FILLED]
    sells = [t for t in rig.repo.trades.values() if t.side.value == "sell"]
    assert sells
    assert all(t.realized_pnl is not None for t in sells)
    assert await rig.positions.get(SYMBOL) is None


async def test_stop_loss_exit_goes_through_the_same_execution_path(settings: Settings) -> None:
    """Given a held position whose stop sits above the market, when positions are checked, then it is sold
    (order + trade written) and the position closes with reason stop_loss."""
    rig = build(settings, strategy=SignalStrategy(buy=True))
    await rig.pipeline.run_cycle()
    position = await rig.positions.get(SYMBOL)
    position.stop_price = position.avg_entry_price * 2
    await rig.positions.store.update_position(position)

    [exit_report] = await rig.pipeline.check_positions()

    assert exit_report.result is not None
    assert exit_report.result.filled
    assert await rig.positions.get(SYMBOL) is None
    [closed] = await rig.positions.store.list_closed_positions(TradingMode.PAPER)
    assert closed.exit_reason == "stop_loss"


async def test_snapshot_records_equity_and_positions(settings: Settings) -> None:
    rig = build(settings, strategy=SignalStrategy(buy=True))
    await rig.pipeline.run_cycle()

    record = await rig.pipeline.snapshot()
    assert record is not None

    assert record.positions[SYMBOL]["amount"]
    assert record.total_value_krw > 0
    assert record.profit_rate is not None
    assert record.created_at == rig.source.now()
    assert record.total_value_usd is None  # no KRW-USDT price in this market data: left empty, never guessed


async def test_snapshot_values_the_account_in_usd_at_upbits_krw_usdt_price(settings: Settings) -> None:
    # Given market data with Upbit's KRW-USDT price
    rig = build(settings, strategy=SignalStrategy(buy=True), with_usdt=True)
    await rig.pipeline.run_cycle()
    [usdt] = await rig.source.get_tickers(["KRW-USDT"])
    # When the account is valued
    record = await rig.pipeline.snapshot()
    # Then the USD value is the KRW value at that price, to the cent
    assert record is not None
    assert record.total_value_usd is not None
    assert abs(record.total_value_usd - record.total_value_krw / usdt.trade_price) <= Decimal("0.01")


async def test_a_failing_stage_is_recorded_and_logged_without_stopping_other_symbols(settings: Settings) -> None:
    """Given a symbol without data, its cycle fails with the error recorded; the next symbol still runs."""
    rig = build(settings)

    reports = await rig.pipeline.run_cycle(["KRW-XRP", SYMBOL])

    assert reports[0].error
    assert "KRW-XRP" in reports[0].error
    assert reports[1].error is None
    failed = next(c for c in rig.repo.cycles if c.symbol == "KRW-XRP")
    assert failed.status == "error"
    assert failed.stages[-1].outcome == "error"
    assert any(level == "error" for level, *_ in rig.repo.logs)


RELAXED = {"VALIDATOR_MAX_RSI": "100", "VALIDATOR_MAX_ATR_PCT": "100", "VALIDATOR_FAKEOUT_ADX": "0"}


async def test_daily_loss_circuit_breaker_enters_safe_mode_and_vetoes_buys(settings: Settings) -> None:
    """Given equity anchored at 20M today, when a cycle sees 10M (-50%), then safe mode is entered (and
    announced) before the symbol is judged, and the buy is vetoed."""
    rig = build(settings, strategy=SignalStrategy(buy=True))
    await rig.risk.on_equity(Decimal("20000000"), rig.source.now())

    [report] = await rig.pipeline.run_cycle()

    assert report.outcome == "buy_vetoed"
    assert rig.repo.orders == {}
    assert (await rig.risk.risk_state()).safe_mode
    assert any(e.kind is EventKind.SAFE_MODE_ENTERED for e in rig.notifier.events)


class RecordingObserver(NullPipelineObserver):
    """The metrics hooks of the pipeline, remembered: what the scheduler's counters would count."""

    def __init__(self) -> None:
        self.decisions: list[tuple[str, str]] = []
        self.overrides: list[tuple[str, str]] = []

    def on_decision(self, source: str, decision: str, confidence: Decimal | None) -> None:
        self.decisions.append((source, decision))

    def on_override(self, proposed: str, by: str) -> None:
        self.overrides.append((proposed, by))


async def test_a_risk_vetoed_buy_is_recorded_announced_and_counted_as_a_hold(settings: Settings) -> None:
    """Given safe mode, when the strategy proposes a buy, then the final decision is hold everywhere: in the
    report, in ai_decisions (which keeps the proposed buy and the veto reasons), in the announcement (no
    "BUY decided", an override event instead) and in the counted decision; the veto is counted by risk."""
    rig = build(settings, strategy=SignalStrategy(buy=True))
    observer = RecordingObserver()
    rig.pipeline.observer = observer
    await rig.risk.enter_safe_mode("test", "manual check")

    [report] = await rig.pipeline.run_cycle()

    assert (report.decision, report.final_decision, report.outcome) == ("buy", "hold", "buy_vetoed")
    assert rig.repo.orders == {}
    [decision] = rig.repo.decisions
    assert (decision.decision, decision.final_decision, decision.overridden) == ("buy", "hold", True)
    assert decision.override_reasons
    assert all(reason.startswith("risk: ") for reason in decision.override_reasons)
    assert any("safe_mode" in reason for reason in decision.override_reasons)
    assert [e for e in rig.notifier.events if e.kind is EventKind.AI_DECISION] == []
    [vetoed] = [e for e in rig.notifier.events if e.kind is EventKind.VALIDATOR_OVERRIDE]
    assert (vetoed.fields["decision"], vetoed.fields["final_decision"]) == ("buy", "hold")
    assert vetoed.fields["reasons"] == decision.override_reasons
    assert observer.decisions == [("rules", "hold")]
    assert observer.overrides == [("buy", "risk")]


async def test_an_order_whose_answer_was_lost_blocks_the_next_buy_until_settled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given 4-hour spacing, a buy whose answer was lost (the exchange filled it) and reconciliation that keeps
    failing, when the next cycle runs, then the coin the exchange holds is not bought again: no second order is
    written or sent."""
    for name, value in {**RELAXED, "MIN_TRADE_INTERVAL_HOURS": "4"}.items():
        monkeypatch.setenv(name, value)
    rig = build(settings, strategy=SignalStrategy(buy=True), risk_config=RiskConfig(_env_file=None))
    faults = AnswerFaults(rig.pipeline.trading.exchange)
    rig.pipeline.trading.exchange = faults
    faults.lose_answers = True
    faults.queries_down = True
    [first] = await rig.pipeline.run_cycle()
    assert [o.status for o in first.orders] == [OrderStatus.PENDING]
    assert len(rig.store.orders) == 1  # the exchange did fill it

    [second] = await rig.pipeline.run_cycle()

    assert second.final_decision == "hold"
    assert len(rig.repo.orders) == 1
    assert len(rig.store.orders) == 1
    reasons = rig.repo.decisions[-1].market_data["risk"]["reasons"]
    assert any(r.startswith("min_trade_interval: last trade (or unsettled order)") for r in reasons)


async def test_a_held_coin_is_not_bought_again(settings: Settings) -> None:
    """Given a filled buy and a strategy whose entry is still on, when the next cycle runs, then the contract holds
    (buy only when flat): a hold with the strategy's reason, no second order, and the risk stage says why."""
    rig = build(settings, strategy=SignalStrategy(buy=True), risk_config=RiskConfig(_env_file=None))
    [first] = await rig.pipeline.run_cycle()
    assert [o.status for o in first.orders] == [OrderStatus.FILLED]

    [second] = await rig.pipeline.run_cycle()

    assert (second.decision, second.final_decision, second.outcome) == ("hold", "hold", "hold")
    assert len(rig.repo.orders) == 1
    assert rig.repo.decisions[-1].reason.startswith("fake_signal: holding the position")
    reasons = rig.repo.decisions[-1].market_data["risk"]["reasons"]
    assert f"already_held: {SYMBOL} is already held (open position); the strategy buys only when flat" in reasons


# --- the strategy the settings name ---------------------------------------------------------------------------


async def test_volatility_breakout_from_the_settings_trades_by_its_contract(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given TRADING_STRATEGY=volatility_breakout with STRATEGY_PARAMS k=0.1, when cycles run hour after hour,
    then every decision is the strategy's conclusion on the last complete bar of the candles the bot read: a buy
    on an entry when flat, a sell on its exit signal when held (here: the next bar), else hold."""
    monkeypatch.setenv("MAX_TRADES_PER_DAY", "100")
    rig = build(with_strategy(settings, "volatility_breakout", {"k": 0.1}), risk_config=RiskConfig(_env_file=None))
    strategy = rig.pipeline.analyzer.strategy
    assert isinstance(strategy, VolatilityBreakoutStrategy)
    assert strategy.k == 0.1
    reference = VolatilityBreakoutStrategy(k=0.1)
    decided = []

    for _ in range(8):
        held = await rig.positions.get(SYMBOL) is not None
        last = reference.generate_signals(rig.source.visible(SYMBOL, "1h")).latest()
        expected = "sell" if held and last["sell"] else "buy" if not held and last["buy"] else "hold"
        [report] = await rig.pipeline.run_cycle()
        assert (report.decision, report.final_decision, report.source) == (expected, expected, "rules")
        assert rig.repo.decisions[-1].market_data["strategy"] == last
        decided.append(expected)
        rig.source.advance_to(rig.source.now() + timedelta(hours=1))

    assert "buy" in decided
    assert "sell" in decided


USER_STRATEGY = """
import numpy as np

from src.strategy import Strategy
from src.strategy.params import EXIT_PARAMS, Param, ParameterSpace


class AboveFloor(Strategy):
    name = "above_floor"
    space = ParameterSpace((Param("floor", float, 1e12, 0.0, 1e13, doc="buy above this close"),)) + EXIT_PARAMS

    def generate_signals(self, df):
        close = df["close"].to_numpy()
        return self.signals(df, close > float(self.params["floor"]), close < 0)
"""


async def test_a_user_strategy_file_in_strategy_path_trades(settings: Settings, tmp_path: Path) -> None:
    """Given a strategy file dropped into STRATEGY_PATH and TRADING_STRATEGY naming it with its parameters (a floor
    of 1 KRW; its default floor would never buy), when a cycle runs, then that strategy with those parameters
    decides: a buy, filled."""
    (tmp_path / "above_floor.py").write_text(USER_STRATEGY)

    rig = build(with_strategy(settings, "above_floor", {"floor": 1}, tmp_path))
    [report] = await rig.pipeline.run_cycle()

    assert rig.pipeline.analyzer.strategy.name == "above_floor"
    assert rig.pipeline.analyzer.strategy.params["floor"] == 1.0
    assert (report.decision, report.final_decision) == ("buy", "buy")
    assert [o.status for o in report.orders] == [OrderStatus.FILLED]
    assert rig.repo.decisions[-1].reason.startswith("above_floor: entry signal")


@pytest.mark.parametrize(
    ("env", "files", "message"),
    [
        ({"TRADING_STRATEGY": "no_such_strategy"}, {}, "unknown strategy 'no_such_strategy'; available: "),
        (
            {"TRADING_STRATEGY": "volatility_breakout", "STRATEGY_PARAMS": '{"k": 99}'},
            {},
            "volatility_breakout",
        ),
        ({"TRADING_STRATEGY": "rule_breakout"}, {"broken.py": "import numpy\n\ndef oops(:\n"}, "broken.py:3"),
    ],
    ids=["unknown", "bad_params", "broken_user_file"],
)
def test_a_strategy_that_cannot_be_built_stops_the_replay_at_start_up_with_one_line(
    tmp_path: Path, env: dict[str, str], files: dict[str, str], message: str
) -> None:
    """Given a strategy that cannot be built (unknown name, parameters outside its space, a broken user file),
    when ``scheduler_main.py --replay`` starts, then it exits non-zero with one line naming the problem (and the
    file and line), no traceback, and nothing is replayed."""
    folder = tmp_path / "strategies"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "UPBIT_", "TRADING_", "STRATEGY_"))}
    run_env = {**base, "STRATEGY_PATH": str(folder), "PYTHONPATH": str(PROJECT_ROOT), **env}

    done = subprocess.run(
        [sys.executable, "scheduler_main.py", "--replay", "--database-url", f"sqlite+aiosqlite:///{tmp_path}/r.db"],
        cwd=PROJECT_ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "r.db").exists()


# --- the quick filter gates every buy -------------------------------------------------------------------------


async def test_the_quick_filter_rule_stage_blocks_a_buy_without_ai(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given no AI (a rule strategy trades), the settings' quick filter (strict tier) and a strategy that buys on
    every bar and never exits (one open trade in the window: too few), when the strategy proposes a buy, then the
    filter's rule stage runs on that very strategy and blocks it: a hold with source filter, the blocking stage
    and failed thresholds in ai_decisions, the veto counted as quick_filter, no order."""
    monkeypatch.setenv("QUICK_FILTER_TIER", "strict")
    strategy = AlwaysBuy()
    rig = build(load_settings(env_file=None), strategy=strategy, quick_filter=FROM_SETTINGS)
    observer = RecordingObserver()
    rig.pipeline.observer = observer
    assert rig.pipeline.analyzer.quick_filter.rule_strategy is strategy
    assert rig.pipeline.analyzer.quick_filter.ai_strategy_factory is None

    [report] = await rig.pipeline.run_cycle()

    assert (report.decision, report.final_decision, report.source) == ("buy", "hold", "filter")
    assert rig.repo.orders == {}
    [decision] = rig.repo.decisions
    quick = decision.market_data["quick_filter"]
    assert (quick["passed"], quick["stage"], quick["blocked_by"]) == (False, "rule", "rule")
    assert "min_trades" in quick["failed_thresholds"]
    assert decision.override_reasons == [f"quick filter: rule stage failed ({', '.join(quick['failed_thresholds'])})"]
    assert observer.overrides == [("buy", "quick_filter")]
    assert observer.decisions == [("filter", "hold")]


async def test_a_buy_that_passes_the_quick_filter_rule_stage_is_executed_and_the_pass_recorded(
    settings: Settings,
) -> None:
    """Given a quick filter on the trading strategy whose thresholds all pass, when the strategy proposes a buy,
    then the rule stage's pass is recorded with the decision and the buy fills."""
    strategy = SignalStrategy(buy=True)
    lenient = QuickFilterThresholds(*([None] * 10))
    rig = build(
        settings, strategy=strategy, quick_filter=QuickBacktestFilter(thresholds=lenient, rule_strategy=strategy)
    )

    [report] = await rig.pipeline.run_cycle()

    assert (report.final_decision, report.source) == ("buy", "rules")
    assert [o.status for o in report.orders] == [OrderStatus.FILLED]
    quick = rig.repo.decisions[0].market_data["quick_filter"]
    assert (quick["passed"], quick["stage"], quick["blocked_by"]) == (True, "rule", None)


async def test_no_proposed_buy_means_no_quick_filter_run(settings: Settings) -> None:
    """Given a strategy without an entry, when a cycle runs, then the filter is not consulted (it gates buys)."""
    rig = build(settings, strategy=SignalStrategy(), quick_filter=FailingFilter())

    [report] = await rig.pipeline.run_cycle()

    assert (report.final_decision, report.source) == ("hold", "rules")
    assert rig.repo.decisions[0].market_data["quick_filter"] is None


# --- the adviser only on the candidate's entry bars -----------------------------------------------------------


async def test_the_adviser_is_asked_only_on_the_candidates_entry_bars_when_flat(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given TRADING_STRATEGY=ai, when the candidate has no entry the adviser is not asked (hold, reason says
    why); on its entry bar while flat it is asked once and its buy fills; while held it is not asked again."""
    for name, value in RELAXED.items():
        monkeypatch.setenv(name, value)
    ai = ScriptedAI(Decision.BUY, "90")
    rig = build(ai_settings(settings), strategy=SignalStrategy(), ai=ai, risk_config=RiskConfig(_env_file=None))

    [no_entry] = await rig.pipeline.run_cycle()
    assert ai.asked == []
    assert (no_entry.final_decision, no_entry.source) == ("hold", "rules")
    assert "the adviser is asked only on fake_signal's entry bars" in rig.repo.decisions[-1].reason

    rig.pipeline.analyzer.strategy = SignalStrategy(buy=True)
    rig.source.advance_to(rig.source.now() + timedelta(hours=1))
    [entry] = await rig.pipeline.run_cycle()
    assert len(ai.asked) == 1
    assert (entry.final_decision, entry.source) == ("buy", "ai")
    assert ai.asked[0].signals["strategy"]["buy"] is True

    rig.source.advance_to(rig.source.now() + timedelta(hours=1))
    [held] = await rig.pipeline.run_cycle()
    assert len(ai.asked) == 1
    assert held.final_decision == "hold"


async def test_an_unavailable_adviser_holds_the_candidate_entry_with_the_reason(settings: Settings) -> None:
    """Given TRADING_STRATEGY=ai and the adviser off (its budget reached), when the candidate has an entry, then
    the bot holds with the reason (source disabled) and never falls back to buying on the rules."""
    ai = ScriptedAI(Decision.BUY, "90")
    ai.available = False
    ai.off_reason = "AI budget reached (daily)"
    rig = build(ai_settings(settings), strategy=CANDIDATE, ai=ai)

    [report] = await rig.pipeline.run_cycle()

    assert ai.asked == []
    assert (report.decision, report.final_decision, report.source) == ("hold", "hold", "disabled")
    assert rig.repo.orders == {}
    [decision] = rig.repo.decisions
    assert "AI budget reached (daily)" in decision.reason
    assert decision.error == "disabled: AI budget reached (daily)"


# --- run-time strategy switch ---------------------------------------------------------------------------------


async def test_a_run_time_strategy_switch_is_used_from_the_next_cycle(settings: Settings) -> None:
    """Given the bot trading rule_breakout, when strategy.name/strategy.params change at run time to
    volatility_breakout k=0.1, then the next cycle decides with that strategy and the quick filter judges it."""
    rig = build(settings, quick_filter=FROM_SETTINGS)
    assert isinstance(rig.pipeline.analyzer.strategy, RuleBasedBreakoutStrategy)
    switched = with_strategy(rig.settings, "volatility_breakout", {"k": 0.1})

    await apply_settings(rig.pipeline, rig.settings, switched)
    [report] = await rig.pipeline.run_cycle()

    strategy = rig.pipeline.analyzer.strategy
    assert isinstance(strategy, VolatilityBreakoutStrategy)
    assert strategy.k == 0.1
    assert rig.pipeline.analyzer.quick_filter.rule_strategy is strategy
    decision = rig.repo.decisions[-1]
    assert decision.reason.startswith("volatility_breakout: ")
    assert "target" in decision.market_data["strategy"]  # the volatility breakout's own detail
    assert report.error is None


async def test_a_run_time_strategy_that_cannot_be_built_changes_nothing(settings: Settings) -> None:
    """Given the bot trading rule_breakout, when the run-time settings name an unknown strategy, then applying
    them fails with the one-line error and the strategy in use, the symbols and the risk limits stay."""
    rig = build(settings, quick_filter=FROM_SETTINGS)
    before = rig.pipeline.analyzer.strategy
    broken = with_value(with_strategy(rig.settings, "no_such_strategy"), "trading.symbols", ["KRW-ETH"])

    with pytest.raises(ConfigurationError, match="unknown strategy 'no_such_strategy'"):
        await apply_settings(rig.pipeline, rig.settings, broken)

    assert rig.pipeline.analyzer.strategy is before
    assert rig.pipeline.symbols == [SYMBOL]
