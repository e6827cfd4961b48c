"""The trading engine: the pipeline built from settings and the database, and the jobs it runs.

Mode decides the exchange: ``live`` -> ``UpbitClient`` with keys; ``paper`` -> ``PaperExchange`` over
Upbit's public market data with the account in ``paper_balances``/``paper_orders``; ``replay`` ->
``PaperExchange`` over a ``ReplayMarketSource`` on a simulated clock (account ``replay``). Everything
else is the same object graph in every mode.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.db.repositories.ai_cache import DatabaseCallRecorder, DatabaseDecisionCache
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.repositories.paper import SqlPaperAccountStore
from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.db.session import session_factory
from backend.app.models import PortfolioSnapshotRow
from backend.app.services.reporting import DailyReport, build_daily_report
from backend.app.services.scheduler_metrics import SchedulerMetrics
from src.ai.cache import DecisionCache
from src.ai.models import AIPurpose
from src.ai.service import AIService
from src.ai.usage import AIBudget, BudgetChange, BudgetPeriod
from src.ai.validator import AIDecisionValidator
from src.api.interfaces import MAX_CANDLES_PER_REQUEST, IExchangeClient
from src.api.paper_exchange import PaperExchange
from src.api.upbit_client import UpbitClient
from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.quick_filter import QuickBacktestFilter
from src.backtesting.strategy import RuleBasedBreakoutStrategy
from src.config.runtime_state import with_value
from src.config.settings import Settings
from src.data.collector import DataCollector
from src.data.fear_greed import FearGreedClient
from src.data.replay import ReplayMarketSource
from src.domain.events import EventKind, NotificationEvent, Notifier, NullNotifier
from src.domain.modes import TradingMode
from src.domain.timeframes import Timeframe
from src.exceptions import ConfigurationError
from src.position.service import PositionService
from src.risk.manager import RiskManager
from src.trading.liquidity import LiquidityAnalyzer
from src.trading.pipeline import Analyzer, CycleReport, ExitReport, TradingPipeline
from src.trading.pipeline.positions import ServicePositionBook
from src.trading.repository import PortfolioSnapshotRecord
from src.trading.service import OrderGuard, TradingService
from src.utils.logger import get_logger

log = get_logger(__name__)

Clock = Callable[[], datetime]
SNAPSHOT_DEDUP = timedelta(minutes=1)
PAPER_ACCOUNT = {TradingMode.PAPER: "paper", TradingMode.REPLAY: "replay"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class EngineParts:
    """What the engine owns and must close."""

    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def _ai_off_reason(settings: Settings) -> str | None:
    if not settings.ai.enabled:
        return "AI is off (AI_ENABLED or the run-time setting ai.enabled)"
    if not settings.ai.has_key:
        return "no OPENAI_API_KEY configured"
    return None


class TradingEngine:
    """One trading account: the pipeline and the job bodies the scheduler (and replay) call."""

    def __init__(
        self,
        *,
        settings: Settings,
        mode: TradingMode,
        symbols: list[str],
        pipeline: TradingPipeline,
        sessions: async_sessionmaker[AsyncSession],
        bot: BotRepository,
        notifier: Notifier,
        metrics: SchedulerMetrics,
        clock: Clock,
        parts: EngineParts,
        ai: AIService,
    ) -> None:
        self.settings = settings  # in use: the environment plus applied run-time settings (``configure``)
        self.environment = settings  # the process's own (environment and ``--symbols``)
        self.ai = ai
        self.mode = mode
        self.symbols = symbols
        self.pipeline = pipeline
        self.sessions = sessions
        self.bot = bot
        self.notifier = notifier
        self.metrics = metrics
        self.clock = clock
        self._parts = parts

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    async def create(
        cls,
        settings: Settings,
        db_engine: AsyncEngine,
        *,
        mode: TradingMode | None = None,
        symbols: list[str] | None = None,
        market_source: ReplayMarketSource | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        metrics: SchedulerMetrics | None = None,
        instance: str | None = None,
        exchange: IExchangeClient | None = None,
        ai_cache: DecisionCache | None = None,
    ) -> TradingEngine:
        """Build the whole graph. ``market_source`` is required for replay; ``exchange`` overrides the
        mode's exchange (tests); ``ai_cache`` defaults to the database (``ai_decisions``)."""
        mode = mode or settings.trading.mode
        if symbols:  # --symbols: the process's default, which a run-time setting may still change
            settings = with_value(settings, "trading.symbols", symbols)
        symbols = list(settings.trading.symbols)
        parts = EngineParts()
        if mode is TradingMode.REPLAY:
            if market_source is None:
                raise ConfigurationError(
                    "replay mode needs a ReplayMarketSource (scheduler_main.py --replay builds it)"
                )
            clock = clock or market_source.now
        clock = clock or _utc_now
        sessions = session_factory(db_engine)
        repository = SqlTradingRepository(sessions)
        if exchange is None:
            exchange = cls._exchange(settings, mode, sessions, market_source, clock, parts)
        fear_greed = None
        if mode is not TradingMode.REPLAY:
            fear_greed = FearGreedClient.from_settings(settings)
            parts.closers.append(fear_greed.close)
        timeframe = Timeframe.from_minutes(settings.trading.candle_interval_minutes)
        collector = DataCollector.from_settings(
            settings, exchange, fear_greed, candle_count=_candles_for_lookback(settings, timeframe)
        )
        metrics = metrics or SchedulerMetrics()
        notifier = notifier or NullNotifier()
        budget = AIBudget(
            repository,
            daily_usd=settings.ai.daily_budget_usd,
            monthly_usd=settings.ai.monthly_budget_usd,
            clock=clock,
            on_change=_budget_alert(notifier),
            observer=metrics,
        )
        ai = AIService(
            settings.ai,
            cache=ai_cache or DatabaseDecisionCache(repository),
            clock=clock,
            budget=budget,
            observer=metrics,
            recorder=DatabaseCallRecorder(repository),
        )
        parts.closers.append(ai.aclose)
        strategy = RuleBasedBreakoutStrategy()
        analyzer = Analyzer(
            strategy=strategy,
            ai=ai,
            validator=AIDecisionValidator.from_settings(settings),
            liquidity=LiquidityAnalyzer(settings.risk.max_slippage_pct, min_order_krw=settings.trading.min_order_krw),
            quick_filter=_quick_filter(settings, strategy, ai),
            ai_off_reason=_ai_off_reason(settings),
        )
        store = SqlRiskStore(sessions)
        risk = RiskManager(
            settings.risk,
            store,
            mode,
            clock,
            min_order_krw=settings.trading.min_order_krw,
            fee_rate=settings.trading.fee_rate,
        )
        positions = PositionService(store, settings.risk, mode, min_order_krw=settings.trading.min_order_krw)
        trading = TradingService(
            exchange,
            repository,
            mode=mode,
            instance=instance or settings.scheduler.instance_name,
            fee_rate=settings.trading.fee_rate,
            min_order_krw=settings.trading.min_order_krw,
            clock=clock,
            positions=ServicePositionBook(positions),
            notifier=notifier,
            observer=metrics,
            not_found_grace=timedelta(seconds=settings.trading.order_not_found_grace_seconds),
            poll_delay_seconds=0.0 if mode is not TradingMode.LIVE else 0.2,
        )
        pipeline = TradingPipeline(
            exchange=exchange,
            collector=collector,
            analyzer=analyzer,
            trading=trading,
            risk=risk,
            positions=positions,
            repository=repository,
            mode=mode,
            symbols=symbols,
            timeframe=timeframe,
            clock=clock,
            notifier=notifier,
            observer=metrics,
            starting_equity=await cls._starting_equity(settings, mode, sessions),
        )
        log.info(
            "engine.built",
            mode=mode.value,
            symbols=symbols,
            ai=("enabled" if ai.available else "disabled"),
            exchange=type(exchange).__name__,
        )
        return cls(
            settings=settings,
            mode=mode,
            symbols=symbols,
            pipeline=pipeline,
            sessions=sessions,
            bot=BotRepository(sessions),
            notifier=notifier,
            metrics=metrics,
            clock=clock,
            parts=parts,
            ai=ai,
        )

    async def configure(self, settings: Settings) -> None:
        """Use ``settings`` (the environment plus applied run-time settings) from the next job on: symbols, risk
        limits, exits of held positions, the AI switch and thresholds. The scheduler calls it between jobs."""
        previous = self.settings
        positions = self.pipeline.positions.with_config(settings.risk)
        if _exit_levels(previous) != _exit_levels(settings):  # first: the one step that may fail
            moved = await positions.apply_exit_levels()
            log.info("engine.exit_levels_moved", positions=[p.symbol for p in moved])
        self.settings = settings
        self.symbols = list(settings.trading.symbols)
        self.pipeline.symbols = list(settings.trading.symbols)
        self.pipeline.risk = self.pipeline.risk.with_config(settings.risk)
        self.pipeline.positions = positions
        self.pipeline.trading.positions = ServicePositionBook(positions)
        self.ai.use_config(settings.ai)
        analyzer = self.pipeline.analyzer
        analyzer.validator = AIDecisionValidator.from_settings(settings)
        analyzer.ai_off_reason = _ai_off_reason(settings)
        if analyzer.quick_filter is not None and previous.ai != settings.ai:  # its AI stage's minimum confidence
            analyzer.quick_filter = _quick_filter(settings, analyzer.quick_filter.rule_strategy, self.ai)

    @staticmethod
    def _exchange(
        settings: Settings,
        mode: TradingMode,
        sessions: async_sessionmaker[AsyncSession],
        market_source: ReplayMarketSource | None,
        clock: Clock,
        parts: EngineParts,
    ) -> IExchangeClient:
        if mode is TradingMode.LIVE:
            if not settings.upbit.has_keys:
                raise ConfigurationError(
                    "live mode requires UPBIT_ACCESS_KEY and UPBIT_SECRET_KEY; set both, or use --mode paper"
                )
            client = UpbitClient.from_settings(settings)
            parts.closers.append(client.close)
            return client
        store = SqlPaperAccountStore(sessions, PAPER_ACCOUNT[mode])
        if mode is TradingMode.REPLAY:
            assert market_source is not None
            return PaperExchange.from_settings(settings, market_source, store, clock=clock)
        quotes = UpbitClient(
            settings.upbit.base_url,
            timeout=settings.upbit.timeout_seconds,
            min_order_krw=settings.trading.min_order_krw,
        )
        parts.closers.append(quotes.close)
        return PaperExchange.from_settings(settings, quotes, store, clock=clock)

    @staticmethod
    async def _starting_equity(
        settings: Settings, mode: TradingMode, sessions: async_sessionmaker[AsyncSession]
    ) -> Decimal | None:
        """Paper and replay start from PAPER_STARTING_KRW; live from its first recorded snapshot."""
        if mode is not TradingMode.LIVE:
            return settings.trading.paper_starting_krw
        async with sessions() as session:
            return await session.scalar(
                select(PortfolioSnapshotRow.total_value_krw)
                .where(PortfolioSnapshotRow.mode == mode)
                .order_by(PortfolioSnapshotRow.created_at, PortfolioSnapshotRow.id)
                .limit(1)
            )

    # --- jobs ---------------------------------------------------------------------------------------
    @property
    def ai_available(self) -> bool:
        return self.pipeline.analyzer.ai_available

    @property
    def ai_off_reason(self) -> str | None:
        """Why the adviser is not asked now (settings, no key, budget reached), or None while it is."""
        return None if self.ai_available else self.pipeline.analyzer.ai_disabled_reason().removeprefix("disabled: ")

    @property
    def ai_budget(self) -> AIBudget | None:
        """The AI spend caps (run-time ``ai.daily_budget_usd`` / ``ai.monthly_budget_usd`` reach them through
        ``configure``)."""
        return self.ai.budget

    def guard_orders(self, guard: OrderGuard) -> None:
        """Every order from now on is sent only while ``guard`` (the single-trader lock) is held."""
        self.pipeline.trading.guard = guard

    async def start_up(self) -> None:
        """Settle whatever a previous run left pending before anything new is decided."""
        results = await self.pipeline.reconcile()
        if results:
            log.info("engine.start_up_reconciled", orders=len(results))

    async def trading_job(
        self,
        *,
        allow_buys: bool = True,
        dry_run: bool = False,
        stop_requested: Callable[[], bool] | None = None,
    ) -> list[CycleReport]:
        return await self.pipeline.run_cycle(dry_run=dry_run, allow_buys=allow_buys, stop_requested=stop_requested)

    async def position_job(self) -> list[ExitReport]:
        return await self.pipeline.check_positions()

    async def snapshot_job(self) -> PortfolioSnapshotRecord | None:
        """A snapshot, unless the trading cycle wrote one in the last minute (it ends with one)."""
        return await self.pipeline.snapshot(unless_within=SNAPSHOT_DEDUP)

    async def daily_report_job(self) -> DailyReport:
        report = await build_daily_report(self.sessions, self.mode, self.clock())
        self.notifier.notify(report.to_event())
        log.info("report.daily", trades=report.trades, equity=str(report.equity_krw), pnl=str(report.realized_pnl_krw))
        return report

    async def aclose(self) -> None:
        for close in reversed(self._parts.closers):
            try:
                await close()
            except Exception as exc:
                log.warning("engine.close_failed", error=str(exc))
        self._parts.closers.clear()


def _candles_for_lookback(settings: Settings, timeframe: str) -> int:
    """Enough candles for the quick filter's lookback (and never fewer than one request's worth)."""
    lookback_seconds = settings.backtest.quick_filter_lookback_days * 86_400
    return max(MAX_CANDLES_PER_REQUEST, math.ceil(lookback_seconds / Timeframe(timeframe).seconds) + 1)


def _exit_levels(settings: Settings) -> tuple[object, ...]:
    risk = settings.risk
    return risk.stop_loss_pct, risk.take_profit_pct, risk.trailing_stop_pct


def _budget_alert(notifier: Notifier) -> Callable[[BudgetChange], None]:
    """The budget's on/off transitions as notifier events (Telegram, the event stream)."""

    def alert(change: BudgetChange) -> None:
        fields = {
            "spent_day_usd": str(change.spent_usd[BudgetPeriod.DAY]),
            "daily_budget_usd": str(change.limits_usd[BudgetPeriod.DAY]),
            "spent_month_usd": str(change.spent_usd[BudgetPeriod.MONTH]),
            "monthly_budget_usd": str(change.limits_usd[BudgetPeriod.MONTH]),
        }
        if change.reason is None:
            event = NotificationEvent(EventKind.AI_BUDGET_RESTORED, "AI adviser back on (budget)", fields, at=change.at)
        else:
            fields = {"reason": change.reason, **fields}
            event = NotificationEvent(EventKind.AI_BUDGET_REACHED, "AI budget reached: AI off", fields, at=change.at)
        notifier.notify(event)

    return alert


def _quick_filter(settings: Settings, strategy: RuleBasedBreakoutStrategy, ai: AIService) -> QuickBacktestFilter:
    """The spec's two stages: the rule backtest, then (when a key is configured; the pipeline asks only while AI
    is on) the AI backtest with the minimum confidence in use. Its calls are counted, recorded and budgeted as
    ``filter`` calls."""
    ai_factory = None
    if ai.configured:
        adviser = ai.for_purpose(AIPurpose.FILTER)

        def ai_factory(symbol: str) -> AITradingStrategy:
            return AITradingStrategy(adviser, symbol, rule_strategy=strategy, min_confidence=settings.ai.min_confidence)

    return QuickBacktestFilter.from_settings(settings, ai_strategy_factory=ai_factory, rule_strategy=strategy)
