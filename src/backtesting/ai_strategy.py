"""The AI strategy: the candidate strategy's entry bars, confirmed by the adviser, as the bot trades them.

For every entry bar of the candidate strategy (``AI_CANDIDATE_STRATEGY``, default ``rule_breakout``) the
strategy does, before the portfolio loop runs and in time order, what the bot's trading cycle does at that
bar's close:

1. the market as the replay bot sees it at ``T = candle open + bar``: the last ``history_bars`` complete
   candles, the price (that bar's close), the orderbook of the replay fill model and the flash-crash check,
   collected by the same ``DataCollector`` over a ``ReplayMarketSource`` of the backtest's candles;
2. the quick filter (when given): failed means hold, the adviser is not asked;
3. the adviser's answer to the context of ``src.ai.context.build_market_context`` (the one builder the live
   analysis stage uses), or the decision the bot recorded for that candle (``RecordedDecisions``);
4. a buy goes ahead only when the validator (minimum confidence, RSI, ATR, fakeout, flash crash) has no
   objection and the liquidity check passes on the replay fill model's book for the order size given.

Exits are the candidate's exit policy and exit signals. Through the AI service's decision cache a repeated
backtest replays the same answers, deterministically and for free.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
import pandas as pd

from src.ai.context import build_market_context
from src.ai.service import AIDecision, MarketContext
from src.ai.validator import DEFAULT_MIN_CONFIDENCE, AIDecisionValidator
from src.backtesting.performance import bar_seconds
from src.backtesting.recorded_decisions import DecisionLoader, RecordedDecisions
from src.config.trading_groups import RiskConfig
from src.data.collector import DataCollector, MarketSnapshot, detect_flash_crash
from src.data.replay import ReplayMarketSource
from src.domain.decisions import Decision, DecisionSource
from src.domain.exits import ExitPolicy
from src.domain.orders import Side
from src.domain.timeframes import Timeframe
from src.exceptions import ConfigurationError, DataError
from src.strategy.bundled import RuleBasedBreakoutStrategy
from src.strategy.contract import WARMUP_BARS, Strategy, StrategySignals, history_bars
from src.trading.liquidity import LiquidityAnalyzer
from src.utils.logger import get_logger

log = get_logger(__name__)

DEFAULT_LOOKBACK_DAYS = 30  # QUICK_FILTER_LOOKBACK_DAYS' default: the bot reads history_bars(30 days) candles
VALIDATOR = "validator"
LIQUIDITY = "liquidity"


class Adviser(Protocol):
    """What the strategy needs of ``AIService``."""

    @property
    def available(self) -> bool: ...

    async def decide(self, context: MarketContext) -> AIDecision: ...


class QuickFilter(Protocol):
    """What the strategy needs of ``QuickBacktestFilter`` (its result has ``to_dict()``)."""

    async def aevaluate(self, symbol: str, df: pd.DataFrame) -> Any: ...


@dataclass(frozen=True, slots=True)
class CandidateOutcome:
    """What became of one candidate bar."""

    candle_at: datetime
    decision: Decision  # the adviser's answer (or the recorded one); hold when it was not asked
    source: DecisionSource | None  # None: no recorded decision for this candle
    confidence: Decimal | None
    approved: bool
    vetoed_by: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    prompt_hash: str | None = None  # of the context the adviser answered (a recorded decision: as recorded)


@dataclass(slots=True)
class AIDecisionStats:
    candidates: int = 0
    answered: int = 0  # real answers: from the model now, from the cache, or recorded ai/cache decisions
    from_cache: int = 0
    unanswered: int = 0  # disabled / fallback holds, recorded decisions made without the adviser
    blocked_by_filter: int = 0  # the quick filter failed: the adviser was not asked (as live)
    approved: int = 0  # buys that passed the validator and the liquidity check
    vetoed: dict[str, int] = field(default_factory=dict)  # buys turned into holds, by who
    liquidity: str = "not checked"  # how the liquidity check ran (or why it did not)
    decisions_from: str | None = None  # where recorded decisions came from (None: the adviser was asked)
    recorded: int = 0  # candidates with a recorded decision
    missing_decisions: list[dict[str, str]] = field(default_factory=list)  # candidates without one (holds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "answered": self.answered,
            "from_cache": self.from_cache,
            "unanswered": self.unanswered,
            "blocked_by_filter": self.blocked_by_filter,
            "approved": self.approved,
            "vetoed": dict(self.vetoed),
            "liquidity": self.liquidity,
            "decisions_from": self.decisions_from,
            "recorded": self.recorded,
            "missing_decisions": list(self.missing_decisions),
        }


class AITradingStrategy(Strategy):
    name = "ai"

    def __init__(
        self,
        adviser: Adviser | None,
        symbol: str,
        rule_strategy: Strategy | None = None,
        min_confidence: Decimal = DEFAULT_MIN_CONFIDENCE,
        has_cache: bool = True,
        *,
        validator: AIDecisionValidator | None = None,
        liquidity: LiquidityAnalyzer | None = None,
        order_krw: Decimal | None = None,
        quick_filter: QuickFilter | None = None,
        lookback_days: int = DEFAULT_LOOKBACK_DAYS,
        flash_crash_pct: Decimal | None = None,
        recorded: RecordedDecisions | None = None,
        decision_loader: DecisionLoader | None = None,
        decisions_from: str | None = None,
        require_answers: bool = True,
    ) -> None:
        replaying = recorded is not None or decision_loader is not None
        if not replaying and (adviser is None or (not adviser.available and not has_cache)):
            raise ConfigurationError(
                "the AI strategy needs OPENAI_API_KEY (to ask the model), a decision cache (to replay answers) "
                "or recorded decisions (--decisions-from); none is configured"
            )
        self.adviser = adviser
        self.symbol = symbol
        self.rule_strategy = rule_strategy or RuleBasedBreakoutStrategy()
        self.params = dict(self.rule_strategy.params)
        self.min_confidence = min_confidence
        risk = RiskConfig() if validator is None or flash_crash_pct is None else None  # the environment's
        self.validator = validator or AIDecisionValidator(risk or RiskConfig(), min_confidence=min_confidence)
        crash_pct = flash_crash_pct if flash_crash_pct is not None else (risk or RiskConfig()).flash_crash_pct
        self.flash_crash_pct = crash_pct
        self.liquidity = liquidity
        self.order_krw = order_krw
        self.quick_filter = quick_filter
        self.lookback_days = lookback_days
        self.recorded = recorded
        self.decision_loader = decision_loader
        self.decisions_from = decisions_from
        # Without a key, a backtest none of whose answers is cached is a configuration error; the quick filter's
        # AI stage inside an offline backtest instead just fails (its unanswered candidates are holds).
        self.require_answers = require_answers
        self.outcomes: dict[pd.Timestamp, CandidateOutcome] = {}
        self.stats = AIDecisionStats()

    def parameters(self) -> dict[str, Any]:
        return {
            "min_confidence": str(self.min_confidence),
            "candidate": self.rule_strategy.name,
            "rule": self.rule_strategy.parameters(),
        }

    async def prepare(self, df: pd.DataFrame, progress: Callable[[int, int], None] | None = None) -> AIDecisionStats:
        """Decide every candidate entry bar of ``df`` as the bot would, in time order; ``progress(done, total)``
        is told after each one."""
        rule = self.rule_strategy.generate_signals(df)
        candidates = np.nonzero(rule.entry)[0]
        seconds = round(bar_seconds(df.index))
        if self.recorded is None and self.decision_loader is not None and len(df):
            end = df.index[-1].to_pydatetime() + timedelta(seconds=seconds)
            self.recorded = await RecordedDecisions.load(
                self.decision_loader, self.symbol, df.index[0].to_pydatetime(), end, self.decisions_from or "database"
            )
        market = _ReplayMarket.over(self.symbol, df, seconds, self._history_bars(seconds), self.flash_crash_pct)
        stats = AIDecisionStats(
            candidates=len(candidates),
            liquidity=self._liquidity_mode(market),
            decisions_from=None if self.recorded is None else self.recorded.origin,
        )
        could_ask = self.adviser is not None and self.adviser.available  # an AI budget may run out mid-loop
        vetoes: Counter[str] = Counter()
        for done, row in enumerate(candidates, 1):
            outcome = await self._decide(df, int(row), seconds, market, stats)
            self.outcomes[df.index[row]] = outcome
            vetoes.update(outcome.vetoed_by)
            stats.approved += outcome.approved
            if progress is not None:
                progress(done, len(candidates))
        stats.vetoed = dict(vetoes)
        self.stats = stats
        asked = stats.candidates - stats.blocked_by_filter
        if self.require_answers and self.recorded is None and asked and stats.answered == 0 and not could_ask:
            raise ConfigurationError(
                f"no OPENAI_API_KEY and none of the {asked} AI decisions this backtest needs is in the "
                "decision cache; set the key once to record them, or point to a cache that holds them"
            )
        summary = {k: v for k, v in stats.to_dict().items() if k != "missing_decisions"}
        log.info("ai_backtest.decisions", symbol=self.symbol, missing=len(stats.missing_decisions), **summary)
        return stats

    async def _decide(
        self, df: pd.DataFrame, row: int, seconds: int, market: _ReplayMarket, stats: AIDecisionStats
    ) -> CandidateOutcome:
        candle = df.index[row]
        candle_at = pd.Timestamp(candle).to_pydatetime()
        snapshot = await market.at(candle_at + timedelta(seconds=seconds), df, row)
        candles = snapshot.candles[market.timeframe] if snapshot is not None else market.window(df, row)
        quick = None
        if self.quick_filter is not None and self.recorded is None:
            quick = (await self.quick_filter.aevaluate(self.symbol, candles)).to_dict()
            if not quick.get("passed"):
                stats.blocked_by_filter += 1
                return CandidateOutcome(candle_at, Decision.HOLD, DecisionSource.FILTER, None, approved=False)
        context = build_market_context(
            self.symbol,
            candles,
            bar_seconds=seconds,
            price=float(snapshot.price) if snapshot is not None else float(df["close"].iloc[row]),
            strategy_last=self.rule_strategy.generate_signals(candles).latest(),
            orderbook_summary=snapshot.orderbook_payload() if snapshot is not None else None,
            position=None,  # the adviser is asked only when flat
            fear_greed=snapshot.fear_greed_payload() if snapshot is not None else None,
            quick_filter=quick,
        )
        answer = await self._answer(context, candle_at, stats)
        if answer is None:
            return CandidateOutcome(candle_at, Decision.HOLD, None, None, approved=False)
        if answer.source in (DecisionSource.AI, DecisionSource.CACHE):
            stats.answered += 1
            stats.from_cache += answer.source is DecisionSource.CACHE
        else:
            stats.unanswered += 1
        if answer.decision is not Decision.BUY:
            return CandidateOutcome(
                candle_at, answer.decision, answer.source, answer.confidence, False, prompt_hash=answer.prompt_hash
            )
        flash_crash = snapshot.flash_crash if snapshot is not None else market.flash_crash(candles)
        reasons = list(self.validator.buy_objections(answer.confidence, context.indicators, flash_crash))
        if answer.confidence < self.min_confidence and not any("confidence" in r for r in reasons):
            reasons.append(f"confidence {answer.confidence} below minimum {self.min_confidence}")
        vetoed_by = [VALIDATOR] if reasons else []
        if not reasons and snapshot is not None and snapshot.orderbook is not None:
            liquidity = self._liquidity_objection(snapshot)
            if liquidity:
                reasons.append(liquidity)
                vetoed_by.append(LIQUIDITY)
        return CandidateOutcome(
            candle_at,
            answer.decision,
            answer.source,
            answer.confidence,
            approved=not reasons,
            vetoed_by=tuple(vetoed_by),
            reasons=tuple(reasons),
            prompt_hash=answer.prompt_hash,
        )

    async def _answer(self, context: MarketContext, candle_at: datetime, stats: AIDecisionStats) -> AIDecision | None:
        if self.recorded is None:
            assert self.adviser is not None
            return await self.adviser.decide(context)
        recorded = self.recorded.get(candle_at)
        if recorded is None:
            stats.missing_decisions.append({"symbol": self.symbol, "candle_at": candle_at.isoformat()})
            return None
        stats.recorded += 1
        return recorded.as_answer()

    def _liquidity_mode(self, market: _ReplayMarket) -> str:
        if self.liquidity is None or self.order_krw is None or self.order_krw <= 0:
            return "not checked: no liquidity analyzer or order size given"
        if not market.has_book:
            return f"not checked: no orderbook known ({market.why_no_book})"
        return (
            f"checked on the replay fill model's book (ReplayMarketSource defaults) for a buy of "
            f"{self.order_krw} KRW, max slippage {self.liquidity.max_slippage_pct}%"
        )

    def _liquidity_objection(self, snapshot: MarketSnapshot) -> str | None:
        if self.liquidity is None or self.order_krw is None or self.order_krw <= 0 or snapshot.orderbook is None:
            return None
        assessment = self.liquidity.assess(snapshot.orderbook, Side.BUY, krw_amount=self.order_krw)
        return None if assessment.allowed else f"liquidity: {assessment.reason}"

    def _history_bars(self, seconds: int) -> int:
        return history_bars(self.lookback_days, seconds) if seconds > 0 else WARMUP_BARS

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        rule = self.rule_strategy.generate_signals(df)
        candidates = np.nonzero(rule.entry)[0]
        if any(df.index[row] not in self.outcomes for row in candidates):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self.prepare(df))
            else:
                raise DataError("AITradingStrategy: await prepare(df) before generate_signals inside an event loop")
        approved = np.zeros(len(df), dtype=np.bool_)
        for row in candidates:
            approved[row] = self.outcomes[df.index[row]].approved
        return StrategySignals(df.index, approved, rule.exit, rule.atr, {**rule.details, "rule_buy": rule.entry})

    @property
    def exit_policy(self) -> ExitPolicy:
        return self.rule_strategy.exit_policy


class _ReplayMarket:
    """The market as the replay bot collects it at a bar's close: the same collector over the same source."""

    def __init__(
        self,
        symbol: str,
        timeframe: str | None,
        count: int,
        source: ReplayMarketSource | None,
        flash_crash_pct: Decimal,
        why_no_book: str = "",
    ) -> None:
        self.symbol = symbol
        self.timeframe = timeframe or ""
        self.count = count
        self.source = source
        self.flash_crash_pct = flash_crash_pct
        self.why_no_book = why_no_book
        self.collector = (
            DataCollector(source, None, flash_crash_pct=flash_crash_pct, candle_count=count)
            if source is not None
            else None
        )

    @classmethod
    def over(cls, symbol: str, df: pd.DataFrame, seconds: int, count: int, flash_crash_pct: Decimal) -> _ReplayMarket:
        timeframe = Timeframe.from_seconds(seconds)
        if timeframe is None:
            return cls(symbol, None, count, None, flash_crash_pct, f"bars of {seconds}s are no Upbit timeframe")
        if df.empty:
            return cls(symbol, timeframe.value, count, None, flash_crash_pct, "no candles")
        try:
            source = ReplayMarketSource({symbol: {timeframe.value: df}}, start=df.index[0].to_pydatetime())
        except (DataError, ValueError, KeyError) as exc:
            return cls(symbol, timeframe.value, count, None, flash_crash_pct, f"{type(exc).__name__}: {exc}")
        return cls(symbol, timeframe.value, count, source, flash_crash_pct)

    @property
    def has_book(self) -> bool:
        return self.source is not None

    def window(self, df: pd.DataFrame, row: int) -> pd.DataFrame:
        return df.iloc[max(0, row + 1 - self.count) : row + 1]

    def flash_crash(self, candles: pd.DataFrame) -> bool:
        return detect_flash_crash(candles, self.flash_crash_pct)

    async def at(self, moment: datetime, df: pd.DataFrame, row: int) -> MarketSnapshot | None:
        if self.source is None or self.collector is None:
            return None
        self.source.advance_to(moment)
        return await self.collector.collect(self.symbol, [self.timeframe])
