"""Expected fill price and slippage of a market order, read off the orderbook.

A buy spends a KRW amount walking the asks from the best (lowest) price up; a sell sells a base
volume walking the bids from the best (highest) price down. Slippage is the distance of the
average fill price from the best price, in percent (fees excluded). Above the limit the order is
split into N equal child orders, sent apart in time so the book can refill, each of which alone
stays under the limit; if no split up to ``max_children`` (with every child at least the minimum
order) gets there, or the book cannot fill the order at all, the order is blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from src.api.interfaces import Orderbook, OrderbookLevel
from src.domain.market_rules import MIN_ORDER_KRW
from src.domain.money import ZERO, quantize_money
from src.domain.orders import Side
from src.exceptions import InvalidInput

_PCT_STEP = Decimal("0.000001")
_WORKING_PRECISION = 50  # KRW / price divisions must not leave 1e-23 residues that read as slippage
_HUNDRED = Decimal("100")


@dataclass(frozen=True, slots=True)
class LiquidityAssessment:
    expected_avg_price: Decimal | None  # of the whole order filled at once; None when the book cannot fill it
    slippage_pct: Decimal | None  # of the whole order, versus the best price
    allowed: bool
    split_into: int  # 1: send as is; N > 1: send N equal children; 0: blocked
    reason: str
    child_amount: Decimal | None = None  # KRW per child for a buy, volume per child for a sell
    child_slippage_pct: Decimal | None = None


@dataclass(frozen=True, slots=True)
class _Fill:
    avg_price: Decimal
    slippage_pct: Decimal


class LiquidityAnalyzer:
    def __init__(
        self, max_slippage_pct: Decimal, *, max_children: int = 10, min_order_krw: Decimal = MIN_ORDER_KRW
    ) -> None:
        if max_slippage_pct <= 0:
            raise InvalidInput(f"max_slippage_pct must be positive, got {max_slippage_pct}")
        if max_children < 1:
            raise InvalidInput(f"max_children must be at least 1, got {max_children}")
        self.max_slippage_pct = Decimal(max_slippage_pct)
        self.max_children = max_children
        self.min_order_krw = min_order_krw

    def assess(
        self,
        orderbook: Orderbook,
        side: Side,
        krw_amount: Decimal | None = None,
        volume: Decimal | None = None,
    ) -> LiquidityAssessment:
        """A buy is sized by ``krw_amount``, a sell by ``volume``."""
        amount = _order_amount(side, krw_amount, volume)
        levels = orderbook.asks if side is Side.BUY else orderbook.bids
        if not levels:
            book_side = "asks" if side is Side.BUY else "bids"
            return _blocked(f"no {book_side} in the {orderbook.symbol} orderbook")
        whole = _walk(levels, side, amount)
        if whole is None:
            return _blocked(_unfillable_reason(orderbook.symbol, levels, side, amount))
        if whole.slippage_pct <= self.max_slippage_pct:
            reason = f"slippage {whole.slippage_pct}% within {self.max_slippage_pct}%"
            return LiquidityAssessment(whole.avg_price, whole.slippage_pct, True, 1, reason, amount, whole.slippage_pct)
        return self._split(levels, side, amount, whole)

    def _split(
        self, levels: tuple[OrderbookLevel, ...], side: Side, amount: Decimal, whole: _Fill
    ) -> LiquidityAssessment:
        best_price = levels[0].price
        too_much = f"slippage {whole.slippage_pct}% above {self.max_slippage_pct}%"
        last_child: _Fill | None = None
        for children in range(2, self.max_children + 1):
            child_amount = amount / children
            if _notional(side, child_amount, best_price) < self.min_order_krw:
                below = f"split into {children} the children fall below the minimum order {self.min_order_krw} KRW"
                return _blocked(f"{too_much}; {below}", whole)
            child = _walk(levels, side, child_amount)
            assert child is not None  # a part of a fillable order is fillable
            last_child = child
            if child.slippage_pct <= self.max_slippage_pct:
                reason = f"{too_much}; split into {children} orders of {child.slippage_pct}% slippage each"
                return LiquidityAssessment(
                    whole.avg_price, whole.slippage_pct, True, children, reason, child_amount, child.slippage_pct
                )
        child_pct = last_child.slippage_pct if last_child else whole.slippage_pct
        return _blocked(
            f"{too_much}; even split into {self.max_children} orders each slips {child_pct}%",
            whole,
        )


def _order_amount(side: Side, krw_amount: Decimal | None, volume: Decimal | None) -> Decimal:
    if side is Side.BUY:
        if krw_amount is None or volume is not None:
            raise InvalidInput("a buy is sized by krw_amount only (volume must be None)")
        amount = krw_amount
    else:
        if volume is None or krw_amount is not None:
            raise InvalidInput("a sell is sized by volume only (krw_amount must be None)")
        amount = volume
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise InvalidInput(f"the order amount must be a positive Decimal, got {amount!r}")
    return amount


def _walk(levels: tuple[OrderbookLevel, ...], side: Side, amount: Decimal) -> _Fill | None:
    """Average fill price and slippage for ``amount`` (KRW for a buy, volume for a sell); None if unfillable."""
    with localcontext() as context:
        context.prec = _WORKING_PRECISION
        remaining = amount
        volume = ZERO
        krw = ZERO
        for level in levels:
            if side is Side.BUY:
                spend = min(remaining, level.price * level.size)
                volume += spend / level.price
                krw += spend
                remaining -= spend
            else:
                sold = min(remaining, level.size)
                volume += sold
                krw += sold * level.price
                remaining -= sold
            if remaining <= 0:
                break
        if remaining > 0:
            return None
        best = levels[0].price
        avg = quantize_money(krw / volume)
        distance = avg - best if side is Side.BUY else best - avg
        slippage = max(ZERO, distance / best * _HUNDRED).quantize(_PCT_STEP)
    return _Fill(avg, slippage)


def _notional(side: Side, amount: Decimal, best_price: Decimal) -> Decimal:
    return amount if side is Side.BUY else amount * best_price


def _unfillable_reason(symbol: str, levels: tuple[OrderbookLevel, ...], side: Side, amount: Decimal) -> str:
    if side is Side.BUY:
        depth = sum((level.price * level.size for level in levels), ZERO)
        return f"the {symbol} asks hold only {depth} KRW in {len(levels)} levels; cannot fill a {amount} KRW buy"
    depth = sum((level.size for level in levels), ZERO)
    return f"the {symbol} bids hold only {depth} in {len(levels)} levels; cannot fill a sell of {amount}"


def _blocked(reason: str, whole: _Fill | None = None) -> LiquidityAssessment:
    return LiquidityAssessment(
        expected_avg_price=whole.avg_price if whole else None,
        slippage_pct=whole.slippage_pct if whole else None,
        allowed=False,
        split_into=0,
        reason=reason,
    )
