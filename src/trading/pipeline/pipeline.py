"""The trading pipeline: Risk -> Data -> Analysis -> Execution for each symbol, and the jobs around it.

Everything is injected (exchange, market data, strategy, AI, validator, liquidity, risk, positions,
repository, notifier, clock), so the same object runs live, on paper, in replay and in tests. Each cycle
writes a ``trading_cycles`` row (every stage's outcome and duration), an ``ai_decisions`` row with the
market data it saw, and ``system_logs`` rows for warnings and errors. Orders go through
``TradingService`` (exactly once); unsettled orders are reconciled before every cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import pandas as pd

from src.ai.models import MarketContext
from src.api.interfaces import IExchangeClient, Orderbook
from src.data.collector import DataCollector, MarketSnapshot
from src.domain.decisions import Decision, DecisionSource, PositionSizing
from src.domain.events import EventKind, NotificationEvent, Notifier, NullNotifier
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.money import KRW_QUANTUM, ZERO, report_krw
from src.exceptions import ExchangeError
from src.position.service import PositionService
from src.risk.manager import RiskManager
from src.risk.models import ExitSignal, PortfolioView, TradeStats
from src.trading.pipeline.analysis import (
    NO_POSITION_VETO,
    RISK_VETO,
    Analysis,
    Analyzer,
    ai_source,
)
from src.trading.pipeline.context import CycleContext, CycleOutcome, ExecutionOutcome, StageOutcome
from src.trading.pipeline.portfolio import Portfolio, load_portfolio
from src.trading.repository import AIDecisionRecord, ITradingRepository, PortfolioSnapshotRecord
from src.trading.service import ExecutionResult, NullObserver, TradingService
from src.utils.logger import get_logger

log = get_logger(__name__)


class PipelineObserver(Protocol):
    """Metrics hook (prometheus in the backend); every method must be cheap and never raise."""

    def on_stage(self, stage: str, seconds: float) -> None: ...

    def on_decision(self, source: DecisionSource, decision: Decision, confidence: Decimal | None) -> None:
        """The final decision of a cycle (after validator, risk and liquidity): what is done."""

    def on_override(self, proposed: str, by: str) -> None:
        """A proposed decision was turned into a hold by ``by`` (validator, risk, liquidity, no_position)."""

    def on_ai_error(self, reason: str) -> None: ...

    def on_trade(self, trade: Any) -> None: ...

    def on_exchange_error(self, operation: str, error: str) -> None: ...

    def on_portfolio(self, equity: Decimal, profit_rate: Decimal | None) -> None: ...


class NullPipelineObserver(NullObserver):
    def on_stage(self, stage: str, seconds: float) -> None:
        return None

    def on_decision(self, source: DecisionSource, decision: Decision, confidence: Decimal | None) -> None:
        return None

    def on_override(self, proposed: str, by: str) -> None:
        return None

    def on_ai_error(self, reason: str) -> None:
        return None

    def on_portfolio(self, equity: Decimal, profit_rate: Decimal | None) -> None:
        return None


@dataclass(slots=True)
class CycleReport:
    cycle_id: str
    symbol: str
    decision: str
    final_decision: str
    source: str
    outcome: str
    orders: list[ExecutionResult] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class ExitReport:
    symbol: str
    reason: str
    result: ExecutionResult | None
    error: str | None = None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class TradingPipeline:
    def __init__(
        self,
        *,
        exchange: IExchangeClient,
        collector: DataCollector,
        analyzer: Analyzer,
        trading: TradingService,
        risk: RiskManager,
        positions: PositionService,
        repository: ITradingRepository,
        mode: TradingMode,
        symbols: list[str],
        timeframe: str = "1h",
        clock: Callable[[], datetime] | None = None,
        notifier: Notifier | None = None,
        observer: PipelineObserver | None = None,
        starting_equity: Decimal | None = None,
    ) -> None:
        self.exchange = exchange
        self.collector = collector
        self.analyzer = analyzer
        self.trading = trading
        self.risk = risk
        self.positions = positions
        self.repository = repository
        self.mode = mode
        self.symbols = list(symbols)
        self.timeframe = timeframe
        self.clock = clock or (lambda: datetime.now(UTC))
        self.notifier = notifier or NullNotifier()
        self.observer: PipelineObserver = observer or NullPipelineObserver()
        self.starting_equity = starting_equity
        self.last_snapshot_at: datetime | None = None

    # --- jobs -------------------------------------------------------------------------------------
    async def reconcile(self) -> list[ExecutionResult]:
        """Settle pending/open orders by asking the exchange; at start-up and before every cycle."""
        try:
            return await self.trading.reconcile()
        except Exception as exc:
            await self._log_error("reconciliation failed", exc, {})
            return []

    async def run_cycle(
        self,
        symbols: list[str] | None = None,
        *,
        dry_run: bool = False,
        allow_buys: bool = True,
        stop_requested: Callable[[], bool] | None = None,
    ) -> list[CycleReport]:
        """One trading cycle over the symbols; ``allow_buys=False`` when the bot is paused.

        Unsettled orders are reconciled first, then the circuit breakers see the equity. Between
        symbols ``stop_requested`` is consulted, so a shutdown never cuts an order's handling in half.
        """
        await self.reconcile()
        await self.feed_equity()
        reports = []
        for symbol in symbols or self.symbols:
            if stop_requested is not None and stop_requested():
                log.info("cycle.stopping", remaining=symbol)
                break
            reports.append(await self.run_symbol(symbol, dry_run=dry_run, allow_buys=allow_buys))
        try:
            await self.snapshot()
        except Exception as exc:
            await self._log_error("portfolio snapshot failed", exc, {})
        return reports

    async def feed_equity(self, portfolio: Portfolio | None = None) -> Portfolio | None:
        """Circuit breakers and safe mode first (``RiskManager.on_equity``); their events are announced."""
        try:
            portfolio = portfolio or await load_portfolio(self.exchange, self.clock())
            events = await self.risk.on_equity(portfolio.equity_krw, portfolio.at)
        except Exception as exc:
            await self._log_error("circuit breaker check failed", exc, {})
            return None
        for event in events:
            self.notifier.notify(event)
            await self.repository.log_event(
                "warning", event.title, {"kind": event.kind.value, **_jsonable(dict(event.fields))}
            )
        return portfolio

    async def run_symbol(self, symbol: str, *, dry_run: bool = False, allow_buys: bool = True) -> CycleReport:
        ctx = CycleContext.start(symbol, self.mode, self.clock())
        analysis: Analysis | None = None
        orders: list[ExecutionResult] = []
        try:
            portfolio, verdict = await self._risk_stage(ctx, allow_buys)
            market = await self._data_stage(ctx)
            analysis = await self._analysis_stage(ctx, market, portfolio, verdict)
            orders = await self._execution_stage(ctx, analysis, portfolio, verdict, market, dry_run)
        except Exception as exc:
            ctx.error = f"{type(exc).__name__}: {exc}"
            ctx.outcome = CycleOutcome.ERROR
            if isinstance(exc, ExchangeError):
                self.observer.on_exchange_error(ctx.stages[-1].stage if ctx.stages else "cycle", type(exc).__name__)
            await self._log_error("trading cycle failed", exc, {"cycle_id": ctx.cycle_id, "symbol": symbol})
        await self._finish(ctx)
        return CycleReport(
            cycle_id=ctx.cycle_id,
            symbol=symbol,
            decision=analysis.decision.value if analysis else "none",
            final_decision=analysis.final_decision.value if analysis else "none",
            source=analysis.source if analysis else "none",
            outcome=ctx.outcome_label,
            orders=orders,
            stages={s.stage: s.outcome for s in ctx.stages},
            error=ctx.error,
        )

    async def check_positions(self, *, allow: bool = True) -> list[ExitReport]:
        """Stops, targets and trailing stops of open positions, sold through the same execution path."""
        if not allow:
            return []
        open_positions = await self.positions.open_positions()
        if not open_positions:
            return []
        now = self.clock()
        symbols = sorted({p.symbol for p in open_positions})
        prices = {t.symbol: t.trade_price for t in await self.exchange.get_tickers(symbols)}
        marked = []
        for position in open_positions:
            price = prices.get(position.symbol)
            updated = await self.positions.mark(position.symbol, price) if price is not None else None
            marked.append(updated or position)
        exits = self.risk.exits_due(marked, prices, now)
        if not exits:
            return []
        portfolio = await load_portfolio(self.exchange, now)
        amounts = {p.symbol: p.amount for p in marked}
        return [await self._exit(exit_signal, portfolio, amounts[exit_signal.symbol]) for exit_signal in exits]

    async def _exit(self, exit_signal: ExitSignal, portfolio: Portfolio, amount: Decimal) -> ExitReport:
        symbol = exit_signal.symbol
        reason = f"exit: {exit_signal.reason.value} (price {exit_signal.price}, level {exit_signal.trigger_price})"
        holding = portfolio.holding(symbol)
        if holding is None:
            await self.repository.log_event(
                "warning", "exit due but nothing held at the exchange", {"symbol": symbol, "reason": reason}
            )
            return ExitReport(symbol, reason, None, error="no balance to sell")
        try:
            result = await self.trading.market_sell(
                symbol,
                min(amount, holding.volume),  # the position, never coins the bot did not buy
                reason=reason,
                cycle_id=None,
                exit_reason=exit_signal.reason,
            )
        except Exception as exc:
            await self._log_error("exit order failed", exc, {"symbol": symbol, "reason": reason})
            return ExitReport(symbol, reason, None, error=str(exc))
        log.info("position.exit", symbol=symbol, reason=reason, status=result.status.value)
        return ExitReport(symbol, reason, result)

    async def snapshot(self, *, unless_within: timedelta | None = None) -> PortfolioSnapshotRecord | None:
        """Value the account, write ``portfolio_snapshots``, and let the circuit breakers see the equity.

        Every trading cycle ends with one; the snapshot job passes ``unless_within`` so it does not write
        a second row right after a cycle did.
        """
        now = self.clock()
        if (
            unless_within is not None
            and self.last_snapshot_at is not None
            and now - self.last_snapshot_at < unless_within
        ):
            return None
        portfolio = await load_portfolio(self.exchange, now)
        equity = portfolio.equity_krw
        profit_rate = None
        if self.starting_equity:
            profit_rate = (equity / self.starting_equity - 1).quantize(Decimal("0.00000001"))
        record = PortfolioSnapshotRecord(
            total_value_krw=report_krw(equity),
            positions=portfolio.positions_json(),
            mode=self.mode,
            cash_krw=portfolio.cash_krw,
            profit_rate=profit_rate,
            created_at=now,
        )
        await self.repository.save_snapshot(record)
        self.last_snapshot_at = now
        self.observer.on_portfolio(equity, profit_rate)
        await self.feed_equity(portfolio)
        return record

    # --- stages -----------------------------------------------------------------------------------
    async def _risk_stage(self, ctx: CycleContext, allow_buys: bool) -> tuple[Portfolio, _Verdict]:
        with ctx.stage("risk") as stage:
            portfolio = await load_portfolio(self.exchange, ctx.now)
            open_positions = await self.positions.open_positions()
            view = PortfolioView.of(
                portfolio.cash_krw,
                {symbol: holding.value_krw for symbol, holding in portfolio.holdings.items()},
                len(open_positions),
            )
            verdict = await self.risk.evaluate_entry(ctx.symbol, view, ctx.now)
            size = self.risk.size_entry(verdict, view, await self._trade_stats()) if verdict.allowed else ZERO
            reasons = list(verdict.reasons)
            if not allow_buys:
                reasons.append("paused: the bot is paused, no new buys")
            allowed = verdict.allowed and allow_buys
            stage.outcome = StageOutcome.BUYS_ALLOWED if allowed else StageOutcome.BUYS_BLOCKED
            stage.detail.update(
                equity_krw=str(portfolio.equity_krw),
                cash_krw=str(portfolio.cash_krw),
                max_krw=str(verdict.max_krw),
                size_krw=str(size),
                reasons=reasons,
                holding=ctx.symbol in portfolio.holdings,
                open_positions=len(open_positions),
            )
        self.observer.on_stage("risk", ctx.stages[-1].duration_ms / 1000)
        return portfolio, _Verdict(allowed, reasons, verdict.max_krw, size, verdict.min_krw)

    async def _trade_stats(self) -> TradeStats | None:
        """Closed-position statistics, which only half-Kelly sizing reads."""
        if self.risk.config.position_sizing is PositionSizing.HALF_KELLY:
            return await self.risk.trade_stats()
        return None

    async def _data_stage(self, ctx: CycleContext) -> MarketView:
        with ctx.stage("data") as stage:
            snapshot = await self.collector.collect(ctx.symbol, [self.timeframe])
            market = MarketView.from_snapshot(snapshot, self.timeframe)
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
        self.observer.on_stage("data", ctx.stages[-1].duration_ms / 1000)
        return market

    async def _analysis_stage(
        self, ctx: CycleContext, market: MarketView, portfolio: Portfolio, verdict: _Verdict
    ) -> Analysis:
        with ctx.stage("analysis") as stage:
            analysis = await self._analyse(ctx, market, portfolio, verdict)
            stage.outcome = analysis.final_decision
            stage.detail.update(
                ai="available" if self.analyzer.ai_available else self.analyzer.ai_disabled_reason(),
                source=analysis.source,
                decision=analysis.decision.value,
                confidence=None if analysis.confidence is None else str(analysis.confidence),
                overridden=analysis.overridden,
                override_reasons=analysis.override_reasons,
                quick_filter=None if analysis.quick_filter is None else analysis.quick_filter.get("passed"),
                liquidity=None if analysis.liquidity is None else analysis.liquidity.reason,
            )
        self.observer.on_stage("analysis", ctx.stages[-1].duration_ms / 1000)
        self.observer.on_decision(analysis.source, analysis.final_decision, analysis.confidence)
        for by in analysis.overridden_by:
            self.observer.on_override(analysis.decision.value, by)
        if analysis.ai is not None and analysis.ai.error:
            self.observer.on_ai_error(analysis.ai.error.split(":", 1)[0])
        await self._save_decision(ctx, market, portfolio, verdict, analysis)
        if analysis.final_decision is not Decision.HOLD:  # holds every hour would drown the channel
            self.notifier.notify(
                NotificationEvent(
                    EventKind.AI_DECISION,
                    f"{analysis.final_decision.value.upper()} {ctx.symbol} decided",
                    {
                        "symbol": ctx.symbol,
                        "decision": analysis.final_decision.value,
                        "confidence": analysis.confidence,
                        "source": analysis.source,
                        "reason": analysis.reason,
                    },
                    at=ctx.now,
                )
            )
        if analysis.overridden and analysis.decision is Decision.BUY:
            self.notifier.notify(
                NotificationEvent(
                    EventKind.VALIDATOR_OVERRIDE,
                    f"Buy of {ctx.symbol} turned into hold",
                    {
                        "symbol": ctx.symbol,
                        "decision": analysis.decision.value,  # what was proposed
                        "final_decision": analysis.final_decision.value,  # what is done and counted
                        "reasons": analysis.override_reasons,
                        "source": analysis.source,
                    },
                    at=ctx.now,
                )
            )
        return analysis

    async def _analyse(
        self, ctx: CycleContext, market: MarketView, portfolio: Portfolio, verdict: _Verdict
    ) -> Analysis:
        holding = portfolio.holding(ctx.symbol)
        indicators, signals, strategy_last = self.analyzer.technicals(market.candles)
        rules_decision, rules_reason = self.analyzer.rules_decision(strategy_last, holding is not None)
        await self.analyzer.refresh_ai()
        if not self.analyzer.ai_available:
            disabled = self.analyzer.ai_disabled_reason()
            analysis = Analysis(
                rules_decision,
                rules_decision,
                DecisionSource.RULES,
                f"{rules_reason} [AI {disabled}]",
                indicators=indicators,
                signals=signals,
                strategy=strategy_last,
                ai_disabled_reason=disabled,
            )
        else:
            analysis = await self._ai_analysis(ctx, market, portfolio, indicators, signals, strategy_last)
        self.analyzer.validate(analysis, market.flash_crash)
        if analysis.final_decision is Decision.BUY and not verdict.allowed:
            # A buy the risk rules (or the bot's state) refuse is a hold: recorded, announced and counted so.
            for reason in verdict.reasons:
                analysis.override(f"{RISK_VETO}: {reason}", RISK_VETO)
        buy_krw = self._buy_budget(portfolio, verdict) if analysis.final_decision is Decision.BUY else None
        sell_volume = holding.volume if holding is not None else None
        self.analyzer.assess_liquidity(analysis, market.orderbook, buy_krw, sell_volume)
        if analysis.final_decision is Decision.SELL and holding is None:
            analysis.override("sell without a position: nothing to sell", NO_POSITION_VETO)
        return analysis

    async def _ai_analysis(
        self,
        ctx: CycleContext,
        market: MarketView,
        portfolio: Portfolio,
        indicators: dict[str, float],
        signals: dict[str, Any],
        strategy_last: dict[str, Any],
    ) -> Analysis:
        holding = portfolio.holding(ctx.symbol)
        quick = await self.analyzer.quick_filter_result(ctx.symbol, market.candles)
        if quick is not None and not quick.get("passed") and holding is None:
            failed = ", ".join(quick.get("failed_thresholds") or []) or "thresholds"
            return Analysis(
                Decision.HOLD,
                Decision.HOLD,
                DecisionSource.FILTER,
                f"quick backtest filter failed ({failed}); the adviser was not asked",
                indicators=indicators,
                signals=signals,
                strategy=strategy_last,
                quick_filter=quick,
            )
        context = MarketContext(
            symbol=ctx.symbol,
            timestamp=market.candles.index[-1].to_pydatetime() if len(market.candles) else ctx.now,
            price=float(market.price) if market.price is not None else float(indicators.get("close", 0.0)),
            indicators=indicators,
            signals={**signals, "strategy": strategy_last},
            orderbook=market.orderbook_summary(),
            position=_position_payload(holding),
            fear_greed=market.fear_greed,
            quick_filter=quick,
        )
        decision = await self.analyzer.ask_ai(context)
        return Analysis(
            decision.decision,
            decision.decision,
            ai_source(decision),
            decision.reason,
            confidence=decision.confidence,
            indicators=indicators,
            signals=signals,
            strategy=strategy_last,
            quick_filter=quick,
            ai=decision,
        )

    def _buy_budget(self, portfolio: Portfolio, verdict: _Verdict) -> Decimal:
        """The risk manager's size, capped so that total plus fee fits the available KRW."""
        return self.trading.buy_total_for(portfolio.krw_available, verdict.size_krw)

    async def _execution_stage(
        self,
        ctx: CycleContext,
        analysis: Analysis,
        portfolio: Portfolio,
        verdict: _Verdict,
        market: MarketView,
        dry_run: bool,
    ) -> list[ExecutionResult]:
        decision = analysis.final_decision
        if decision is Decision.HOLD and analysis.risk_vetoed:
            ctx.skip("execution", "risk veto: " + "; ".join(verdict.reasons))
            ctx.outcome = CycleOutcome.BUY_VETOED
            return []
        if decision is Decision.HOLD:
            ctx.skip("execution", "hold")
            ctx.outcome = CycleOutcome.HOLD
            return []
        if dry_run:
            ctx.skip("execution", f"dry run: would {decision.value}")
            ctx.outcome = CycleOutcome.dry_run(decision)
            return []
        with ctx.stage("execution") as stage:
            if decision is Decision.BUY:
                results = await self._buy(ctx, analysis, portfolio, verdict, stage.detail)
            else:
                results = await self._sell(ctx, analysis, portfolio)
            outcome = ExecutionOutcome(decision, frozenset(r.status for r in results))
            stage.outcome = ctx.outcome = outcome
            stage.detail["orders"] = [r.to_dict() for r in results]
        self.observer.on_stage("execution", ctx.stages[-1].duration_ms / 1000)
        return results

    async def _buy(
        self, ctx: CycleContext, analysis: Analysis, portfolio: Portfolio, verdict: _Verdict, detail: dict[str, Any]
    ) -> list[ExecutionResult]:
        total = self._buy_budget(portfolio, verdict)
        problem = self.trading.check_min_total(total)
        if problem is None and verdict.min_krw is not None and total < verdict.min_krw:
            problem = f"top-up of {total:,.0f} KRW is below RISK_MIN_ADD_KRW {verdict.min_krw:,.0f} KRW"
        if problem:
            detail["skipped"] = problem
            return []
        children = 1
        if analysis.liquidity is not None and analysis.liquidity.split_into > 1:
            children = analysis.liquidity.split_into
        child_total = (total / children).quantize(KRW_QUANTUM)
        reason = f"{analysis.source}: {analysis.reason}"[:1000]
        atr = _finite(analysis.indicators.get("atr_14"))
        atr_krw = Decimal(str(atr)) if atr is not None and atr > 0 else None
        results = []
        for _ in range(children):
            result = await self.trading.market_buy(
                ctx.symbol, child_total, reason=reason, cycle_id=ctx.cycle_id, atr=atr_krw
            )
            results.append(result)
            if not result.filled:
                break
        return results

    async def _sell(self, ctx: CycleContext, analysis: Analysis, portfolio: Portfolio) -> list[ExecutionResult]:
        """Sell the bot's position (never more than the exchange holds); the whole balance when untracked."""
        holding = portfolio.holding(ctx.symbol)
        if holding is None:
            return []
        position = await self.positions.get(ctx.symbol)
        volume = min(position.amount, holding.volume) if position is not None else holding.volume
        reason = f"{analysis.source}: {analysis.reason}"[:1000]
        sold = await self.trading.market_sell(
            ctx.symbol, volume, reason=reason, cycle_id=ctx.cycle_id, exit_reason=ExitReason.SIGNAL
        )
        return [sold]

    # --- records ----------------------------------------------------------------------------------
    async def _save_decision(
        self, ctx: CycleContext, market: MarketView, portfolio: Portfolio, verdict: _Verdict, analysis: Analysis
    ) -> None:
        ai = analysis.ai
        market_data = {
            "timeframe": self.timeframe,
            "candle": market.last_candle(),
            "price": None if market.price is None else str(market.price),
            "indicators": {k: _finite(v) for k, v in analysis.indicators.items()},
            "signals": analysis.signals,
            "strategy": analysis.strategy,
            "quick_filter": analysis.quick_filter,
            "orderbook": market.orderbook_summary(),
            "fear_greed": market.fear_greed,
            "flash_crash": market.flash_crash,
            **market.extra,
            "position": _position_payload(portfolio.holding(ctx.symbol)),
            "risk": {
                "buys_allowed": verdict.allowed,
                "reasons": verdict.reasons,
                "max_krw": str(verdict.max_krw),
                "size_krw": str(verdict.size_krw),
            },
            "liquidity": _liquidity_payload(analysis),
        }
        record = AIDecisionRecord(
            symbol=ctx.symbol,
            decision=analysis.decision.value,
            final_decision=analysis.final_decision.value,
            source=analysis.source,
            confidence=analysis.confidence,
            reason=analysis.reason,
            market_data=_jsonable(market_data),
            overridden=analysis.overridden,
            override_reasons=analysis.override_reasons or None,
            model=ai.model if ai else None,
            prompt_hash=ai.prompt_hash or None if ai else None,
            prompt=ai.prompt if ai else None,
            raw_response=ai.raw_response if ai else None,
            prompt_tokens=ai.prompt_tokens if ai else 0,
            completion_tokens=ai.completion_tokens if ai else 0,
            cost_usd=ai.cost_usd if ai else ZERO,
            error=(ai.error if ai else analysis.ai_disabled_reason),
            cycle_id=ctx.cycle_id,
            created_at=ctx.now,
        )
        await self.repository.save_ai_decision(record)

    async def _finish(self, ctx: CycleContext) -> None:
        try:
            await self.repository.save_cycle(ctx.record(self.clock()))
        except Exception as exc:
            log.exception("cycle.save_failed", cycle_id=ctx.cycle_id)
            await self._log_error("saving the cycle record failed", exc, {"cycle_id": ctx.cycle_id})
        log.info(
            "cycle.finished",
            cycle_id=ctx.cycle_id,
            symbol=ctx.symbol,
            outcome=ctx.outcome_label,
            stages={s.stage: s.outcome for s in ctx.stages},
            elapsed_ms=round(ctx.elapsed_ms, 2),
        )

    async def _log_error(self, message: str, exc: BaseException, context: dict[str, Any]) -> None:
        log.error(message.replace(" ", "_"), error=f"{type(exc).__name__}: {exc}", **context)
        try:
            await self.repository.log_event("error", message, {**context, "error": f"{type(exc).__name__}: {exc}"})
        except Exception:
            log.exception("system_log.write_failed")
        self.notifier.notify(
            NotificationEvent(
                EventKind.ERROR, message, {**context, "error": f"{type(exc).__name__}: {exc}"}, at=self.clock()
            )
        )


@dataclass(slots=True)
class _Verdict:
    allowed: bool  # risk rules and the bot's state allow a new buy
    reasons: list[str]
    max_krw: Decimal
    size_krw: Decimal  # the order total the sizing rule chose
    min_krw: Decimal | None = None  # a top-up of a held coin: RISK_MIN_ADD_KRW (None: a new position)


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
            extra["btc_correlation"] = _finite(snapshot.btc_correlation)
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
        return {"timestamp": self.candles.index[-1].isoformat(), **{c: _finite(row[c]) for c in self.candles.columns}}

    def orderbook_summary(self) -> dict[str, Any] | None:
        return self.orderbook_payload


def _position_payload(holding: Any) -> dict[str, Any] | None:
    if holding is None:
        return None
    return {
        "volume": str(holding.volume),
        "avg_buy_price": str(holding.avg_buy_price),
        "price": None if holding.price is None else str(holding.price),
        "profit_rate": None if holding.profit_rate is None else str(holding.profit_rate),
    }


def _liquidity_payload(analysis: Analysis) -> dict[str, Any] | None:
    assessment = analysis.liquidity
    if assessment is None:
        return None
    return {
        "allowed": assessment.allowed,
        "split_into": assessment.split_into,
        "slippage_pct": None if assessment.slippage_pct is None else str(assessment.slippage_pct),
        "expected_avg_price": None if assessment.expected_avg_price is None else str(assessment.expected_avg_price),
        "reason": assessment.reason,
    }


def _jsonable(value: Any) -> Any:
    """Decimals and datetimes as strings, NaN as null: what a JSON column can hold."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _jsonable(value.item())
    return value
