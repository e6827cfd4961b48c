"""TradingService: orders exactly once (row before request, answer after, trades from fills) and
reconciliation by identifier, against the paper exchange with injected faults."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from src.api.interfaces import ExchangeOrderState, Order, OrderRequest
from src.api.paper_account import InMemoryPaperAccountStore
from src.api.paper_exchange import PaperExchange
from src.data.replay import ReplayMarketSource
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, Side
from src.exceptions import ExchangeUnavailable, InsufficientFunds
from src.trading.pipeline.memory import InMemoryTradingRepository
from src.trading.service import TradingService, new_identifier
from tests.support.candles import make_candles

SYMBOL = "KRW-BTC"
START = datetime(2024, 3, 1, tzinfo=UTC)


class FaultyExchange(PaperExchange):
    """The paper exchange with the failures of a network in front of it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fault: str | None = None
        self.placed: list[OrderRequest] = []
        self.strip_trades = False

    async def place_order(self, request: OrderRequest) -> Order:
        self.placed.append(request)
        if self.fault == "lost_request":
            raise ExchangeUnavailable("connection reset before the request was sent", identifier=request.identifier)
        if self.fault == "insufficient":
            raise InsufficientFunds("not enough KRW", name="insufficient_funds_bid")
        order = await super().place_order(request)
        if self.fault == "lost_answer":
            raise ExchangeUnavailable("connection dropped after the order was accepted", identifier=request.identifier)
        return order

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        order = await super().get_order(uuid=uuid, identifier=identifier)
        return replace(order, trades=()) if self.strip_trades else order


class Clock:
    def __init__(self) -> None:
        self.now = START + timedelta(hours=300)

    def __call__(self) -> datetime:
        return self.now


def rig(grace_minutes: int = 5) -> tuple[TradingService, FaultyExchange, InMemoryTradingRepository, Clock]:
    clock = Clock()
    candles = make_candles(START, 300, "1h", start_price=50_000_000, seed=5)
    source = ReplayMarketSource({SYMBOL: {"1h": candles}}, start=clock.now)
    exchange = FaultyExchange(source, InMemoryPaperAccountStore(), clock=clock)
    repo = InMemoryTradingRepository()
    service = TradingService(
        exchange,
        repo,
        mode=TradingMode.PAPER,
        instance="bot-1",
        clock=clock,
        not_found_grace=timedelta(minutes=grace_minutes),
        poll_delay_seconds=0,
    )
    return service, exchange, repo, clock


def test_identifier_names_instance_minute_symbol_side_and_a_random_part() -> None:
    identifier = new_identifier("bot 1", datetime(2024, 3, 1, 9, 5, tzinfo=UTC), SYMBOL, Side.BUY)

    assert re.fullmatch(r"bot_1-202403010905-KRW-BTC-buy-[0-9a-f]{6}", identifier)


async def test_market_buy_writes_the_row_then_sends_then_settles_fills_into_trades() -> None:
    service, exchange, repo, _ = rig()

    result = await service.market_buy(SYMBOL, Decimal("1000000"), reason="test", cycle_id="c1")

    assert result.status is OrderStatus.FILLED
    order = repo.orders[result.identifier]
    assert order.exchange_uuid is not None
    assert order.filled_amount > 0
    assert order.paid_fee > 0
    assert {t.trade_id for t in repo.trades.values()} == {t.trade_id for t in result.trades}
    assert len(exchange.placed) == 1


async def test_lost_answer_leaves_the_order_pending_and_reconciliation_settles_it_without_resending() -> None:
    """Given the exchange accepted the order but the answer was lost, when reconciliation runs (as after a
    restart), then the order is found by identifier and settled with its trades; nothing is sent twice."""
    service, exchange, repo, _ = rig()
    exchange.fault = "lost_answer"

    first = await service.market_buy(SYMBOL, Decimal("1000000"), reason="test", cycle_id=None)

    assert first.status is OrderStatus.PENDING
    assert repo.orders[first.identifier].status is OrderStatus.PENDING
    assert repo.trades == {}
    exchange.fault = None
    [settled] = await service.reconcile()
    assert settled.identifier == first.identifier
    assert settled.status is OrderStatus.FILLED
    assert repo.orders[first.identifier].exchange_uuid is not None
    assert len(repo.trades) == len(settled.trades) > 0
    assert len(exchange.placed) == 1
    assert await service.reconcile() == []


async def test_request_that_never_arrived_is_failed_only_after_the_grace_period() -> None:
    service, exchange, repo, clock = rig(grace_minutes=5)
    exchange.fault = "lost_request"
    pending = await service.market_buy(SYMBOL, Decimal("1000000"), reason="test", cycle_id=None)

    [early] = await service.reconcile()
    assert early.status is OrderStatus.PENDING
    clock.now += timedelta(minutes=6)
    [late] = await service.reconcile()

    assert late.status is OrderStatus.FAILED
    assert "OrderNotFound" in (repo.orders[pending.identifier].error_message or "")
    assert len(exchange.placed) == 1


async def test_business_error_fails_the_order_with_the_error_name() -> None:
    service, exchange, repo, _ = rig()
    exchange.fault = "insufficient"

    result = await service.market_buy(SYMBOL, Decimal("1000000"), reason="test", cycle_id=None)

    assert result.status is OrderStatus.FAILED
    assert "insufficient_funds_bid" in (repo.orders[result.identifier].error_message or "")
    assert await service.reconcile() == []
    assert any(level == "warning" for level, *_ in repo.logs)


async def test_fill_without_a_trade_list_is_written_as_one_identifier_fill_trade() -> None:
    service, exchange, repo, _ = rig()
    exchange.fault = "lost_answer"
    pending = await service.market_buy(SYMBOL, Decimal("1000000"), reason="test", cycle_id=None)
    exchange.fault = None
    exchange.strip_trades = True

    [settled] = await service.reconcile()

    [trade] = repo.trades.values()
    assert trade.trade_id == f"{pending.identifier}-fill"
    assert trade.total == repo.orders[pending.identifier].executed_funds
    assert settled.status is OrderStatus.FILLED


async def test_market_buy_ending_cancel_with_executed_volume_counts_as_filled() -> None:
    """Upbit ends a market buy ``cancel`` when a KRW remainder cannot buy another unit: that is a fill."""
    service, exchange, repo, _ = rig()

    result = await service.market_buy(SYMBOL, Decimal("1000003"), reason="test", cycle_id=None)

    order = await exchange.get_order(identifier=result.identifier)
    assert order.state in (ExchangeOrderState.DONE, ExchangeOrderState.CANCEL)
    assert result.status is OrderStatus.FILLED
    assert repo.orders[result.identifier].filled_amount == order.executed_volume


def test_buy_total_leaves_room_for_the_fee_and_min_total_is_checked() -> None:
    service, *_ = rig()

    assert service.buy_total_for(Decimal("100050"), Decimal("1000000")) == Decimal("100000")
    assert service.check_min_total(Decimal("4999")) is not None
    assert service.check_min_total(Decimal("5000")) is None


@pytest.mark.parametrize("volume", [Decimal("0"), Decimal("0.000000001")])
async def test_sell_of_nothing_is_refused_before_any_row_is_written(volume: Decimal) -> None:
    service, _, repo, _ = rig()

    with pytest.raises(Exception, match="positive volume"):
        await service.market_sell(SYMBOL, volume, reason="test", cycle_id=None)
    assert repo.orders == {}
