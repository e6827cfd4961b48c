"""LiquidityAnalyzer: fill price, slippage, splitting and blocking from the orderbook (Decimal math)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.api.interfaces import Orderbook, OrderbookLevel
from src.domain.orders import Side
from src.exceptions import InvalidInput
from src.trading.liquidity import LiquidityAnalyzer

D = Decimal


def book(asks: list[tuple[str, str]], bids: list[tuple[str, str]] | None = None) -> Orderbook:
    return Orderbook(
        symbol="KRW-TEST",
        timestamp=datetime(2026, 3, 1, tzinfo=UTC),
        asks=tuple(OrderbookLevel(D(price), D(size)) for price, size in asks),
        bids=tuple(OrderbookLevel(D(price), D(size)) for price, size in bids or []),
    )


def test_buy_inside_the_best_level_has_no_slippage() -> None:
    # Given 1,000,000 KRW of asks at the best price
    orderbook = book([("100000000", "0.01"), ("101000000", "1")])

    # When buying 500,000 KRW
    result = LiquidityAnalyzer(D("0.5")).assess(orderbook, Side.BUY, krw_amount=D("500000"))

    # Then it fills at the best price in one order
    assert result.expected_avg_price == D("100000000")
    assert result.slippage_pct == 0
    assert (result.allowed, result.split_into) == (True, 1)
    assert isinstance(result.expected_avg_price, Decimal)


def test_buy_walks_the_asks_by_krw_amount() -> None:
    # Given asks of 100 KRW at 100 and more at 101
    orderbook = book([("100", "1"), ("101", "10")])

    # When buying 150 KRW
    result = LiquidityAnalyzer(D("1")).assess(orderbook, Side.BUY, krw_amount=D("150"))

    # Then 100 KRW fill at 100 and 50 KRW at 101
    expected_avg = D("150") / (D("1") + D("50") / D("101"))  # 100.3311258...
    assert result.expected_avg_price == expected_avg.quantize(D("0.00000001"))
    assert result.slippage_pct == D("0.331126")
    assert result.allowed is True


def test_sell_walks_the_bids_by_volume() -> None:
    # Given bids of 2 at 100 and 3 at 99
    orderbook = book([("101", "1")], [("100", "2"), ("99", "3")])

    # When selling 4
    result = LiquidityAnalyzer(D("1")).assess(orderbook, Side.SELL, volume=D("4"))

    # Then the average is (200 + 198) / 4 = 99.5, half a percent under the best bid
    assert result.expected_avg_price == D("99.5")
    assert result.slippage_pct == D("0.5")
    assert (result.allowed, result.split_into) == (True, 1)


def test_order_the_book_cannot_fill_is_blocked() -> None:
    orderbook = book([("100", "1"), ("101", "1")], [("99", "1")])
    analyzer = LiquidityAnalyzer(D("0.5"))

    buy = analyzer.assess(orderbook, Side.BUY, krw_amount=D("1000"))
    sell = analyzer.assess(orderbook, Side.SELL, volume=D("2"))

    for result in (buy, sell):
        assert (result.allowed, result.split_into, result.expected_avg_price) == (False, 0, None)
    assert "cannot fill a 1000 KRW buy" in buy.reason
    assert "cannot fill a sell of 2" in sell.reason


def test_empty_side_is_blocked() -> None:
    result = LiquidityAnalyzer(D("0.5")).assess(book([("100", "1")]), Side.SELL, volume=D("1"))
    assert result.allowed is False
    assert result.reason == "no bids in the KRW-TEST orderbook"


def test_high_slippage_is_split_into_the_fewest_children_under_the_limit() -> None:
    # Given 200,000 KRW at the best ask and deep liquidity 1% higher
    orderbook = book([("100000000", "0.002"), ("101000000", "1")])
    analyzer = LiquidityAnalyzer(D("0.5"))

    # When buying 1,000,000 KRW (about 0.8% slippage at once)
    result = analyzer.assess(orderbook, Side.BUY, krw_amount=D("1000000"))

    # Then it is split into 3 children of 333,333 KRW that each slip under 0.5%
    assert result.slippage_pct is not None
    assert result.slippage_pct > D("0.5")
    assert (result.allowed, result.split_into) == (True, 3)
    assert result.child_amount == D("1000000") / 3
    assert result.child_slippage_pct is not None
    assert result.child_slippage_pct <= D("0.5")
    # and 2 children would still slip too much
    halves = analyzer.assess(orderbook, Side.BUY, krw_amount=D("500000"))
    assert halves.slippage_pct is not None
    assert halves.slippage_pct > D("0.5")
    assert "split into 3 orders" in result.reason


def test_split_that_would_go_below_the_minimum_order_is_blocked() -> None:
    # Given only 4,000 KRW at the best ask and the next level far away
    orderbook = book([("1000", "4"), ("2000", "1000")])

    # When buying 20,000 KRW, every split of up to 4 still slips and 5 children would be 4,000 KRW each
    result = LiquidityAnalyzer(D("0.5"), max_children=10).assess(orderbook, Side.BUY, krw_amount=D("20000"))

    # Then it is blocked, naming the minimum order
    assert (result.allowed, result.split_into) == (False, 0)
    assert result.expected_avg_price is not None  # the whole order could fill, just too expensively
    assert "minimum order 5000 KRW" in result.reason


def test_blocked_when_even_the_largest_split_slips_too_much() -> None:
    orderbook = book([("1000", "4"), ("2000", "1000")])
    analyzer = LiquidityAnalyzer(D("0.5"), max_children=3, min_order_krw=D("1"))

    result = analyzer.assess(orderbook, Side.BUY, krw_amount=D("20000"))

    assert (result.allowed, result.split_into) == (False, 0)
    assert "even split into 3 orders" in result.reason


@pytest.mark.parametrize(
    ("side", "kwargs"),
    [
        (Side.BUY, {"volume": D("1")}),
        (Side.BUY, {"krw_amount": D("1"), "volume": D("1")}),
        (Side.SELL, {"krw_amount": D("10000")}),
        (Side.BUY, {"krw_amount": D("0")}),
        (Side.SELL, {"volume": D("-1")}),
        (Side.BUY, {"krw_amount": 10000.0}),
    ],
)
def test_wrong_sizing_is_a_clear_error(side: Side, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        LiquidityAnalyzer(D("0.5")).assess(book([("100", "1")], [("99", "1")]), side, **kwargs)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(min_value=1_000, max_value=100_000_000),
    steps=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=15),
    sizes=st.lists(st.decimals(min_value=D("0.01"), max_value=D("50"), places=2), min_size=16, max_size=16),
    spend=st.integers(min_value=5_000, max_value=50_000_000),
)
def test_buy_properties(start: int, steps: list[int], sizes: list[Decimal], spend: int) -> None:
    # Given a random ascending ask ladder and a random KRW amount
    prices = [D(start)]
    for step in steps:
        prices.append(prices[-1] + D(step) * prices[0] / 1000)
    orderbook = book([(str(price), str(size)) for price, size in zip(prices, sizes, strict=False)])
    analyzer = LiquidityAnalyzer(D("0.5"))

    # When assessed
    result = analyzer.assess(orderbook, Side.BUY, krw_amount=D(spend))

    # Then the average lies inside the ladder, and an allowed order's children are each within the limit,
    # with no smaller split that would do
    if result.expected_avg_price is not None:
        assert prices[0] <= result.expected_avg_price <= prices[-1]
    if result.allowed:
        assert result.child_slippage_pct is not None
        assert result.child_slippage_pct <= D("0.5")
        if result.split_into > 1:
            fewer = analyzer.assess(orderbook, Side.BUY, krw_amount=D(spend) / (result.split_into - 1))
            assert fewer.slippage_pct is not None
            assert fewer.slippage_pct > D("0.5")
    else:
        assert result.split_into == 0
        assert result.reason
