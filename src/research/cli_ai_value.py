"""``python backtest.py ai-value [--symbols KRW-BTC,KRW-ETH] --start ... --end ... [--decisions-from URL | --ai-cache
FILE] --json OUT``: rules only, rules + AI and buy-and-hold over the same candles, the bootstrap intervals of their
differences, the AI's cost for the period, and the split by market regime; the model's training cut-off
(``AI_TRAINING_CUTOFF`` or ``--training-cutoff``) keeps possibly contaminated candles out of the headline.

The AI's decisions are replayed, never asked for, unless ``--ask-model``: from the decision cache
(``--ai-cache``, default ``BACKTEST_DATA_DIR/ai_cache/decisions.jsonl``) or from the decisions the bot recorded
(``--decisions-from DATABASE_URL``). Neither needs an OpenAI key. See docs/RESEARCH.md."""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.backtester import BacktestResult
from src.backtesting.cli_options import finite, moment, percent, symbol_of
from src.backtesting.performance import bar_seconds
from src.backtesting.runner import BacktestRequest, Simulated, simulate
from src.config.settings import Settings
from src.domain.research_runs import ResearchKind
from src.exceptions import ConfigurationError, DataError
from src.research.ai_value import AIValueOptions, SymbolRun, Variant, analyse, buy_and_hold_equity, classify_regimes
from src.research.cli_support import (
    ResearchContext,
    ResearchOutcome,
    backtest_request,
    finish,
    parse_research_args,
    progress_bar,
    request_record,
    research_parser,
)
from src.strategy.registry import AI_STRATEGY

MAX_SYMBOLS = 20
_SYMBOL = re.compile(r"^[A-Z]{2,5}-[A-Z0-9]{1,15}$")


def _symbols(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if not _SYMBOL.match(name)]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected markets such as KRW-BTC,KRW-ETH, got {text!r}")
    if len(names) > MAX_SYMBOLS or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected 1..{MAX_SYMBOLS} different markets, got {text!r}")
    return names


def _count(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high:,}, got {text}")
        return value

    return parse


def _positive_days(text: str) -> float:
    value = finite(text)
    if not 0 < value <= 3650:
        raise argparse.ArgumentTypeError(f"must be in (0, 3650] days, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = research_parser(
        "ai-value",
        "Does the AI add value? Rules only, rules + AI (replayed decisions) and buy-and-hold side by side, with "
        "bootstrap intervals, the AI's cost and the split by market regime.",
        strategy_required=False,
        strategy_help="the candidate strategy the AI confirms (default AI_CANDIDATE_STRATEGY)",
    )
    parser.add_argument("--symbols", type=_symbols, help="several markets, pooled equal-weight (e.g. KRW-BTC,KRW-ETH)")
    parser.add_argument("--ai-cache", type=Path, help="AI decision cache (JSON lines) to replay")
    parser.add_argument(
        "--decisions-from",
        metavar="DATABASE_URL",
        help="replay the decisions the bot recorded in this database (by candle) instead of the cache",
    )
    parser.add_argument(
        "--ask-model",
        action="store_true",
        help="ask the model (OPENAI_API_KEY; costs money) for decisions the cache lacks; off: never called",
    )
    parser.add_argument(
        "--min-confidence", type=percent, help="AI confidence needed to buy (default AI_MIN_CONFIDENCE)"
    )
    parser.add_argument(
        "--training-cutoff",
        type=moment,
        help="the model's training cut-off (default AI_TRAINING_CUTOFF): earlier candles are possibly contaminated",
    )
    parser.add_argument("--bootstrap", type=_count(100, 100_000), default=2000, help="bootstrap resamples (2000)")
    parser.add_argument("--seed", type=_count(0, 2**62), help="random seed of the bootstrap")
    parser.add_argument("--regime-days", type=_positive_days, default=30.0, help="regime look-back in days (30)")
    parser.add_argument(
        "--regime-threshold", type=percent, default=5.0, help="trailing return (%%) that makes a trend (5)"
    )
    return parser


def _offline(settings: Settings, ask_model: bool) -> Settings:
    """Without ``--ask-model`` the AI service has no key: a decision not in the cache is a hold, never a call."""
    if ask_model:
        if not settings.ai.has_key:
            raise ConfigurationError("--ask-model needs OPENAI_API_KEY")
        return settings
    return settings.model_copy(update={"ai": settings.ai.model_copy(update={"api_key": None})})


def _with_candidate(settings: Settings, candidate: str, params: dict[str, Any]) -> tuple[Settings, dict[str, Any]]:
    """The settings whose strategy is the candidate (the rules-only run) and whose AI candidate is the same, and
    the parameters both runs use: ``STRATEGY_PARAMS`` when the bot trades that candidate (or ai), then --params."""
    config = settings.strategy
    base = dict(config.params) if config.name in (candidate, AI_STRATEGY) else {}
    effective = {**base, **params}
    strategy = config.model_copy(update={"name": candidate, "candidate": candidate, "params": {}})
    return settings.model_copy(update={"strategy": strategy}), effective


def _cutoff(args: argparse.Namespace, settings: Settings) -> datetime | None:
    if args.training_cutoff is None:
        return settings.ai.training_cutoff
    stamp = pd.Timestamp(args.training_cutoff)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def run(argv: list[str], context: ResearchContext) -> int:
    parser = build_parser()
    args = parse_research_args(parser, argv)
    if args.symbols and args.data is not None:
        parser.error("--data is one market's candles; use --symbol with it, not --symbols")
    if args.symbols and args.symbol:
        parser.error("use either --symbol or --symbols")
    if args.decisions_from and args.ask_model:
        parser.error("--decisions-from replays what the bot decided; --ask-model does not go with it")
    symbols = args.symbols or [symbol_of(args)]
    settings = context.settings
    candidate = args.strategy or settings.strategy.candidate
    base, params = _with_candidate(_offline(settings, args.ask_model), candidate, dict(args.params or {}))
    loader = None
    if args.decisions_from:
        if context.decisions_opener is None:
            raise ConfigurationError("--decisions-from: no database access in this context")
        loader = context.decisions_opener(args.decisions_from)
    cache = args.ai_cache or settings.market_data.backtest_data_dir / "ai_cache" / "decisions.jsonl"
    cutoff = _cutoff(args, settings)
    request = request_record(
        args,
        strategy=candidate,
        params=params,
        symbols=symbols,
        candidate=candidate,
        decisions=loader[0] if loader else str(cache),
        ask_model=args.ask_model,
        training_cutoff=None if cutoff is None else cutoff.isoformat(),
    )
    context.begin(args, ResearchKind.AI_VALUE, request)
    runs: list[SymbolRun] = []
    decisions: dict[str, Any] = {}
    costs: list[dict[str, Any]] = []
    with progress_bar(context.console, "backtests", 2 * len(symbols)) as advance:
        for number, symbol in enumerate(symbols):
            rules_request = backtest_request(args, symbol=symbol)
            rules_request.strategy = candidate
            rules_request.strategy_params = params
            rules = simulate(rules_request, base)
            advance(2 * number + 1)
            ai_request = replace(
                rules_request, strategy=AI_STRATEGY, ai_cache=cache, min_confidence=args.min_confidence
            )
            if loader is not None:
                ai_request = replace(ai_request, decisions_from=loader[0], decision_loader=loader[1])
            ai = simulate(ai_request, base)
            advance(2 * number + 2)
            runs.append(_symbol_run(symbol, rules.result, ai.result, args))
            decisions[symbol] = None if ai.ai_stats is None else ai.ai_stats.to_dict()
            costs.append(_cost(ai, ai_request, loader is not None))
    options = AIValueOptions(
        cutoff=cutoff,
        bootstrap_runs=args.bootstrap,
        seed=args.seed,
        regime_rule=f"trailing {args.regime_days:g}-day return at the bar's close: above +{args.regime_threshold:g}% "
        f"up, below -{args.regime_threshold:g}% down, else sideways",
    )
    try:
        analysis = analyse(runs, options)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    report = {
        "kind": ResearchKind.AI_VALUE.value,
        "request": request,
        **analysis,
        "cost": _total_cost(costs),
        "decisions": decisions,
    }
    print_summary(context, report)
    from src.research.report_html import write_research_report

    outcome = ResearchOutcome(
        kind=ResearchKind.AI_VALUE,
        request=request,
        result=report,
        summary={
            **{k: v for k, v in report["headline"].items() if k != "ai_minus_rules"},
            "ai_minus_rules_pct": (report["headline"].get("ai_minus_rules") or {}).get("difference_pct"),
            "cost_usd": report["cost"]["usd"],
            "symbols": symbols,
        },
        html=lambda path: write_research_report(path, report, title=f"Does the AI add value? {', '.join(symbols)}"),
    )
    return finish(context, args, outcome)


def _symbol_run(symbol: str, rules: BacktestResult, ai: BacktestResult, args: argparse.Namespace) -> SymbolRun:
    if not rules.candles.index.equals(ai.candles.index):
        raise DataError(f"{symbol}: the rules-only and the AI runs traded different bars")
    candles = rules.all_candles if rules.all_candles is not None else rules.candles
    seconds = bar_seconds(candles.index)
    lookback = max(1, round(args.regime_days * 86400 / seconds))
    regimes = classify_regimes(candles["close"].to_numpy(dtype=np.float64), lookback, args.regime_threshold)
    regimes = regimes[len(candles) - len(rules.candles) :]
    close = rules.candles["close"].to_numpy(dtype=np.float64)
    config = rules.config
    hold = buy_and_hold_equity(close, config.initial_capital, config.fee_rate, config.slippage_pct)
    return SymbolRun(
        symbol=symbol,
        index=pd.DatetimeIndex(rules.candles.index),
        initial=config.initial_capital,
        equity={
            Variant.RULES: rules.equity.to_numpy(dtype=np.float64),
            Variant.RULES_AI: ai.equity.to_numpy(dtype=np.float64),
            Variant.BUY_AND_HOLD: hold,
        },
        regimes=regimes,
        entries={
            Variant.RULES: pd.DatetimeIndex(rules.trades["entry_candle"])
            if len(rules.trades)
            else pd.DatetimeIndex([]),
            Variant.RULES_AI: pd.DatetimeIndex(ai.trades["entry_candle"]) if len(ai.trades) else pd.DatetimeIndex([]),
        },
        pnl={
            Variant.RULES: rules.trades["pnl"].to_numpy(dtype=np.float64) if len(rules.trades) else np.empty(0),
            Variant.RULES_AI: ai.trades["pnl"].to_numpy(dtype=np.float64) if len(ai.trades) else np.empty(0),
        },
        bars_per_year=float(rules.metrics["bars_per_year"]),
    )


def _cost(done: Simulated, request: BacktestRequest, recorded: bool) -> dict[str, Any]:
    """What the AI's answers over the traded bars cost when they were obtained: the recorded decisions' own cost
    (what the bot paid), or the cost the cache kept with each answer (what the first, keyed run paid)."""
    strategy = done.strategy
    if not isinstance(strategy, AITradingStrategy):
        return {"usd": Decimal(0), "calls": 0, "answers": 0}
    traded = done.result.candles.index
    first, last = traded[0], traded[-1]
    if recorded and strategy.recorded is not None:
        used = [d for d in strategy.recorded.values() if first <= pd.Timestamp(d.candle_at) <= last and d.from_adviser]
        paid = [d.cost_usd or Decimal(0) for d in used]
        return {"usd": sum(paid, Decimal(0)), "calls": sum(1 for c in paid if c > 0), "answers": len(used)}
    hashes = [o.prompt_hash for at, o in strategy.outcomes.items() if first <= at <= last and o.prompt_hash]
    if not hashes or request.ai_cache is None or not request.ai_cache.is_file():
        return {"usd": Decimal(0), "calls": 0, "answers": len(hashes)}
    from src.ai.cache import JsonlDecisionCache

    cache = JsonlDecisionCache(request.ai_cache)

    async def lookup() -> list[Decimal]:
        found = [await cache.get(h) for h in hashes]
        return [d.cost_usd for d in found if d is not None]

    paid = asyncio.run(lookup())
    return {"usd": sum(paid, Decimal(0)), "calls": sum(1 for c in paid if c > 0), "answers": len(hashes)}


def _total_cost(costs: list[dict[str, Any]]) -> dict[str, Any]:
    usd = sum((c["usd"] for c in costs), Decimal(0))
    return {
        "usd": float(usd),
        "usd_exact": str(usd),
        "calls": sum(c["calls"] for c in costs),
        "answers": sum(c["answers"] for c in costs),
        "source": "what each answer cost when the model gave it (recorded decisions or the decision cache); "
        "replaying them now cost nothing",
        "computed_at": datetime.now(UTC).isoformat(),
    }


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:+,.2f}%"


def print_summary(context: ResearchContext, report: dict[str, Any]) -> None:
    headline = report["headline"]
    scope = headline.get("scope")
    table = Table(
        title=f"Does the AI add value? {', '.join(report['symbols'])} ({report['start'][:10]} .. "
        f"{report['end'][:10]}, headline: {scope or 'none'})"
    )
    table.add_column("Variant")
    for name in ("all", "after_cutoff", "before_cutoff"):
        if name in report["variants"][0]["scopes"]:
            table.add_column(
                name.replace("_", " ") + (" (possibly contaminated)" if name == "before_cutoff" else ""),
                justify="right",
            )
    for variant in report["variants"]:
        table.add_row(variant["label"], *(_pct(s["total_return_pct"]) for s in variant["scopes"].values()))
    context.console.print(table)
    context.console.print(headline["note"])
    for diff in report["differences"]:
        if diff["scope"] == (scope or "all"):
            context.console.print(
                f"{diff['label']}: {diff['difference_pct']:+.2f} pts (95% {diff['ci_low_pct']:+.2f} .. "
                f"{diff['ci_high_pct']:+.2f}; P(>0) {diff['probability_better']:.2f})"
            )
    regimes = ", ".join(
        f"{r['regime']} ({r['bars']} bars): rules {_pct(r['rules_pct'])}, +AI {_pct(r['rules_ai_pct'])}, "
        f"hold {_pct(r['buy_and_hold_pct'])}"
        for r in report["regimes"]
    )
    context.console.print(f"By regime ({report['regime_rule']}): {regimes}")
    cost = report["cost"]
    context.console.print(
        f"AI cost for the period: {cost['usd']:.4f} USD ({cost['calls']} model calls, "
        f"{cost['answers']} answers replayed)"
    )
