"""Order checks from the exchange (issue 17 item 4), against FakeUpbit through UpbitClient and the trading service:
tick sizes from ``/v1/orderbook/instruments`` (cached, refreshed, table fallback), the order group paced at
12 per second, market orders split before they sweep past the 30th book level, ``smp_type`` on every order
and the ``prevented`` state settled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

from src.api.interfaces import ExchangeOrderState, Order, OrderRequest
from src.api.paper_account import InMemoryPaperAccountStore
from src.api.paper_exchange import PaperExchange
from src.api.rate_limiter import GROUP_BUDGETS, UpbitRateLimiter
from src.api.upbit.instruments import TickSizeCache
from src.api.upbit_client import UpbitClient
from src.config.runtime_state import with_value
from src.config.settings import load_settings
from src.domain.exits import ExitPolicy, ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side, SmpType
from src.exceptions import InvalidOrder, InvalidPrice, RateLimited
from src.position import PositionService
from src.risk import InMemoryRiskStore
from src.risk.store import PositionStatus
from src.strategy.contract import Strategy, StrategySignals
from src.trading.exchange_status import status_from_exchange
from src.trading.pipeline.compose import PipelineAdapters, build_pipeline
from src.trading.pipeline.memory import InMemoryTradingRepository
from src.trading.pipeline.positions import ServicePositionBook
from src.trading.service import TradingService
from tests.fakes.upbit_server import DEFAULT_RATE_LIMITS, FakeUpbit

BTC = "KRW-BTC"
MODE = TradingMode.LIVE
D = Decimal


@pytest.fixture
async def client(fake_upbit: FakeUpbit) -> AsyncIterator[UpbitClient]:
    fake_upbit.set_balance("KRW", "100000000")
    fake_upbit.set_orderbook(
        BTC,
        asks=[(95_001_000 + 1000 * i, "0.5") for i in range(5)],
        bids=[(95_000_000 - 1000 * i, "0.5") for i in range(5)],
    )
    upbit = UpbitClient(
        fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key, timeout=2.0, backoff_seconds=0.01
    )
    yield upbit
    await upbit.close()


def limit_buy(identifier: str, price: str, volume: str = "0.001") -> OrderRequest:
    return OrderRequest(BTC, Side.BUY, OrderType.LIMIT, identifier, volume=D(volume), price=D(price))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- tick sizes from the exchange ------------------------------------------------------------------------


async def test_a_limit_price_goes_on_the_exchange_tick_read_from_instruments(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given the exchange's tick for KRW-BTC is 5,000 KRW while the dated table says 1,000
    fake_upbit.set_tick_size(BTC, 5000)
    # When a limit buy at 95,003,700 is placed
    with capture_logs() as logs:
        order = await client.place_order(limit_buy("tick-1", "95003700"))
    # Then the price went down onto the exchange's grid (the table's 95,003,000 would have been refused)
    assert order.price == D("95000000")
    assert fake_upbit.requests_to("/v1/orders", "POST")[-1].json["price"] == "95000000"
    assert len(fake_upbit.requests_to("/v1/orderbook/instruments")) == 1
    # and the difference from the table is logged
    [differs] = [e for e in logs if e["event"] == "order.tick_differs_from_table"]
    assert (differs["exchange_tick"], differs["table_tick"]) == ("5000", "1000")


async def test_the_tick_is_cached_and_read_again_after_the_refresh_interval(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given a cache refreshed every hour on a controllable clock and an exchange tick of 5,000
    clock = Clock()
    client.instruments = TickSizeCache(client.get_tick_sizes, refresh_hours=1, clock=clock)
    fake_upbit.set_tick_size(BTC, 5000)
    # When two orders go out within the hour
    await client.place_order(limit_buy("cache-1", "95003700"))
    await client.place_order(limit_buy("cache-2", "95003700"))
    # Then the instruments endpoint was read once
    assert len(fake_upbit.requests_to("/v1/orderbook/instruments")) == 1
    # When the exchange moves to 500 and an hour passes
    fake_upbit.set_tick_size(BTC, 500)
    clock.now += 3600
    order = await client.place_order(limit_buy("cache-3", "95003700"))
    # Then the tick was read again and used
    assert len(fake_upbit.requests_to("/v1/orderbook/instruments")) == 2
    assert order.price == D("95003500")


async def test_when_instruments_fail_the_dated_table_is_the_fallback(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given the instruments endpoint answers 503 to every attempt of one read
    fake_upbit.inject_server_error(503, times=3, path="/v1/orderbook/instruments")
    # When limit orders are placed
    with capture_logs() as logs:
        first = await client.place_order(limit_buy("fallback-1", "95003700"))
        second = await client.place_order(limit_buy("fallback-2", "95003700"))
    # Then the table's tick (1,000 above 1,000,000 KRW) was used and the exchange accepted both
    assert first.price == second.price == D("95003000")
    assert first.state is ExchangeOrderState.WAIT
    # and the failed read was logged once, not repeated for every order (retry after a pause)
    assert [e["event"] for e in logs].count("instruments.read_failed") == 1
    assert len(fake_upbit.requests_to("/v1/orderbook/instruments")) == 3  # the 3 attempts of one read


async def test_an_invalid_price_refusal_drops_the_cached_tick(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    # Given the cache holds 1,000 for KRW-BTC
    fake_upbit.set_tick_size(BTC, 1000)
    await client.place_order(limit_buy("drop-1", "95003700"))
    # When the exchange changes its tick to 5,000 before the next refresh
    fake_upbit.set_tick_size(BTC, 5000)
    with pytest.raises(InvalidPrice):
        await client.place_order(limit_buy("drop-2", "95003700"))
    # Then the next order reads the tick again and goes through
    order = await client.place_order(limit_buy("drop-3", "95003700"))
    assert order.price == D("95000000")
    assert len(fake_upbit.requests_to("/v1/orderbook/instruments")) == 2


async def test_paper_exchange_over_live_quotes_uses_the_exchange_tick(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given paper trading over Upbit's quotes, whose instruments say 5,000
    fake_upbit.set_tick_size(BTC, 5000)
    paper = PaperExchange(client, InMemoryPaperAccountStore(), starting_krw=D("100000000"))
    # When a paper limit buy is placed
    order = await paper.place_order(limit_buy("paper-1", "95003700"))
    # Then it went onto the exchange's grid, as the live client would have sent it
    assert order.price == D("95000000")


async def test_settings_reach_the_live_client(monkeypatch: pytest.MonkeyPatch, fake_upbit: FakeUpbit) -> None:
    # Given UPBIT_SMP_TYPE=reduce and INSTRUMENTS_REFRESH_HOURS=6
    monkeypatch.setenv("UPBIT_BASE_URL", fake_upbit.base_url)
    monkeypatch.setenv("UPBIT_ACCESS_KEY", fake_upbit.access_key)
    monkeypatch.setenv("UPBIT_SECRET_KEY", fake_upbit.secret_key)
    monkeypatch.setenv("UPBIT_SMP_TYPE", "reduce")
    monkeypatch.setenv("INSTRUMENTS_REFRESH_HOURS", "6")
    fake_upbit.set_balance("KRW", "1000000")
    fake_upbit.set_orderbook(BTC, asks=[(95_001_000, "1")], bids=[(95_000_000, "1")])
    async with UpbitClient.from_settings(load_settings(env_file=None)) as upbit:
        # When an order is placed
        await upbit.place_order(OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "settings-1", krw_total=D("10000")))
        # Then it carried smp_type=reduce and the tick cache refreshes every 6 hours
        assert fake_upbit.requests_to("/v1/orders", "POST")[-1].json["smp_type"] == "reduce"
        assert upbit.instruments.refresh_seconds == 6 * 3600


def test_a_bad_smp_type_setting_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPBIT_SMP_TYPE", "cancel_both")
    with pytest.raises(Exception, match="UPBIT_SMP_TYPE"):
        load_settings(env_file=None)


# --- the order group at 12 per second ----------------------------------------------------------------------


async def test_orders_are_paced_at_12_per_second_and_none_meets_a_429(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given the fake enforces Upbit's order budget of 12 per second
    assert DEFAULT_RATE_LIMITS["order"] == 12
    fake_upbit.set_orderbook(BTC, asks=[(95_001_000, "100")], bids=[(95_000_000, "100")])
    # When 26 market buys are fired at once
    orders = await asyncio.gather(
        *(
            client.place_order(OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, f"burst-{i}", krw_total=D("10000")))
            for i in range(26)
        )
    )
    # Then every one was accepted at the first attempt (no 429, no retry)
    posts = fake_upbit.requests_to("/v1/orders", "POST")
    assert len(orders) == len(posts) == 26
    assert {p.status for p in posts} == {201}
    # and the fake's clock saw at most 12 in each of its one-second windows (how it counts, as Upbit does), and
    # at most 12 in almost any sliding second (50 ms of loopback jitter allowed), so 26 took more than two seconds
    times = sorted(p.at for p in posts)
    per_second = [sum(1 for t in times if int(t) == second) for second in {int(t) for t in times}]
    assert max(per_second) <= 12
    assert max(sum(1 for t in times if start <= t < start + 0.95) for start in times) <= 12
    assert times[-1] - times[0] > 2.0


async def test_the_fake_refuses_the_13th_order_in_one_second(fake_upbit: FakeUpbit) -> None:
    # Given a client that does not pace (budgets off, one attempt)
    fake_upbit.set_balance("KRW", "100000000")
    fake_upbit.set_orderbook(BTC, asks=[(95_001_000, "100")], bids=[(95_000_000, "100")])
    async with UpbitClient(fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key, max_attempts=1) as upbit:
        upbit.transport.rate_limiter.budgets = {}
        # When 14 orders go out at once
        answers = await asyncio.gather(
            *(
                upbit.place_order(OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, f"raw-{i}", krw_total=D("10000")))
                for i in range(14)
            ),
            return_exceptions=True,
        )
    # Then at least one was refused with 429 (12 fit in a second; the burst may straddle two seconds)
    refused = [a for a in answers if isinstance(a, RateLimited)]
    assert refused
    assert all(isinstance(a, Order | RateLimited) for a in answers)


async def test_order_group_budgets_are_12_per_second_8_for_tests_1_per_2_seconds_for_cancel_all() -> None:
    # Given a limiter on a controllable clock whose sleep advances the clock
    clock = Clock()

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    limiter = UpbitRateLimiter(clock=clock, sleep=sleep)
    assert (GROUP_BUDGETS["order"].requests, GROUP_BUDGETS["order-test"].requests) == (12, 8)
    # When 24 orders, 16 order tests and 2 batch cancels acquire in turn
    start = clock.now
    for _ in range(24):
        limiter.done(await limiter.acquire("order"))
    order_time = clock.now - start
    start = clock.now
    for _ in range(16):
        limiter.done(await limiter.acquire("order-test"))
    test_time = clock.now - start
    start = clock.now
    for _ in range(2):
        limiter.done(await limiter.acquire("order-cancel-all"))
    cancel_time = clock.now - start
    # Then the 13th order waited one window, the 9th test one window, the second cancel two seconds
    assert 1.0 < order_time < 1.1
    assert 1.0 < test_time < 1.1
    assert 2.0 < cancel_time < 2.1


# --- the 30-level rule ---------------------------------------------------------------------------------------


async def test_the_fake_serves_30_levels_and_refuses_a_market_order_beyond_them(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given 40 bid levels of 0.01 BTC (0.3 BTC in the first 30) and 1 BTC held
    fake_upbit.set_orderbook(
        BTC,
        asks=[(95_001_000 + 1000 * i, "0.01") for i in range(40)],
        bids=[(95_000_000 - 1000 * i, "0.01") for i in range(40)],
    )
    fake_upbit.set_balance("BTC", "1")
    [book] = await client.get_orderbooks([BTC])
    assert len(book.bids) == len(book.asks) == 30
    # When a market sell of 0.35 BTC (within the 40 levels, beyond the 30) is sent
    with pytest.raises(InvalidOrder) as caught:
        await client.place_order(OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, "deep", volume=D("0.35")))
    # Then Upbit's refusal comes back: create_ask_error naming the 30 levels
    assert caught.value.name == "create_ask_error"
    assert "30" in caught.value.message
    # and 0.3 BTC goes through
    sold = await client.place_order(OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, "fits", volume=D("0.3")))
    assert (await client.get_order(uuid=sold.uuid)).executed_volume == D("0.3")


def _deep_book(fake: FakeUpbit, levels: int, size: str) -> None:
    fake.set_orderbook(
        BTC,
        asks=[(95_001_000 + 1000 * i, size) for i in range(levels)],
        bids=[(95_000_000 - 1000 * i, size) for i in range(levels)],
    )


async def _no_sleep(_seconds: float) -> None:
    return None


def _service(
    client: UpbitClient, repo: InMemoryTradingRepository, positions: PositionService, **kwargs: object
) -> TradingService:
    return TradingService(
        client,
        repo,
        mode=MODE,
        instance="orders",
        positions=ServicePositionBook(positions),
        poll_delay_seconds=0,
        sleep=kwargs.pop("sleep", _no_sleep),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def _positions() -> tuple[InMemoryRiskStore, PositionService]:
    store = InMemoryRiskStore()
    return store, PositionService(store, ExitPolicy(stop_loss_pct=5, take_profit_pct=10), MODE)


async def test_a_sell_beyond_30_levels_is_split_into_parts_each_an_order_and_the_position_closes_right(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given 100 levels of 0.01 BTC on each side (0.3 BTC within 30 levels) and a position bought through the
    # service for 60,000,000 KRW (beyond the 30 asks too: the buy is split as well)
    _deep_book(fake_upbit, 100, "0.01")
    repo = InMemoryTradingRepository()
    store, positions = _positions()
    service = _service(client, repo, positions)
    bought = await service.market_buy(BTC, D("60000000"), reason="test", cycle_id="c1")
    held = await positions.get(BTC)
    assert bought.filled
    assert held is not None
    assert len(bought.parts) == 3  # 25,650,000 KRW each at most (90% of the 30 asks), then the rest
    # When the position is sold on a stop loss
    sold = await service.market_sell(
        BTC, held.amount, reason="exit: stop_loss (test)", cycle_id=None, exit_reason=ExitReason.STOP_LOSS
    )
    # Then it went out in parts of at most 0.27 BTC (90% of the first 30 bids), each filled
    sells = [o for o in repo.orders.values() if o.side is Side.SELL]
    assert sold.filled
    assert len(sold.parts) == len(sells) == 3
    assert [o.amount for o in sells] == [D("0.27"), D("0.27"), held.amount - D("0.54")]
    assert all(o.status is OrderStatus.FILLED for o in sells)
    # each part its own identifier and row, one POST per row, never refused by the exchange
    posts = fake_upbit.requests_to("/v1/orders", "POST")
    assert len(posts) == len(repo.orders) == 6
    assert {p.json["identifier"] for p in posts} == set(repo.orders)
    assert {p.status for p in posts} == {201}
    assert {p.json["smp_type"] for p in posts} == {"cancel_maker"}
    # every sell row and trade carries the exit reason
    sell_trades = [t for t in repo.trades.values() if t.side is Side.SELL]
    assert {o.exit_reason for o in sells} == {t.exit_reason for t in sell_trades} == {"stop_loss"}
    # the position is closed by the whole volume, with the exit reason
    assert sum((t.amount for t in sell_trades), D(0)) == held.amount
    assert await positions.get(BTC) is None
    [closed] = await store.list_closed_positions(MODE)
    assert closed.status is PositionStatus.CLOSED
    assert closed.exit_reason == "stop_loss"
    # and the realised P&L is what the money says: sells net of fees minus buys with fees
    buy_trades = [t for t in repo.trades.values() if t.side is Side.BUY]
    cash = sum((t.total - t.fee for t in sell_trades), D(0)) - sum((t.total + t.fee for t in buy_trades), D(0))
    booked = sum((t.realized_pnl or D(0) for t in sell_trades), D(0))
    assert abs(closed.realized_pnl - cash) <= D("1")
    assert abs(booked - closed.realized_pnl) <= D("1")
    # as the exchange's balances say
    assert fake_upbit.balance("BTC") == 0


async def test_a_split_never_leaves_a_rest_below_the_minimum_order(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    # Given 0.27003 BTC held: 0.27 BTC is the cap (90 % of the first 30 bids), 0.00003 BTC (~2,850 KRW) would be dust
    _deep_book(fake_upbit, 100, "0.01")
    fake_upbit.set_balance("BTC", "0.27003")
    repo = InMemoryTradingRepository()
    service = TradingService(client, repo, mode=MODE, poll_delay_seconds=0, sleep=_no_sleep)
    # When it is all sold
    sold = await service.market_sell(BTC, D("0.27003"), reason="exit: signal", cycle_id=None)
    # Then the first part left a rest of 1.5 minimum orders, and the second part sold it: nothing is left
    assert sold.filled
    first, second = (o.amount for o in repo.orders.values())
    assert first is not None
    assert second is not None
    assert first < D("0.27")
    assert second * D("94970000") >= D("5000")
    assert first + second == D("0.27003")
    assert fake_upbit.balance("BTC") == 0


async def test_a_lost_answer_mid_split_stops_the_sequence_and_reconciliation_settles_the_part(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given about 0.63 BTC held as a position and 0.3 BTC within the first 30 bids
    _deep_book(fake_upbit, 100, "0.01")
    repo = InMemoryTradingRepository()
    _, positions = _positions()
    service = _service(client, repo, positions)
    await service.market_buy(BTC, D("60000000"), reason="test", cycle_id=None)
    held = await positions.get(BTC)
    assert held is not None

    # When the answer to the second part is lost (the exchange executes it, the connection drops)
    async def drop_next(_seconds: float) -> None:
        fake_upbit.inject_drop_after_accept()

    service._sleep = drop_next
    sold = await service.market_sell(
        BTC, held.amount, reason="exit: stop_loss", cycle_id=None, exit_reason=ExitReason.STOP_LOSS
    )
    # Then the sequence stopped at the unknown part (no third part was sent) and that part is pending
    assert [p.status for p in sold.parts] == [OrderStatus.FILLED, OrderStatus.PENDING]
    assert sold.status is OrderStatus.PENDING
    sells = [o for o in repo.orders.values() if o.side is Side.SELL]
    assert len(sells) == 2
    # When reconciliation runs
    [settled] = await service.reconcile()
    # Then the part is settled by its identifier with the exit reason, applied once, and the rest stays open
    assert settled.status is OrderStatus.FILLED
    assert settled.trades
    assert {t.exit_reason for t in settled.trades} == {"stop_loss"}
    position = await positions.get(BTC)
    assert position is not None
    assert position.amount == held.amount - D("0.54")
    assert len(fake_upbit.requests_to("/v1/orders", "POST")) == 5  # the buy's 3 parts and 2 sell parts: no resend


async def test_an_order_within_the_30_levels_goes_out_whole(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    _deep_book(fake_upbit, 40, "0.01")
    repo = InMemoryTradingRepository()
    _, positions = _positions()
    result = await _service(client, repo, positions).market_buy(BTC, D("10000000"), reason="t", cycle_id=None)
    assert result.filled
    assert result.parts == []
    assert len(repo.orders) == 1


async def test_paper_refuses_a_market_order_beyond_30_levels_like_upbit(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given paper trading over a live book of 40 visible levels... of which Upbit serves 30 anyway
    _deep_book(fake_upbit, 40, "0.01")
    paper = PaperExchange(client, InMemoryPaperAccountStore(), starting_krw=D("100000000"))
    # When a market buy for more than the 30 asks hold is placed
    with pytest.raises(InvalidOrder) as caught:
        await paper.place_order(OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "p-deep", krw_total=D("30000000")))
    assert caught.value.name == "create_bid_error"


# --- smp_type and the prevented state -----------------------------------------------------------------------


async def test_every_order_carries_smp_type_and_the_fake_validates_it(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # When orders of each type go out
    fake_upbit.set_balance("BTC", "1")
    await client.place_order(OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "smp-1", krw_total=D("10000")))
    await client.place_order(OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, "smp-2", volume=D("0.001")))
    await client.place_order(limit_buy("smp-3", "90000000"))
    await client.place_order(
        OrderRequest(BTC, Side.BUY, OrderType.LIMIT, "smp-4", D("0.001"), D("90000000"), smp_type=SmpType.NONE)
    )
    # Then each carried smp_type (the client's, or the order's own), echoed by the exchange
    posts = fake_upbit.requests_to("/v1/orders", "POST")
    assert [p.json["smp_type"] for p in posts] == ["cancel_maker"] * 3 + ["none"]
    assert fake_upbit.order(identifier="smp-4")["smp_type"] == "none"  # type: ignore[index]
    # and the fake refuses a value Upbit does not know
    body = {"market": BTC, "side": "bid", "ord_type": "price", "price": "10000", "identifier": "smp-5"}
    with pytest.raises(InvalidOrder) as caught:
        await client.transport.request(
            "POST", "/v1/orders", body={**body, "smp_type": "cancel_both"}, group="order", auth=True
        )
    assert caught.value.name == "validation_error"


async def test_a_prevented_sell_settles_what_executed_and_the_rest_stays_held(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given a position of about 0.105 BTC
    _deep_book(fake_upbit, 40, "0.5")
    repo = InMemoryTradingRepository()
    _, positions = _positions()
    service = _service(client, repo, positions)
    await service.market_buy(BTC, D("10000000"), reason="test", cycle_id=None)
    held = await positions.get(BTC)
    assert held is not None
    # When self-match prevention stops the sell after 40% executed
    fake_upbit.inject_prevented(executed_share="0.4")
    sold = await service.market_sell(
        BTC, held.amount, reason="exit: take_profit", cycle_id=None, exit_reason=ExitReason.TAKE_PROFIT
    )
    # Then the order is final: the executed 40% is a fill with its trades, the row says what happened
    row = repo.orders[sold.identifier]
    at_exchange = fake_upbit.order(identifier=sold.identifier)
    assert at_exchange is not None
    executed = D(at_exchange["executed_volume"])
    assert D("0.39") < executed / held.amount <= D("0.4")
    assert executed + D(at_exchange["prevented_volume"]) == held.amount
    assert sold.status is OrderStatus.FILLED
    assert row.exchange_state == "prevented"
    assert row.filled_amount == executed
    assert "self-match prevention" in (row.error_message or "")
    assert sum((t.amount for t in sold.trades), D(0)) == executed
    assert all(t.exit_reason == "take_profit" and t.realized_pnl is not None for t in sold.trades)
    # and the rest is still held: by the position and at the exchange (nothing locked)
    position = await positions.get(BTC)
    assert position is not None
    assert position.amount == held.amount - executed
    assert fake_upbit.balance("BTC") == held.amount - executed
    assert fake_upbit.locked("BTC") == 0


async def test_a_fully_prevented_order_is_cancelled_with_no_trades(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    _deep_book(fake_upbit, 40, "0.5")
    repo = InMemoryTradingRepository()
    _, positions = _positions()
    fake_upbit.inject_prevented()
    result = await _service(client, repo, positions).market_buy(BTC, D("10000000"), reason="t", cycle_id=None)
    assert result.status is OrderStatus.CANCELLED
    assert repo.trades == {}
    assert repo.orders[result.identifier].exchange_state == "prevented"
    assert await positions.get(BTC) is None
    assert fake_upbit.balance("KRW") == D("100000000")  # the KRW came back
    assert fake_upbit.locked("KRW") == 0


def test_prevented_is_final_and_maps_to_filled_or_cancelled() -> None:
    base = Order("u", "i", BTC, Side.SELL, OrderType.MARKET_SELL, ExchangeOrderState.PREVENTED, datetime.now(UTC))
    assert base.is_final
    assert status_from_exchange(base) is OrderStatus.CANCELLED
    partly = Order(
        "u", "i", BTC, Side.SELL, OrderType.MARKET_SELL, ExchangeOrderState.PREVENTED, datetime.now(UTC),
        executed_volume=D("0.1"),
    )  # fmt: skip
    assert status_from_exchange(partly) is OrderStatus.FILLED


async def test_a_self_match_cancels_our_resting_order_under_cancel_maker(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given our own limit sell resting at 95,003,000 (inside the asks a market buy walks)
    fake_upbit.set_balance("BTC", "1")
    resting = await client.place_order(
        OrderRequest(BTC, Side.SELL, OrderType.LIMIT, "maker", volume=D("0.01"), price=D("95003000"))
    )
    assert resting.state is ExchangeOrderState.WAIT
    # When a market buy (smp_type cancel_maker, the default) would meet it
    taker = await client.place_order(OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "taker", krw_total=D("1000000")))
    # Then our resting order is cancelled by self-match prevention and the buy trades on
    maker = await client.get_order(identifier="maker")
    assert maker.state is ExchangeOrderState.CANCEL
    assert maker.prevented_volume == D("0.01")
    assert (await client.get_order(uuid=taker.uuid)).executed_volume > 0
    assert fake_upbit.locked("BTC") == 0


async def test_a_self_match_under_cancel_taker_settles_the_order_cancelled(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given our own limit sell resting inside the asks, and a service whose client sends cancel_taker
    fake_upbit.set_balance("BTC", "1")
    await client.place_order(
        OrderRequest(BTC, Side.SELL, OrderType.LIMIT, "maker-2", volume=D("0.01"), price=D("95003000"))
    )
    client.smp_type = SmpType.CANCEL_TAKER
    repo = InMemoryTradingRepository()
    _, positions = _positions()
    # When the service buys
    result = await _service(client, repo, positions).market_buy(BTC, D("1000000"), reason="t", cycle_id=None)
    # Then the exchange stopped our buy (prevented, nothing executed): the row is cancelled, no trade, no position
    assert result.status is OrderStatus.CANCELLED
    assert repo.orders[result.identifier].exchange_state == "prevented"
    assert repo.trades == {}
    assert await positions.get(BTC) is None
    assert (await client.get_order(identifier="maker-2")).state is ExchangeOrderState.WAIT


async def test_the_fake_reports_prevented_to_its_order_listeners(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    # Given a listener on the fake's order changes (FakeUpbitWebSocket turns them into myOrder events)
    seen: list[dict[str, object]] = []
    fake_upbit.add_order_listener(seen.append)
    # When an order is stopped by self-match prevention after executing half
    fake_upbit.inject_prevented(executed_share="0.5")
    order = await client.place_order(OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "seen", krw_total=D("100000")))
    # Then the listener saw it placed, its execution, and the final prevented state with what was prevented
    states = [event["state"] for event in seen if event["uuid"] == order.uuid]
    assert states[0] == "wait"
    assert "trade" in states
    assert states[-1] == "prevented"
    assert D(str(seen[-1]["prevented_locked"])) > 0


async def test_the_position_job_sells_a_stop_loss_beyond_30_levels_in_parts_over_the_live_client(
    monkeypatch: pytest.MonkeyPatch, fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given the live pipeline over the Upbit client, holding a position of about 0.63 BTC bought at ~95,000,000
    for name in ("OPENAI_API_KEY", "TRADING_MODE", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AI_ENABLED", "false")
    settings = with_value(load_settings(env_file=None), "trading.symbols", [BTC])
    repo = InMemoryTradingRepository()
    adapters = PipelineAdapters(
        exchange=client,
        repository=repo,
        risk_store=InMemoryRiskStore(orders=repo),
        clock=lambda: datetime.now(UTC),
        strategy=StopAt5Pct(),
        quick_filter=None,
    )
    pipeline = build_pipeline(settings, adapters, mode=MODE, instance="live")
    _deep_book(fake_upbit, 100, "0.01")
    await pipeline.trading.market_buy(BTC, D("60000000"), reason="test", cycle_id=None)
    held = await pipeline.positions.get(BTC)
    assert held is not None
    # When the price falls 8 % (below the 5 % stop) with 0.3 BTC on the first 30 bids, and the position job runs
    fake_upbit.set_orderbook(
        BTC,
        asks=[(87_401_000 + 1000 * i, "0.01") for i in range(100)],
        bids=[(87_400_000 - 1000 * i, "0.01") for i in range(100)],
    )
    fake_upbit.set_ticker(BTC, 87_400_000)
    [report] = await pipeline.check_positions()
    # Then the stop loss sold the whole position in three parts, none refused, each with the exit reason
    assert report.result is not None
    assert report.result.filled
    assert len(report.result.parts) == 3
    sells = [o for o in repo.orders.values() if o.side is Side.SELL]
    assert {o.exit_reason for o in sells} == {"stop_loss"}
    assert {p.status for p in fake_upbit.requests_to("/v1/orders", "POST")} == {201}
    assert await pipeline.positions.get(BTC) is None
    [closed] = await pipeline.positions.store.list_closed_positions(MODE)
    assert closed.exit_reason == "stop_loss"
    assert closed.realized_pnl < 0


class StopAt5Pct(Strategy):
    """Never trades by signal; exits by a 5 % stop."""

    name = "stop_at_5pct"

    def __init__(self, **params: Any) -> None:
        super().__init__(**{"stop_loss_pct": 5, **params})

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        return self.signals(df, np.zeros(len(df), dtype=np.bool_))


async def test_a_self_match_under_reduce_takes_the_overlap_off_both_orders(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given our own limit sell of 0.01 BTC resting at 95,003,000
    fake_upbit.set_balance("BTC", "1")
    await client.place_order(
        OrderRequest(BTC, Side.SELL, OrderType.LIMIT, "maker-3", volume=D("0.01"), price=D("95003000"))
    )
    # When a limit buy of 0.004 BTC at that price comes with smp_type reduce
    taker = await client.place_order(
        OrderRequest(BTC, Side.BUY, OrderType.LIMIT, "taker-3", D("0.004"), D("95003000"), smp_type=SmpType.REDUCE)
    )
    # Then the whole buy overlapped: it ends prevented with nothing executed, the KRW it locked is free again
    after = await client.get_order(uuid=taker.uuid)
    assert after.state is ExchangeOrderState.PREVENTED
    assert (after.executed_volume, after.prevented_volume) == (D(0), D("0.004"))
    assert fake_upbit.locked("KRW") == 0
    # and our resting sell lost the same 0.004 BTC and still waits with the rest
    maker = await client.get_order(identifier="maker-3")
    assert maker.state is ExchangeOrderState.WAIT
    assert (maker.remaining_volume, maker.prevented_volume) == (D("0.006"), D("0.004"))
    assert fake_upbit.locked("BTC") == D("0.006")
