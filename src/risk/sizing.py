"""Position sizing as pure functions: fixed fraction of equity, or half-Kelly from closed-trade stats."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from src.config.trading_groups import RiskConfig
from src.domain.decisions import PositionSizing
from src.domain.money import ZERO, whole_krw
from src.risk.models import SizingDecision, TradeStats

HUNDRED = Decimal("100")
PCT_QUANTUM = Decimal("0.0001")


def kelly_fraction(stats: TradeStats) -> Decimal:
    """Full Kelly ``W - (1 - W) / R`` (W win rate, R payoff ratio); may be negative. No losses -> ``W``."""
    win_rate = stats.win_rate
    payoff = stats.payoff_ratio
    if payoff is None:
        return win_rate
    if payoff == 0:
        return -(1 - win_rate) if win_rate < 1 else ZERO
    return win_rate - (1 - win_rate) / payoff


def half_kelly_pct(stats: TradeStats, config: RiskConfig) -> Decimal:
    """Half of the Kelly fraction in percent (4 decimals, rounded down), clamped to ``KELLY_MIN_PCT..KELLY_MAX_PCT``."""
    raw = (kelly_fraction(stats) / 2 * HUNDRED).quantize(PCT_QUANTUM, rounding=ROUND_DOWN)
    return min(max(raw, config.kelly_min_pct), config.kelly_max_pct)


def choose_fraction(config: RiskConfig, stats: TradeStats | None) -> tuple[PositionSizing, Decimal, str]:
    """Which percent of equity to put into a new position, by which method, and a note for the record."""
    if config.position_sizing is PositionSizing.FIXED:
        return PositionSizing.FIXED, config.position_fraction_pct, ""
    closed = stats.closed if stats is not None else 0
    if stats is None or closed < config.kelly_min_trades:
        note = (
            f"half-Kelly needs {config.kelly_min_trades} closed positions, have {closed}: "
            f"using the fixed fraction {config.position_fraction_pct}%"
        )
        return PositionSizing.FIXED, config.position_fraction_pct, note
    pct = half_kelly_pct(stats, config)
    note = (
        f"half-Kelly from {stats.closed} closed positions: win rate {stats.win_rate:.4f}, "
        f"payoff {'n/a' if stats.payoff_ratio is None else f'{stats.payoff_ratio:.4f}'} -> {pct:.4f}%"
    )
    return PositionSizing.HALF_KELLY, pct, note


def size_position(
    equity: Decimal, max_krw: Decimal, min_order_krw: Decimal, config: RiskConfig, stats: TradeStats | None
) -> SizingDecision:
    """The KRW order total: ``equity x fraction``, capped by ``max_krw``, whole KRW; 0 below the minimum order."""
    method, pct, note = choose_fraction(config, stats)
    wanted = equity * pct / HUNDRED
    krw = whole_krw(min(wanted, max_krw))
    if wanted > max_krw:
        note = _join(note, f"capped by the risk limit at {max_krw:,.0f} KRW")
    if krw < min_order_krw:
        note = _join(note, f"{krw:,.0f} KRW is below the minimum order {min_order_krw:,.0f} KRW: no entry")
        krw = ZERO
    return SizingDecision(krw=krw, method=method, fraction_pct=pct, note=note)


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second
