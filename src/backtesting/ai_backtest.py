"""The AI backtest as the bot's settings define it: candidate, validator, liquidity, quick filter, recorded decisions.

``backtest.py --strategy ai`` builds its strategy here, from the same settings the trading cycle reads:

- the candidate strategy ``AI_CANDIDATE_STRATEGY`` with ``STRATEGY_PARAMS`` (``src.strategy.registry``);
- the validator of ``RiskConfig`` (``VALIDATOR_*``, ``FLASH_CRASH_PCT``) and ``AI_MIN_CONFIDENCE``;
- the liquidity check (``LIQUIDITY_MAX_SLIPPAGE_PCT``, ``MIN_ORDER_KRW``) for a buy of ``POSITION_FRACTION_PCT``
  of the starting capital, on the replay fill model's book;
- the quick filter (``QUICK_FILTER_*``: its rule stage, and its AI stage when a key is configured), whose result
  the adviser sees in its context as it does live;
- or, with ``--decisions-from DATABASE_URL``, the decisions the bot recorded, by candle.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from src.ai.models import AIPurpose
from src.ai.validator import AIDecisionValidator
from src.backtesting.ai_strategy import AIDecisionStats, AITradingStrategy
from src.backtesting.quick_filter import QuickBacktestFilter
from src.backtesting.recorded_decisions import DecisionLoader
from src.config.settings import Settings
from src.strategy.contract import Strategy
from src.strategy.registry import build_strategy
from src.trading.liquidity import LiquidityAnalyzer

if TYPE_CHECKING:
    from src.ai.service import AIService

MISSING_SHOWN = 20  # missing decisions printed; the JSON lists them all


def ai_strategy_from_settings(
    settings: Settings,
    symbol: str,
    service: AIService | None,
    *,
    has_cache: bool,
    candidate: Strategy | None = None,
    min_confidence: Decimal | None = None,
    capital: Decimal | None = None,
    decision_loader: DecisionLoader | None = None,
    decisions_from: str | None = None,
) -> AITradingStrategy:
    """The AI strategy the trading cycle runs, for a backtest of ``symbol``. With ``decision_loader`` the
    recorded decisions are replayed (the model is not asked and the quick filter is not run: each record
    says what the bot did at that bar); ``decisions_from`` names their origin in the report."""
    config = settings.strategy
    candidate = candidate or build_strategy(config.candidate, config.params, config.path)
    confidence = min_confidence if min_confidence is not None else settings.ai.min_confidence
    capital = capital if capital is not None else settings.trading.paper_starting_krw
    order_krw = (capital * settings.risk.position_fraction_pct / 100).quantize(Decimal(1), rounding=ROUND_DOWN)
    quick_filter = None
    if decision_loader is None:
        quick_filter = QuickBacktestFilter.from_settings(
            settings,
            ai_strategy_factory=_filter_ai_stage(settings, candidate, service, has_cache),
            rule_strategy=candidate,
        )
    return AITradingStrategy(
        service,
        symbol,
        candidate,
        min_confidence=confidence,
        has_cache=has_cache,
        validator=AIDecisionValidator(settings.risk, min_confidence=confidence),
        liquidity=LiquidityAnalyzer(settings.risk.max_slippage_pct, min_order_krw=settings.trading.min_order_krw),
        order_krw=order_krw,
        quick_filter=quick_filter,
        lookback_days=settings.backtest.quick_filter_lookback_days,
        flash_crash_pct=settings.risk.flash_crash_pct,
        decision_loader=decision_loader,
        decisions_from=decisions_from,
    )


def _filter_ai_stage(
    settings: Settings, candidate: Strategy, service: AIService | None, has_cache: bool
) -> Callable[[str], AITradingStrategy] | None:
    """The quick filter's AI stage as the trading cycle builds it (``quick_filter_for``: with a key), or, offline,
    over the answers cache a keyed run recorded (what is not cached there is an unanswered hold)."""
    if service is None or not (service.configured or has_cache):
        return None
    adviser = service.for_purpose(AIPurpose.FILTER)

    def factory(symbol: str) -> AITradingStrategy:
        return AITradingStrategy(
            adviser,
            symbol,
            rule_strategy=candidate,
            min_confidence=settings.ai.min_confidence,
            require_answers=service.configured,
        )

    return factory


def print_ai_report(console: Console, stats: AIDecisionStats) -> None:
    """The AI part of a backtest report: how candidates were decided, vetoed, and which had no decision."""
    table = Table(title="AI decisions")
    table.add_column("")
    table.add_column("Value", justify="right")
    table.add_row("Candidate bars", str(stats.candidates))
    if stats.decisions_from is not None:
        table.add_row("Decisions replayed from", stats.decisions_from)
        table.add_row("Recorded decisions found", str(stats.recorded))
        table.add_row("Missing decisions (holds)", str(len(stats.missing_decisions)))
    else:
        table.add_row("Blocked by the quick filter", str(stats.blocked_by_filter))
        table.add_row("Answered (from cache)", f"{stats.answered} ({stats.from_cache})")
    table.add_row("Unanswered (holds)", str(stats.unanswered))
    table.add_row("Buys approved", str(stats.approved))
    for by, count in sorted(stats.vetoed.items()):
        table.add_row(f"Buys vetoed by the {by}", str(count))
    table.add_row("Liquidity", stats.liquidity)
    console.print(table)
    if stats.missing_decisions:
        shown = stats.missing_decisions[:MISSING_SHOWN]
        more = len(stats.missing_decisions) - len(shown)
        console.print(
            "No recorded decision for these candidate bars (treated as hold, never invented): "
            + ", ".join(f"{m['symbol']} {m['candle_at']}" for m in shown)
            + (f" and {more} more (all in the JSON report)" if more else "")
        )
