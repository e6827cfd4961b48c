"""PaperExchange: Upbit's rules and order states, fills against the current book, store-backed restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest

from src.api.interfaces import Balance, ExchangeOrderState, Orderbook, OrderbookLevel, OrderRequest, Ticker
from src.api.paper_account import InMemoryPaperAccountStore
from src.api.paper_exchange import PaperExchange
from src.api.upbit.parsing import decimal_text, order_to_payload, parse_order
from src.api.upbit_client import UpbitClient
from src.config.settings import load_settings
from src.data.replay import ReplayMarketSource
from src.domain.orders import OrderType, Side
from src.exceptions import (
    DuplicateOrderIdentifier,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
    UnderMinTotal,
)
from tests.fakes.upbit_server import FakeUpbit
from tests.support.candles import make_candles

BTC = "KRW-BTC"
FEE = Decimal("0.0005")
NOW = datetime(2025, 1, 2, 3, 0, tzinfo=UTC)


class ScriptedBook:
    """A market-data source whose book the test sets (our own port, no network)."""

    def __init__(self) -> None:
        self.books: dict[str, Orderbook] = {}

    def set(self, symbol: str, asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> None:
        self.books[symbol] = Orderbook(
            symbol,
            NOW,
            tuple(OrderbookLevel(Decimal(p), Decimal(s)) for p, s in asks),
            tuple(OrderbookLevel(Decimal(p), Decimal(s)) for p, s in bids),
        )

    async def get_tickers(self, symbols: list[str]) -> list[Ticker]:
        return [Ticker(s, self.books[s].best_bid or Decimal("0"), NOW) for s in symbols]

    async def get_orderbooks(self, symbols: list[str]) -> list[Orderbook]:
        return [self.books[s] for s in symbols]

    async def get_candles(
        self, symbol: str, timeframe: str, count: int = 200, to: datetime | None = None
    ) -> pd.DataFrame:
        return make_candles(NOW, 3, timeframe)


@pytest.fixture
def book() -> ScriptedBook:
    source = ScriptedBook()
    source.set(
        BTC,
        asks=[("95001000", "0.0001"), ("95002000", "0.001"), ("95003000", "1")],
        bids=[("95000000", "0.0001"), ("94999000", "0.001"), ("94998000", "1")],
    )
    return source


@pytest.fixture
def store() -> InMemoryPaperAccountStore:
    return InMemoryPaperAccountStore()


@pytest.fixture
def paper(book: ScriptedBook, store: InMemoryPaperAccountStore) -> PaperExchange:
    return PaperExchange(book, store, fee_rate=FEE, starting_krw=Decimal("1000000"), clock=lambda: NOW)


def market_buy(identifier: str, krw: str) -> OrderRequest:
    return OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, identifier, krw_total=Decimal(krw))


def market_sell(identifier: str, volume: str) -> OrderRequest:
    return OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, identifier, volume=Decimal(volume))


def limit(side: Side, identifier: str, price: str, volume: str) -> OrderRequest:
    return OrderRequest(BTC, side, OrderType.LIMIT, identifier, volume=Decimal(volume), price=Decimal(price))


async def balances_of(paper: PaperExchange) -> dict[str, Balance]:
    return {b.currency: b for b in await paper.get_balances()}


async def test_starting_krw_comes_from_settings_when_the_store_is_empty(
    monkeypatch: pytest.MonkeyPatch, book: ScriptedBook, store: InMemoryPaperAccountStore
) -> None:
    monkeypatch.setenv("PAPER_STARTING_KRW", "2500000")
    monkeypatch.setenv("TRADING_FEE_RATE", "0.001")
    paper = PaperExchange.from_settings(load_settings(env_file=None), book, store)
    assert await paper.get_balances() == [Balance("KRW", Decimal("2500000"))]
    assert (await paper.get_order_chance(BTC)).bid_fee == Decimal("0.001")
    assert store.balances["KRW"].balance == Decimal("2500000")


async def test_market_buy_walks_the_asks_and_ends_cancel_with_executed_volume(paper: PaperExchange) -> None:
    # When 200,000 KRW is spent against asks of 0.0001 @ 95,001,000, 0.001 @ 95,002,000, 1 @ 95,003,000
    order = await paper.place_order(market_buy("mb-1", "200000"))
    # Then it took the first two levels fully and the third in part; the sub-1e-8 remainder is unspent
    assert order.state is ExchangeOrderState.CANCEL
    assert order.is_filled
    assert [t.price for t in order.trades] == [Decimal("95001000"), Decimal("95002000"), Decimal("95003000")]
    assert order.trades[0].volume == Decimal("0.0001")
    assert order.trades[1].volume == Decimal("0.001")
    spent_before_third = Decimal("0.0001") * 95001000 + Decimal("0.001") * 95002000
    third = ((Decimal("200000") - spent_before_third) / 95003000).quantize(Decimal("0.00000001"), rounding="ROUND_DOWN")
    assert order.trades[2].volume == third
    assert order.executed_volume == Decimal("0.0011") + third
    assert order.paid_fee == order.executed_funds * FEE
    balances = await balances_of(paper)
    assert balances["KRW"].balance == Decimal("1000000") - order.executed_funds - order.paid_fee
    assert balances["BTC"].balance == order.executed_volume
    assert balances["BTC"].avg_buy_price == order.executed_funds / order.executed_volume


async def test_market_buy_that_divides_exactly_is_done(paper: PaperExchange, book: ScriptedBook) -> None:
    book.set(BTC, asks=[("10000", "100")], bids=[("9990", "100")])
    order = await paper.place_order(market_buy("exact", "50000"))
    assert order.state is ExchangeOrderState.DONE
    assert order.executed_volume == Decimal("5")


async def test_market_sell_walks_the_bids_and_takes_the_fee_from_proceeds(paper: PaperExchange) -> None:
    await paper.place_order(market_buy("in", "200000"))
    held = (await balances_of(paper))["BTC"].balance
    krw_before = (await balances_of(paper))["KRW"].balance
    order = await paper.place_order(market_sell("out", str(held)))
    assert order.state is ExchangeOrderState.DONE
    assert order.trades[0].price == Decimal("95000000")
    balances = await balances_of(paper)
    assert balances["KRW"].balance == krw_before + order.executed_funds - order.paid_fee
    assert "BTC" not in balances  # flat positions are not listed


@pytest.mark.parametrize(
    ("request_", "name"),
    [
        # Refused by the order rules before anything is simulated, unnamed like the live client's own refusal
        (market_buy("mb-small", "4999"), None),
        (limit(Side.BUY, "l-small", "95000000", "0.00005"), None),
        # Refused by the simulated exchange (the total depends on the book), with Upbit's name
        (market_sell("ms-small", "0.00001"), "under_min_total_ask"),
    ],
)
async def test_orders_below_5000_krw_are_refused(paper: PaperExchange, request_: OrderRequest, name: str) -> None:
    await paper.place_order(market_buy("seed", "100000"))
    with pytest.raises(UnderMinTotal) as caught:
        await paper.place_order(request_)
    assert caught.value.name == name


async def test_off_grid_limit_goes_on_the_grid_and_volumes_are_truncated(paper: PaperExchange) -> None:
    # Until issue 12 paper refused an off-grid limit (InvalidPrice) that the live client rounds and sends
    buy = await paper.place_order(limit(Side.BUY, "off-grid", "90000500", "0.0012345678"))
    assert (buy.price, buy.volume) == (Decimal("90000000"), Decimal("0.00123456"))  # buys round down
    await paper.place_order(market_buy("stack", "200000"))
    sell = await paper.place_order(limit(Side.SELL, "off-grid-sell", "96000500", "0.001"))
    assert sell.price == Decimal("96001000")  # sells round up


async def test_insufficient_funds_for_buy_and_sell(paper: PaperExchange) -> None:
    with pytest.raises(InsufficientFunds) as buy:
        await paper.place_order(market_buy("too-much", "1000000"))  # the fee does not fit
    with pytest.raises(InsufficientFunds) as sell:
        await paper.place_order(market_sell("no-coins", "0.01"))
    assert (buy.value.name, sell.value.name) == ("insufficient_funds_bid", "insufficient_funds_ask")
    assert (await balances_of(paper))["KRW"].balance == Decimal("1000000")


@pytest.mark.parametrize(
    "request_",
    [
        OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "v", volume=Decimal("1"), krw_total=Decimal("10000")),
        OrderRequest(BTC, Side.SELL, OrderType.MARKET_BUY, "s", krw_total=Decimal("10000")),
        OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, "p", volume=Decimal("1"), price=Decimal("1")),
        OrderRequest(BTC, Side.BUY, OrderType.LIMIT, "nv", price=Decimal("95000000")),
        # a price is never a KRW total, nor the other way round
        OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "mb-price", price=Decimal("10000")),
        OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, "ms-total", volume=Decimal("1"), krw_total=Decimal("1")),
        OrderRequest(
            BTC, Side.BUY, OrderType.LIMIT, "l-total", Decimal("1"), Decimal("95000000"), krw_total=Decimal("1")
        ),
    ],
)
async def test_parameters_must_fit_the_order_type(paper: PaperExchange, request_: OrderRequest) -> None:
    with pytest.raises(InvalidOrder):
        await paper.place_order(request_)


async def test_a_volume_below_8_decimals_truncates_to_nothing_like_the_live_client(paper: PaperExchange) -> None:
    # Until issue 12 paper refused 9 decimals (InvalidOrder); the live client truncates to 0: under the minimum
    with pytest.raises(UnderMinTotal):
        await paper.place_order(limit(Side.BUY, "9d", "95000000", "0.000000001"))


async def test_market_order_beyond_the_visible_book_is_refused(paper: PaperExchange, book: ScriptedBook) -> None:
    book.set(BTC, asks=[("10000", "1")], bids=[("9990", "1")])
    with pytest.raises(InvalidOrder, match="first 30 levels"):
        await paper.place_order(market_buy("deep", "20000"))


async def test_identifiers_are_unique_forever(paper: PaperExchange) -> None:
    await paper.place_order(market_buy("same", "10000"))
    with pytest.raises(DuplicateOrderIdentifier):
        await paper.place_order(market_buy("same", "10000"))
    with pytest.raises(UnderMinTotal):
        await paper.place_order(market_buy("refused-once", "100"))
    with pytest.raises(DuplicateOrderIdentifier):
        await paper.place_order(market_buy("refused-once", "10000"))


async def test_limit_takes_what_crosses_then_rests_and_fills_when_the_book_moves(
    paper: PaperExchange, book: ScriptedBook
) -> None:
    # Given a limit buy at 95,001,000 for 0.001 (only 0.0001 is offered at or below that price)
    order = await paper.place_order(limit(Side.BUY, "lim", "95001000", "0.001"))
    assert order.state is ExchangeOrderState.WAIT
    assert order.executed_volume == Decimal("0.0001")
    assert order.remaining_volume == Decimal("0.0009")
    locked = Decimal("95001000") * Decimal("0.0009") * (1 + FEE)
    assert (await balances_of(paper))["KRW"].locked == locked
    assert [o.identifier for o in await paper.get_open_orders(BTC)] == ["lim"]
    # When the asks fall through the limit
    book.set(BTC, asks=[("94900000", "1")], bids=[("94800000", "1")])
    filled = await paper.get_order(identifier="lim")
    # Then the rest fills at the limit price and nothing stays locked
    assert filled.state is ExchangeOrderState.DONE
    assert filled.executed_volume == Decimal("0.001")
    assert filled.trades[-1].price == Decimal("95001000")
    balances = await balances_of(paper)
    assert balances["KRW"].locked == 0
    assert balances["BTC"].balance == Decimal("0.001")
    assert await paper.get_open_orders() == []


async def test_cancel_releases_the_locked_funds(paper: PaperExchange) -> None:
    await paper.place_order(limit(Side.BUY, "low", "90000000", "0.001"))
    cancelled = await paper.cancel_order(identifier="low")
    assert cancelled.state is ExchangeOrderState.CANCEL
    assert not cancelled.is_filled
    assert (await balances_of(paper))["KRW"] == Balance("KRW", Decimal("1000000"))
    with pytest.raises(InvalidOrder):
        await paper.cancel_order(identifier="low")


async def test_orders_and_balances_survive_a_restart(
    paper: PaperExchange, book: ScriptedBook, store: InMemoryPaperAccountStore
) -> None:
    # Given an order placed before a crash
    placed = await paper.place_order(market_buy("before-crash", "10000"))
    # When a new exchange starts over the same store
    restarted = PaperExchange(book, store, fee_rate=FEE, starting_krw=Decimal("999"), clock=lambda: NOW)
    # Then reconciliation by identifier finds the fill and the balances are those of the account
    found = await restarted.get_order(identifier="before-crash")
    assert found == placed
    assert (await balances_of(restarted))["KRW"].balance == Decimal("1000000") - placed.executed_funds - placed.paid_fee
    with pytest.raises(DuplicateOrderIdentifier):
        await restarted.place_order(market_buy("before-crash", "10000"))
    with pytest.raises(OrderNotFound):
        await restarted.get_order(identifier="never")


async def test_order_payload_round_trips(paper: PaperExchange) -> None:
    order = await paper.place_order(market_buy("payload", "10000"))
    payload = order_to_payload(order)
    assert payload["ord_type"] == "price"
    assert payload["state"] == "cancel"
    assert isinstance(payload["executed_volume"], str)
    assert parse_order(payload) == order


async def test_live_paper_reads_the_real_book_and_never_sends_orders(fake_upbit: FakeUpbit) -> None:
    # Given live paper trading: market data from Upbit (the fake), fills simulated locally
    fake_upbit.set_orderbook(BTC, asks=[(95_001_000, "1")], bids=[(95_000_000, "1")])
    async with UpbitClient(fake_upbit.base_url) as upbit:
        paper = PaperExchange(upbit, InMemoryPaperAccountStore(), starting_krw=Decimal("1000000"))
        order = await paper.place_order(market_buy("live-paper", "10000"))
    assert order.is_filled
    assert order.trades[0].price == Decimal("95001000")
    assert {r.path for r in fake_upbit.requests} == {"/v1/orderbook"}
    assert all(r.jwt_claims is None for r in fake_upbit.requests)


async def test_replay_paper_fills_against_the_synthetic_book_at_the_simulated_clock() -> None:
    candles = make_candles(datetime(2023, 1, 1, tzinfo=UTC), 48, "1h", start_price=20_000_000, volume=50)
    replay = ReplayMarketSource({BTC: {"1h": candles}})
    replay.advance_to(datetime(2023, 1, 2, 6, tzinfo=UTC))
    paper = PaperExchange(replay, InMemoryPaperAccountStore(), starting_krw=Decimal("1000000"), clock=replay.now)
    order = await paper.place_order(market_buy("replay-1", "100000"))
    book = replay.orderbook(BTC)
    assert order.created_at == datetime(2023, 1, 2, 6, tzinfo=UTC)
    assert order.trades[0].price == book.best_ask
    assert order.is_filled


async def test_get_order_needs_a_key(paper: PaperExchange) -> None:
    with pytest.raises(ValueError, match="uuid or identifier"):
        await paper.get_order()


async def test_limit_sell_rests_until_the_bids_trade_through(paper: PaperExchange, book: ScriptedBook) -> None:
    await paper.place_order(market_buy("stack", "200000"))
    held = (await balances_of(paper))["BTC"].balance
    order = await paper.place_order(limit(Side.SELL, "tp", "96000000", str(held)))
    assert order.state is ExchangeOrderState.WAIT
    assert (await paper.get_order_chance(BTC)).base_available == 0
    book.set(BTC, asks=[("96200000", "1")], bids=[("96100000", "1")])
    filled = await paper.get_order(uuid=order.uuid)
    assert filled.state is ExchangeOrderState.DONE
    assert filled.trades[-1].price == Decimal("96000000")
    assert "BTC" not in await balances_of(paper)


# --- one set of order rules: paper refuses and rounds exactly as the live client ---------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        market_buy("mb-small", "4999.99"),
        market_buy("mb-zero", "0"),
        limit(Side.BUY, "l-small", "95000000", "0.00005"),
        limit(Side.BUY, "9d", "95000000", "0.000000001"),
        limit(Side.SELL, "l-zero", "0", "1"),
        OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "v", volume=Decimal("1"), krw_total=Decimal("10000")),
        OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, "p", volume=Decimal("1"), price=Decimal("1")),
        market_sell("ms-dust", "0.000000001"),
        OrderRequest("BTC-ETH", Side.BUY, OrderType.MARKET_BUY, "not-krw", krw_total=Decimal("10000")),
        OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "", krw_total=Decimal("10000")),
    ],
)
async def test_paper_refuses_what_the_live_client_refuses_alike(fake_upbit: FakeUpbit, request_: OrderRequest) -> None:
    async with UpbitClient(fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key) as upbit:
        with pytest.raises(ExchangeError) as live:
            await upbit.place_order(request_)
        paper = PaperExchange(upbit, InMemoryPaperAccountStore(), starting_krw=Decimal("1000000"))
        with pytest.raises(ExchangeError) as simulated:
            await paper.place_order(request_)
    assert (type(simulated.value), simulated.value.name) == (type(live.value), live.value.name)
    assert fake_upbit.requests_to("/v1/orders", "POST") == []


@pytest.mark.parametrize(
    "request_", [limit(Side.BUY, "off-grid", "50123456", "0.012345678"), market_buy("fraction", "5000.7")]
)
async def test_paper_puts_an_order_on_the_grid_exactly_as_the_live_client_sends_it(
    fake_upbit: FakeUpbit, request_: OrderRequest
) -> None:
    fake_upbit.set_balance("KRW", "1000000")
    fake_upbit.set_orderbook(BTC, asks=[(95_001_000, "1")], bids=[(95_000_000, "1")])
    async with UpbitClient(fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key) as upbit:
        await upbit.place_order(request_)
        paper = PaperExchange(upbit, InMemoryPaperAccountStore(), starting_krw=Decimal("10000000"))
        order = await paper.place_order(request_)
    sent = fake_upbit.requests_to("/v1/orders", "POST")[-1].json
    assert order.price is not None
    assert decimal_text(order.price) == sent["price"]
    assert (order.volume and decimal_text(order.volume)) == sent.get("volume")
