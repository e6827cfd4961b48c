"""The trading engine: the backend's adapters around the one object graph (``build_pipeline`` in
``src/trading/pipeline/compose.py``), and the jobs it runs.

The adapters are SQL repositories and stores (``backend/app/db``) and the exchange, chosen by mode: ``live`` ->
``UpbitClient`` with keys; ``paper`` -> ``PaperExchange`` over Upbit's public market data with the account in
``paper_balances``/``paper_orders``; ``replay`` -> ``PaperExchange`` over a ``ReplayMarketSource`` on a simulated
clock (account ``replay``). Everything else is the same object graph in every mode, trading the strategy the
settings name (``TRADING_STRATEGY``); a strategy that cannot be built stops ``create`` with one
``ConfigurationError`` (the entry points print it and exit non-zero).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.db.queries.portfolio import first_snapshot_equity
from backend.app.db.repositories.ai_cache import DatabaseCallRecorder, DatabaseDecisionCache
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.repositories.paper import SqlPaperAccountStore
from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.db.session import session_factory
from backend.app.services.reporting import DailyReport, build_daily_report
from backend.app.services.scheduler_metrics import SchedulerMetrics
from src.ai.cache import DecisionCache
from src.ai.service import AIService
from src.ai.usage import AIBudget
from src.api.interfaces import IExchangeClient
from src.api.paper_exchange import PaperExchange
from src.api.upbit_client import UpbitClient
from src.config.runtime_state import with_value
from src.config.settings import Settings
from src.data.fear_greed import FearGreedClient
from src.data.replay import ReplayMarketSource
from src.domain.events import NotificationEvent, Notifier, NullNotifier
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError
from src.risk.store import RiskState
from src.strategy.contract import Strategy
from src.trading.pipeline import CycleReport, ExitReport, TradingPipeline
from src.trading.pipeline.compose import FROM_SETTINGS, PipelineAdapters, apply_settings, build_pipeline
from src.trading.pipeline.market_gate import MarketFlagAction
from src.trading.pipeline.realtime_exits import RealtimeExits
from src.trading.ports import OrderGuard
from src.trading.private_events import PrivateEvents, Refresh
from src.trading.repository import PortfolioSnapshotRecord
from src.utils.logger import get_logger

log = get_logger(__name__)

Clock = Callable[[], datetime]
SNAPSHOT_DEDUP = timedelta(minutes=1)
HEARTBEAT_EVENTS_KEPT = timedelta(days=7)  # older heartbeat events are deleted by the daily report job
PAPER_ACCOUNT = {TradingMode.PAPER: "paper", TradingMode.REPLAY: "replay"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class EngineParts:
    """What the engine owns and must close."""

    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


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
        self.private_stream_status = "off: not started"  # the private stream, as the heartbeat reports it
        # the real-time exits of this account: fed by the scheduler's PriceWatch (WebSocket, REST fallback) or by
        # replay's candles; the scheduler's JobRunner gives it the work lock and the desired state
        self.watcher = RealtimeExits(pipeline)

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
        strategy: Strategy | None = None,
        quick_filter: Any = FROM_SETTINGS,
    ) -> TradingEngine:
        """The backend's adapters (SQL repositories and stores, the exchange by mode) around the one graph
        (``build_pipeline``). ``market_source`` is required for replay; ``exchange`` overrides the mode's
        exchange (tests); ``ai_cache`` defaults to the database (``ai_decisions``); ``strategy`` and ``quick_filter``
        replace the settings' strategy and quick filter (tests; ``quick_filter=None``: none)."""
        mode = mode or settings.trading.mode
        if symbols:  # --symbols: the process's default, which a run-time setting may still change
            settings = with_value(settings, "trading.symbols", symbols)
        parts = EngineParts()
        if mode is TradingMode.REPLAY:
            if market_source is None:
                raise ConfigurationError(
                    "replay mode needs a ReplayMarketSource (scheduler_main.py --replay builds it)"
                )
            clock = clock or market_source.now
        clock = clock or _utc_now
        sessions = session_factory(db_engine)
        repository = SqlTradingRepository(sessions, mode)
        market_status = exchange if isinstance(exchange, UpbitClient) else None
        if exchange is None:
            exchange, market_status = cls._exchange(settings, mode, sessions, market_source, clock, parts)
        fear_greed = None
        if mode is not TradingMode.REPLAY:
            fear_greed = FearGreedClient.from_settings(settings)
            parts.closers.append(fear_greed.close)
        metrics = metrics or SchedulerMetrics()
        metrics.expect_trades_in(list(symbols or settings.trading.symbols))
        notifier = notifier or NullNotifier()
        adapters = PipelineAdapters(
            exchange=exchange,
            repository=repository,
            risk_store=SqlRiskStore(sessions),
            clock=clock,
            notifier=notifier,
            observer=metrics,
            fear_greed=fear_greed,
            ai_cache=ai_cache or DatabaseDecisionCache(repository),
            ai_recorder=DatabaseCallRecorder(repository),
            ai_spend=repository,
            strategy=strategy,
            quick_filter=quick_filter,
            market_status=market_status,
        )
        starting_equity = None
        if mode is TradingMode.LIVE:
            async with sessions() as session:
                starting_equity = await first_snapshot_equity(session, mode)
        pipeline = build_pipeline(settings, adapters, mode=mode, instance=instance, starting_equity=starting_equity)
        ai = pipeline.analyzer.ai
        assert ai is not None  # built from settings.ai: an AIService
        parts.closers.append(ai.aclose)
        log.info(
            "engine.built",
            mode=mode.value,
            symbols=pipeline.symbols,
            strategy=pipeline.analyzer.strategy.name,
            trades_with_ai=pipeline.analyzer.trades_with_ai,
            ai=("enabled" if ai.available else "disabled"),
            exchange=type(exchange).__name__,
        )
        return cls(
            settings=settings,
            mode=mode,
            symbols=list(pipeline.symbols),
            pipeline=pipeline,
            sessions=sessions,
            bot=BotRepository(sessions, mode),
            notifier=notifier,
            metrics=metrics,
            clock=clock,
            parts=parts,
            ai=ai,
        )

    async def configure(self, settings: Settings) -> None:
        """Use ``settings`` (the environment plus applied run-time settings) from the next job on: symbols, risk
        limits, exits of held positions, the strategy and its parameters, the AI switch and thresholds. The
        scheduler calls it between jobs; a strategy that cannot be built raises and nothing changes."""
        await apply_settings(self.pipeline, self.settings, settings)
        self.settings = settings
        self.symbols = list(settings.trading.symbols)

    @staticmethod
    def _exchange(
        settings: Settings,
        mode: TradingMode,
        sessions: async_sessionmaker[AsyncSession],
        market_source: ReplayMarketSource | None,
        clock: Clock,
        parts: EngineParts,
    ) -> tuple[IExchangeClient, UpbitClient | None]:
        """The mode's exchange, and the client that reads Upbit's market flags (the public market list: live and
        paper; none in replay, which has no flags)."""
        if mode is TradingMode.LIVE:
            if not settings.upbit.has_keys:
                raise ConfigurationError(
                    "live mode requires UPBIT_ACCESS_KEY and UPBIT_SECRET_KEY; set both, or use --mode paper"
                )
            client = UpbitClient.from_settings(settings)
            parts.closers.append(client.close)
            return client, client
        store = SqlPaperAccountStore(sessions, PAPER_ACCOUNT[mode])
        if mode is TradingMode.REPLAY:
            assert market_source is not None
            return PaperExchange.from_settings(settings, market_source, store, clock=clock), None
        quotes = UpbitClient(  # public quotes and the exchange's tick sizes for the paper account
            settings.upbit.base_url,
            timeout=settings.upbit.timeout_seconds,
            min_order_krw=settings.trading.min_order_krw,
            instruments_refresh_hours=settings.realtime.instruments_refresh_hours,
        )
        parts.closers.append(quotes.close)
        return PaperExchange.from_settings(settings, quotes, store, clock=clock), quotes

    # --- jobs ---------------------------------------------------------------------------------------
    @property
    def ai_available(self) -> bool:
        return self.pipeline.analyzer.ai_available

    @property
    def strategy_label(self) -> str:
        """The strategy that trades, as reports show it: ``rule_breakout``, ``volatility_breakout {"k": 0.6}``,
        ``ai (candidate rule_breakout)``."""
        config = self.settings.strategy
        name = self.pipeline.analyzer.strategy.name
        label = f"ai (candidate {name})" if self.pipeline.analyzer.trades_with_ai else name
        return f"{label} {json.dumps(config.params, sort_keys=True)}" if config.params else label

    @property
    def ai_off_reason(self) -> str | None:
        """Why the adviser is not asked now (settings, no key, budget reached), or None while it is."""
        return None if self.ai_available else self.pipeline.analyzer.ai_disabled_reason().removeprefix("disabled: ")

    @property
    def ai_budget(self) -> AIBudget | None:
        """The AI spend caps (run-time ``ai.daily_budget_usd`` / ``ai.monthly_budget_usd`` reach them through
        ``configure``)."""
        return self.ai.budget

    async def risk_state(self) -> RiskState:
        """Circuit breakers and safe mode of this mode, as stored."""
        return await self.pipeline.risk.risk_state()

    async def reset_safe_mode(self, by: str, reason: str, *, requested_at: datetime) -> NotificationEvent | None:
        """An operator's reset request: ends safe mode unless the request is older than it (then ``None``)."""
        return await self.pipeline.risk.reset_safe_mode(by, reason, requested_at=requested_at)

    async def log_event(self, level: str, message: str, context: dict[str, Any]) -> None:
        """A ``system_logs`` row."""
        await self.pipeline.repository.log_event(level, message, context)

    def guard_orders(self, guard: OrderGuard) -> None:
        """Every order from now on is sent only while ``guard`` (the single-trader lock) is held."""
        self.pipeline.trading.guard = guard

    async def start_up(self) -> None:
        """Settle whatever a previous run left pending before anything new is decided, and read Upbit's market
        flags so the gate holds from the first cycle (held coins are acted on by the market-status job)."""
        results = await self.pipeline.reconcile()
        if results:
            log.info("engine.start_up_reconciled", orders=len(results))
        await self.pipeline.refresh_market_flags(act=False)  # the gate holds from the first cycle on

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

    @property
    def has_market_flags(self) -> bool:
        """Upbit's market flags are read (live and paper); replay has none."""
        return self.pipeline.market_status is not None

    async def market_status_job(self, *, act: bool = True) -> list[MarketFlagAction]:
        """Upbit's market flags afresh (every ``MARKET_STATUS_REFRESH_MINUTES`` and on each announcement); held
        coins that are flagged get ``MARKET_WARNING_ACTION`` unless ``act`` is False (the bot is stopped)."""
        return await self.pipeline.refresh_market_flags(act=act)

    def private_events(self, *, lock: asyncio.Lock, refresh: Refresh | None) -> PrivateEvents:
        """The private stream's consumer for this account: myOrder settles orders in live mode only (a paper
        account's orders never reach Upbit); announcements are recorded and alerted in both."""
        trading = self.pipeline.trading
        return PrivateEvents(
            trading=trading,
            repository=self.pipeline.repository,
            notifier=self.notifier,
            clock=self.clock,
            settle_orders=self.mode is TradingMode.LIVE,
            refresh=refresh,
            preflight=trading.preflight,
            lock=lock,
        )

    async def snapshot_job(self) -> PortfolioSnapshotRecord | None:
        """A snapshot, unless the trading cycle wrote one in the last minute (it ends with one)."""
        return await self.pipeline.snapshot(unless_within=SNAPSHOT_DEDUP)

    async def daily_report_job(self) -> DailyReport:
        report = await build_daily_report(self.sessions, self.mode, self.clock())
        self.notifier.notify(report.to_event())
        log.info("report.daily", trades=report.trades, equity=str(report.equity_krw), pnl=str(report.realized_pnl_krw))
        try:  # wall-clock time: events are dated when written, also in a replay
            pruned = await self.bot.prune_heartbeat_events(datetime.now(UTC) - HEARTBEAT_EVENTS_KEPT)
            log.info("events.pruned", heartbeats=pruned)
        except Exception as exc:  # housekeeping; the report is made
            log.warning("events.prune_failed", error=f"{type(exc).__name__}: {exc}")
        return report

    async def aclose(self) -> None:
        for close in reversed(self._parts.closers):
            try:
                await close()
            except Exception as exc:
                log.warning("engine.close_failed", error=str(exc))
        self._parts.closers.clear()
