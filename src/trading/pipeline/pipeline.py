"""The trading pipeline: Risk -> Data -> Analysis -> Execution for each symbol, and the jobs around it.

Everything is injected (exchange, market data, strategy, AI, validator, liquidity, risk, positions,
repository, notifier, clock), so the same object runs live, on paper, in replay and in tests. Each cycle
writes a ``trading_cycles`` row (every stage's outcome and duration), an ``ai_decisions`` row with the
market data it saw, and ``system_logs`` rows for warnings and errors. Orders go through
``TradingService`` (exactly once); unsettled orders are reconciled before every cycle.

This module orchestrates; each stage lives in its own module (``risk_stage``, ``data_stage``,
``analysis_stage``, ``execution``), the position job in ``exits`` and the metrics hook in ``observer``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from src.api.interfaces import IExchangeClient
from src.data.collector import DataCollector
from src.domain.events import EventKind, NotificationEvent, Notifier, NullNotifier
from src.domain.modes import TradingMode
from src.domain.money import report_krw
from src.exceptions import ExchangeError
from src.position.service import PositionService
from src.risk.manager import RiskManager
from src.trading.market_status import MarketStatusBook, MarketStatusSource
from src.trading.pipeline.analysis import Analysis, Analyzer
from src.trading.pipeline.analysis_stage import analysis_stage
from src.trading.pipeline.context import CycleContext, CycleOutcome
from src.trading.pipeline.data_stage import data_stage
from src.trading.pipeline.execution import execution_stage
from src.trading.pipeline.exits import ExitReport, exit_at_price, exit_due_positions
from src.trading.pipeline.market_gate import MarketFlagAction, MarketGateConfig, refresh_market_flags
from src.trading.pipeline.observer import NullPipelineObserver, PipelineObserver
from src.trading.pipeline.payloads import jsonable
from src.trading.pipeline.portfolio import Portfolio, krw_per_usd, load_portfolio, usd_value
from src.trading.pipeline.risk_stage import risk_stage
from src.trading.repository import ITradingRepository, PortfolioSnapshotRecord
from src.trading.results import ExecutionResult
from src.trading.service import TradingService
from src.utils.logger import get_logger

log = get_logger(__name__)


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
        market_status: MarketStatusSource | None = None,
        market_gate: MarketGateConfig | None = None,
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
        self.market_status = market_status  # None: no market flags (replay)
        self.market_gate = market_gate or MarketGateConfig()
        self.markets = MarketStatusBook()

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
                "warning", event.title, {"kind": event.kind.value, **jsonable(dict(event.fields))}
            )
        return portfolio

    async def run_symbol(self, symbol: str, *, dry_run: bool = False, allow_buys: bool = True) -> CycleReport:
        ctx = CycleContext.start(symbol, self.mode, self.clock())
        analysis: Analysis | None = None
        orders: list[ExecutionResult] = []
        try:
            portfolio, verdict = await risk_stage(
                ctx,
                allow_buys,
                exchange=self.exchange,
                positions=self.positions,
                risk=self.risk,
                observer=self.observer,
                markets=self.markets,
            )
            market = await data_stage(ctx, collector=self.collector, timeframe=self.timeframe, observer=self.observer)
            analysis = await analysis_stage(
                ctx,
                market,
                portfolio,
                verdict,
                analyzer=self.analyzer,
                trading=self.trading,
                repository=self.repository,
                notifier=self.notifier,
                observer=self.observer,
                timeframe=self.timeframe,
            )
            orders = await execution_stage(
                ctx,
                analysis,
                portfolio,
                verdict,
                dry_run,
                trading=self.trading,
                positions=self.positions,
                observer=self.observer,
            )
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
        return await exit_due_positions(
            exchange=self.exchange,
            positions=self.positions,
            risk=self.risk,
            trading=self.trading,
            repository=self.repository,
            clock=self.clock,
            log_error=self._log_error,
        )

    async def refresh_market_flags(self, *, act: bool = True) -> list[MarketFlagAction]:
        """Upbit's market flags read afresh (the market-status job, and every announcement); held coins that are
        flagged are handled by ``MARKET_WARNING_ACTION`` unless ``act`` is False (bot stopped). No source: none."""
        if self.market_status is None:
            return []
        return await refresh_market_flags(
            source=self.market_status,
            book=self.markets,
            config=self.market_gate,
            exchange=self.exchange,
            positions=self.positions,
            trading=self.trading,
            repository=self.repository,
            notifier=self.notifier,
            clock=self.clock,
            log_error=self._log_error,
            act=act,
        )

    async def exit_on_price(self, symbol: str, price: Decimal, *, highest: Decimal | None = None) -> ExitReport | None:
        """The real-time path's exit (``RealtimeExits``): ``symbol`` traded at ``price``, crossing a level; the
        position is re-read, the exit rule asked again, and the sale goes through the position job's path."""
        return await exit_at_price(
            symbol,
            price,
            highest=highest,
            exchange=self.exchange,
            positions=self.positions,
            risk=self.risk,
            trading=self.trading,
            repository=self.repository,
            clock=self.clock,
            log_error=self._log_error,
        )

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
            total_value_usd=usd_value(equity, await krw_per_usd(self.exchange)),
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

    # --- records ----------------------------------------------------------------------------------
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
