"""The composition root of the trading domain: the pipeline's object graph from settings plus adapters.

One definition for every world. ``TradingEngine.create`` (backend) picks the SQL adapters and the exchange by
mode and calls ``build_pipeline`` for the scheduler, replay and ``main.py``; the unit tests pass memory stores
and fakes; the benchmark does either. Nothing here knows SQL or HTTP: the caller chooses the adapters.
``apply_settings`` is the one definition of how run-time settings reach a built graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol

from src.ai.cache import DecisionCache
from src.ai.models import AIPurpose
from src.ai.service import AIService
from src.ai.usage import AIBudget, AICallRecorder, AISpendLedger, AIUsageObserver, BudgetChange, BudgetPeriod
from src.ai.validator import AIDecisionValidator
from src.api.interfaces import IExchangeClient
from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.quick_filter import QuickBacktestFilter
from src.config.settings import Settings
from src.data.collector import DataCollector
from src.data.fear_greed import FearGreedClient
from src.domain.events import EventKind, NotificationEvent, Notifier, NullNotifier
from src.domain.modes import TradingMode
from src.domain.timeframes import Timeframe
from src.position.service import PositionService
from src.risk.manager import RiskManager
from src.risk.store import RiskStore
from src.strategy.contract import Strategy
from src.strategy.registry import AI_STRATEGY, strategy_from_settings
from src.trading.liquidity import LiquidityAnalyzer
from src.trading.market_status import MarketStatusSource
from src.trading.pipeline.analysis import Analyzer
from src.trading.pipeline.market_gate import MarketGateConfig
from src.trading.pipeline.observer import PipelineObserver
from src.trading.pipeline.pipeline import TradingPipeline
from src.trading.pipeline.positions import ServicePositionBook
from src.trading.preflight import OrderPreflight, OrderTester
from src.trading.repository import ITradingRepository
from src.trading.service import TradingService
from src.utils.logger import get_logger

log = get_logger(__name__)

Clock = Callable[[], datetime]


class GraphObserver(PipelineObserver, AIUsageObserver, Protocol):
    """Every metrics hook of the graph: pipeline stages and decisions, executions, AI usage and budget
    (``SchedulerMetrics`` in the backend)."""


class _Default(Enum):
    FROM_SETTINGS = "from settings"


FROM_SETTINGS = _Default.FROM_SETTINGS


@dataclass(slots=True)
class PipelineAdapters:
    """The world the pipeline runs in, chosen by the caller.

    ``adviser``: a ready AI adviser (a fake in tests, an instant one in the benchmark); without one an
    ``AIService`` is built from ``settings.ai`` with ``ai_cache``, ``ai_recorder`` and a budget over ``ai_spend``.
    ``strategy`` defaults to the one the settings name (``strategy_from_settings``); ``quick_filter`` to the one
    the settings describe on that strategy (``None``: none, for tests of other stages).
    """

    exchange: IExchangeClient
    repository: ITradingRepository
    risk_store: RiskStore
    clock: Clock
    notifier: Notifier | None = None
    observer: GraphObserver | None = None
    fear_greed: FearGreedClient | None = None
    ai_cache: DecisionCache | None = None
    ai_recorder: AICallRecorder | None = None
    ai_spend: AISpendLedger | None = None
    adviser: Any = None
    strategy: Strategy | None = None
    quick_filter: Any = FROM_SETTINGS
    market_status: MarketStatusSource | None = None  # Upbit's market flags (live and paper); None in replay


def build_pipeline(
    settings: Settings,
    adapters: PipelineAdapters,
    *,
    mode: TradingMode | None = None,
    instance: str | None = None,
    starting_equity: Decimal | None = None,
) -> TradingPipeline:
    """The whole trading graph: data, analysis (strategy, AI, validator, liquidity, quick filter), risk,
    positions, execution. The strategy is the one the settings name (``TRADING_STRATEGY``, ``STRATEGY_PARAMS``,
    ``STRATEGY_PATH``; for ``ai`` the ``AI_CANDIDATE_STRATEGY`` plus the adviser): one that cannot be built is a
    ``ConfigurationError`` here, at start-up, never in a cycle. ``mode`` defaults to ``settings.trading.mode``,
    ``instance`` (the order identifiers' prefix) to the scheduler's instance name. Paper and replay start from
    ``PAPER_STARTING_KRW``; live from ``starting_equity`` (its first recorded snapshot, which the caller reads)."""
    mode = mode or settings.trading.mode
    clock = adapters.clock
    notifier = adapters.notifier or NullNotifier()
    observer = adapters.observer
    trading_config = settings.trading
    timeframe = Timeframe.from_minutes(trading_config.candle_interval_minutes)
    strategy = adapters.strategy or strategy_from_settings(settings)
    service = None if adapters.adviser is not None else _ai_service(settings, adapters, notifier)
    quick_filter = adapters.quick_filter
    if quick_filter is FROM_SETTINGS:
        quick_filter = quick_filter_for(settings, strategy, service)
    analyzer = Analyzer(
        strategy=strategy,
        ai=service or adapters.adviser,
        validator=AIDecisionValidator.from_settings(settings),
        liquidity=LiquidityAnalyzer(settings.risk.max_slippage_pct, min_order_krw=trading_config.min_order_krw),
        quick_filter=quick_filter,
        ai_off_reason=ai_off_reason(settings, needs_key=adapters.adviser is None),
        trades_with_ai=trades_with_ai(settings),
    )
    policy = strategy.exit_policy  # held positions exit by the trading strategy's rule, as in the backtest
    risk = RiskManager(
        settings.risk,
        adapters.risk_store,
        mode,
        clock,
        policy=policy,
        min_order_krw=trading_config.min_order_krw,
        fee_rate=trading_config.fee_rate,
    )
    positions = PositionService(adapters.risk_store, policy, mode, min_order_krw=trading_config.min_order_krw)
    trading = TradingService(
        adapters.exchange,
        adapters.repository,
        mode=mode,
        instance=instance or settings.scheduler.instance_name,
        fee_rate=trading_config.fee_rate,
        min_order_krw=trading_config.min_order_krw,
        clock=clock,
        positions=ServicePositionBook(positions),
        notifier=notifier,
        observer=observer,
        not_found_grace=timedelta(seconds=trading_config.order_not_found_grace_seconds),
        poll_delay_seconds=0.0 if mode is not TradingMode.LIVE else 0.2,
        # parts of an order beyond the 30 book levels wait for the book to refill; replay's book is synthetic
        part_delay_seconds=0.0 if mode is TradingMode.REPLAY else 1.0,
        preflight=order_preflight(adapters.exchange, mode),
    )
    collector = DataCollector.from_settings(settings, adapters.exchange, adapters.fear_greed, clock=clock)
    return TradingPipeline(
        exchange=adapters.exchange,
        collector=collector,
        analyzer=analyzer,
        trading=trading,
        risk=risk,
        positions=positions,
        repository=adapters.repository,
        mode=mode,
        symbols=list(trading_config.symbols),
        timeframe=timeframe,
        clock=clock,
        notifier=notifier,
        observer=observer,
        starting_equity=starting_equity if mode is TradingMode.LIVE else trading_config.paper_starting_krw,
        market_status=adapters.market_status,
        market_gate=market_gate_config(settings),
    )


def order_preflight(exchange: IExchangeClient, mode: TradingMode) -> OrderPreflight | None:
    """Test orders (``POST /v1/orders/test``) before the first order per market: live orders on Upbit only."""
    if mode is TradingMode.LIVE and isinstance(exchange, OrderTester):
        return OrderPreflight(exchange)
    return None


def market_gate_config(settings: Settings) -> MarketGateConfig:
    """``MARKET_WARNING_ACTION`` and ``MARKET_WARNING_STOP_PCT``."""
    return MarketGateConfig(settings.realtime.market_warning_action, settings.realtime.market_warning_stop_pct)


async def apply_settings(pipeline: TradingPipeline, previous: Settings, settings: Settings) -> None:
    """Use ``settings`` (the environment plus applied run-time settings) from the next job on: symbols, risk
    limits, the strategy and its parameters with its exits (of held positions too), the AI switch and thresholds
    (of the ``AIService`` the graph was built with). Call it between jobs. The steps that may fail come first
    (building the new strategy, then moving the exits of held positions), and then nothing else has changed."""
    strategy_changed = previous.strategy != settings.strategy
    strategy = strategy_from_settings(settings) if strategy_changed else None
    policy = strategy.exit_policy if strategy is not None else pipeline.positions.policy
    positions = pipeline.positions.with_policy(policy)
    if policy != pipeline.positions.policy:
        moved = await positions.apply_exit_levels()
        log.info("engine.exit_levels_moved", positions=[p.symbol for p in moved], policy=policy.describe())
    pipeline.symbols = list(settings.trading.symbols)
    pipeline.market_gate = market_gate_config(settings)
    pipeline.risk = pipeline.risk.with_config(settings.risk).with_policy(policy)
    pipeline.positions = positions
    pipeline.trading.positions = ServicePositionBook(positions)
    analyzer = pipeline.analyzer
    if analyzer.ai is not None:
        analyzer.ai.use_config(settings.ai)
    analyzer.validator = AIDecisionValidator.from_settings(settings)
    analyzer.ai_off_reason = ai_off_reason(settings)
    if strategy is not None:
        _use_strategy(analyzer, settings, strategy)
    elif analyzer.quick_filter is not None and previous.ai != settings.ai:  # its AI stage's minimum confidence
        analyzer.quick_filter = quick_filter_for(settings, analyzer.strategy, analyzer.ai)


def _use_strategy(analyzer: Analyzer, settings: Settings, strategy: Strategy) -> None:
    """The strategy swap of a run-time ``strategy.name``/``strategy.params`` change: the analyzer decides with
    the new strategy from the next cycle on, and the quick filter judges that strategy."""
    analyzer.strategy = strategy
    analyzer.trades_with_ai = trades_with_ai(settings)
    if analyzer.quick_filter is not None:
        analyzer.quick_filter = quick_filter_for(settings, strategy, analyzer.ai)
    log.info("engine.strategy_changed", strategy=settings.strategy.name, params=strategy.parameters())


def trades_with_ai(settings: Settings) -> bool:
    """``TRADING_STRATEGY=ai``: the adviser confirms the candidate strategy's entries."""
    return settings.strategy.name == AI_STRATEGY


def ai_off_reason(settings: Settings, *, needs_key: bool = True) -> str | None:
    """Why the settings keep the adviser off, or None. A ready adviser (tests) needs no key."""
    if not settings.ai.enabled:
        return "AI is off (AI_ENABLED or the run-time setting ai.enabled)"
    if needs_key and not settings.ai.has_key:
        return "no OPENAI_API_KEY configured"
    return None


def quick_filter_for(settings: Settings, strategy: Strategy, ai: AIService | None) -> QuickBacktestFilter:
    """The spec's two stages on exactly the strategy and parameters that trade: the rule backtest (always), then,
    only when the ``ai`` strategy trades and a key is configured, the AI backtest with the minimum confidence in
    use (the pipeline asks for it only while the adviser is available). Its calls are counted, recorded and
    budgeted as ``filter`` calls."""
    ai_factory = None
    if trades_with_ai(settings) and isinstance(ai, AIService) and ai.configured:
        adviser = ai.for_purpose(AIPurpose.FILTER)

        def ai_factory(symbol: str) -> AITradingStrategy:
            return AITradingStrategy(adviser, symbol, rule_strategy=strategy, min_confidence=settings.ai.min_confidence)

    return QuickBacktestFilter.from_settings(settings, ai_strategy_factory=ai_factory, rule_strategy=strategy)


def _ai_service(settings: Settings, adapters: PipelineAdapters, notifier: Notifier) -> AIService:
    budget = None
    if adapters.ai_spend is not None:
        budget = AIBudget(
            adapters.ai_spend,
            daily_usd=settings.ai.daily_budget_usd,
            monthly_usd=settings.ai.monthly_budget_usd,
            clock=adapters.clock,
            on_change=_budget_alert(notifier),
            observer=adapters.observer,
        )
    return AIService(
        settings.ai,
        cache=adapters.ai_cache,
        clock=adapters.clock,
        budget=budget,
        observer=adapters.observer,
        recorder=adapters.ai_recorder,
    )


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
