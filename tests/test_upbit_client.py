"""UpbitClient against the fake Upbit server: what crosses the wire, errors, retries, order states."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import jwt
import pandas as pd
import pytest

from src.api.interfaces import ExchangeOrderState, OrderRequest
from src.api.upbit.transport import error_from_response, query_hash
from src.api.upbit_client import UpbitClient
from src.config.settings import load_settings
from src.domain.orders import OrderType, Side
from src.exceptions import (
    AuthError,
    Blocked,
    DuplicateOrderIdentifier,
    ExchangeError,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    InvalidPrice,
    OrderNotFound,
    RateLimited,
    UnderMinTotal,
)
from tests.fakes.upbit_server import FakeUpbit
from tests.support.candles import make_candles

BTC = "KRW-BTC"
T0 = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture
async def client(fake_upbit: FakeUpbit) -> AsyncIterator[UpbitClient]:
    fake_upbit.set_balance("KRW", "1000000")
    fake_upbit.set_orderbook(
        BTC,
        asks=[(95_001_000, "0.001"), (95_002_000, "0.01"), (95_003_000, "1")],
        bids=[(95_000_000, "0.001"), (94_999_000, "0.01"), (94_998_000, "1")],
    )
    upbit = UpbitClient(
        fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key, timeout=0.5, backoff_seconds=0.01
    )
    yield upbit
    await upbit.close()


def market_buy(identifier: str, krw: str) -> OrderRequest:
    return OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, identifier, krw_total=Decimal(krw))


def limit(side: Side, identifier: str, price: str, volume: str) -> OrderRequest:
    return OrderRequest(BTC, side, OrderType.LIMIT, identifier, volume=Decimal(volume), price=Decimal(price))


# --- quotation -----------------------------------------------------------------------------------------


async def test_candles_newest_first_become_an_oldest_first_utc_frame_with_gaps(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given 10 hourly candles with bars 3 and 4 missing (no trades)
    fake_upbit.set_candles(BTC, "1h", make_candles(T0, 10, "1h", skip=[3, 4]))
    # When the client asks for the newest 200
    frame = await client.get_candles(BTC, "1h", count=200)
    # Then it gets 8 rows, oldest first, UTC open-time index, float columns, and the gap stays a gap
    assert list(frame.columns) == ["open", "high", "low", "close", "volume", "value"]
    assert frame.index.name == "timestamp"
    assert str(frame.index.tz) == "UTC"
    assert frame.index.is_monotonic_increasing
    assert len(frame) == 8
    assert frame.index[0] == pd.Timestamp(T0)
    assert T0 + timedelta(hours=3) not in frame.index
    assert all(dtype.kind == "f" for dtype in frame.dtypes)
    wire = fake_upbit.requests_to("/v1/candles/minutes/60")[-1]
    assert wire.params == {"market": [BTC], "count": ["200"]}


async def test_candles_to_is_exclusive_and_pages_meet_without_overlap(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given 50 hourly candles
    fake_upbit.set_candles(BTC, "1h", make_candles(T0, 50, "1h"))
    # When we page backwards with to = the oldest open time of the previous page
    newest = await client.get_candles(BTC, "1h", count=20)
    older = await client.get_candles(BTC, "1h", count=20, to=newest.index[0].to_pydatetime())
    # Then the second page ends just before the first (to is exclusive) and nothing repeats
    assert older.index[-1] == newest.index[0] - timedelta(hours=1)
    assert older.index.intersection(newest.index).empty
    sent_to = fake_upbit.requests_to("/v1/candles/minutes/60")[-1].params["to"]
    assert sent_to == [newest.index[0].strftime("%Y-%m-%dT%H:%M:%SZ")]


@pytest.mark.parametrize("to_text", ["2024-03-01T05:00:00Z", "2024-03-01 05:00:00", "2024-03-01T14:00:00+09:00"])
async def test_fake_accepts_all_three_to_formats(fake_upbit: FakeUpbit, to_text: str) -> None:
    # Given hourly candles from 00:00 UTC
    fake_upbit.set_candles(BTC, "1h", make_candles(T0, 10, "1h"))
    # When a raw request passes 'to' = 05:00 UTC in one of Upbit's formats
    async with httpx.AsyncClient(base_url=fake_upbit.base_url) as http:
        answer = await http.get("/v1/candles/minutes/60", params={"market": BTC, "count": "3", "to": to_text})
    # Then the newest candle opened at 04:00 UTC (05:00 itself is excluded), newest first
    opened = [row["candle_date_time_utc"] for row in answer.json()]
    assert opened == ["2024-03-01T04:00:00", "2024-03-01T03:00:00", "2024-03-01T02:00:00"]
    assert answer.headers["Remaining-Req"].startswith("group=candle; min=")


async def test_candle_count_is_limited_to_200(client: UpbitClient, fake_upbit: FakeUpbit) -> None:
    with pytest.raises(ValueError, match=r"count must be 1\.\.200"):
        await client.get_candles(BTC, "1h", count=201)
    async with httpx.AsyncClient(base_url=fake_upbit.base_url) as http:
        answer = await http.get("/v1/candles/days", params={"market": BTC, "count": "201"})
    assert answer.status_code == 400
    assert answer.json()["error"]["name"] == "validation_error"


async def test_day_and_week_candles_use_their_paths(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.set_candles(BTC, "1d", make_candles(T0, 5, "1d"))
    fake_upbit.set_candles(BTC, "1w", make_candles(datetime(2024, 2, 26, tzinfo=UTC), 3, "1w"))
    days = await client.get_candles(BTC, "1d", count=5)
    weeks = await client.get_candles(BTC, "1w", count=5)
    assert len(days) == 5
    assert len(weeks) == 3
    assert weeks.index[1] - weeks.index[0] == timedelta(weeks=1)


async def test_ticker_and_orderbook_numbers_become_decimals(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.set_ticker(BTC, "95000000")
    [ticker] = await client.get_tickers([BTC])
    [book] = await client.get_orderbooks([BTC])
    assert ticker.trade_price == Decimal("95000000")
    assert book.best_ask == Decimal("95001000")
    assert book.best_bid == Decimal("95000000")
    assert book.asks[0].size == Decimal("0.001")
    assert isinstance(book.total_ask_size, Decimal)
    assert fake_upbit.requests_to("/v1/ticker")[-1].params == {"markets": [BTC]}
    assert fake_upbit.requests_to("/v1/ticker")[-1].jwt_claims is None


# --- auth ----------------------------------------------------------------------------------------------


async def test_accounts_strings_parse_exactly_to_decimal(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.set_balance("BTC", "0.12345678", locked="0.00000001", avg_buy_price="95123456.5")
    balances = {b.currency: b for b in await client.get_balances()}
    assert balances["BTC"].balance == Decimal("0.12345678")
    assert balances["BTC"].locked == Decimal("0.00000001")
    assert balances["BTC"].avg_buy_price == Decimal("95123456.5")
    claims = fake_upbit.requests_to("/v1/accounts")[-1].jwt_claims
    assert claims is not None
    assert claims["access_key"] == fake_upbit.access_key
    assert "query_hash" not in claims  # no parameters, no hash


@pytest.mark.parametrize("algorithm", ["HS256", "HS512"])
async def test_get_with_array_params_carries_the_literal_bracket_query_hash(
    fake_upbit: FakeUpbit, algorithm: str
) -> None:
    # Given a client signing with either algorithm
    async with UpbitClient(
        fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key, jwt_algorithm=algorithm
    ) as upbit:
        # When it lists open orders (states[]=wait&states[]=watch)
        assert await upbit.get_open_orders(BTC) == []
    # Then the fake verified the token and the hash of the literal-bracket query string
    wire = fake_upbit.requests_to("/v1/orders/open")[-1]
    assert wire.status == 200
    assert wire.jwt_alg == algorithm
    expected = "market=KRW-BTC&states[]=wait&states[]=watch&page=1&limit=100"
    assert wire.jwt_claims is not None
    assert wire.jwt_claims["query_hash"] == hashlib.sha512(expected.encode()).hexdigest()
    assert wire.jwt_claims["query_hash_alg"] == "SHA512"


async def test_post_hashes_the_json_body_and_sends_identifier(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    await client.place_order(market_buy("cycle-1-buy", "10000"))
    wire = fake_upbit.requests_to("/v1/orders", "POST")[-1]
    assert wire.status == 201
    assert wire.json == {
        "market": BTC,
        "side": "bid",
        "price": "10000",
        "ord_type": "price",
        "identifier": "cycle-1-buy",
        "smp_type": "cancel_maker",  # always explicit (UPBIT_SMP_TYPE)
    }
    assert wire.headers["content-type"] == "application/json; charset=utf-8"
    assert wire.jwt_claims is not None
    assert wire.jwt_claims["query_hash"] == query_hash(list(wire.json.items()))


async def test_every_request_uses_a_fresh_nonce(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    for _ in range(3):
        await client.get_balances()
    nonces = {r.jwt_claims["nonce"] for r in fake_upbit.requests_to("/v1/accounts") if r.jwt_claims}
    assert len(nonces) == 3


async def test_wrong_secret_is_an_auth_error(fake_upbit: FakeUpbit) -> None:
    async with UpbitClient(fake_upbit.base_url, fake_upbit.access_key, "x" * 64) as upbit:
        with pytest.raises(AuthError) as caught:
            await upbit.get_balances()
    assert caught.value.name == "jwt_verification"
    assert caught.value.status == 401


async def test_fake_rejects_a_reused_nonce_and_a_wrong_query_hash(fake_upbit: FakeUpbit) -> None:
    # Given a token signed for market=KRW-BTC
    fake_upbit.add_market(BTC)
    claims = {"access_key": fake_upbit.access_key, "nonce": "n-1", "query_hash": query_hash([("market", BTC)])}
    claims["query_hash_alg"] = "SHA512"
    token = jwt.encode(claims, fake_upbit.secret_key, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=fake_upbit.base_url) as http:
        first = await http.get("/v1/orders/chance", params={"market": BTC}, headers=headers)
        reused = await http.get("/v1/orders/chance", params={"market": BTC}, headers=headers)
        other = {**claims, "nonce": "n-2"}
        wrong_params = await http.get(
            "/v1/orders/chance",
            params={"market": "KRW-ETH"},
            headers={"Authorization": f"Bearer {jwt.encode(other, fake_upbit.secret_key, algorithm='HS512')}"},
        )
    assert first.status_code == 200
    assert (reused.status_code, reused.json()["error"]["name"]) == (401, "nonce_used")
    assert (wrong_params.status_code, wrong_params.json()["error"]["name"]) == (401, "invalid_query_payload")


async def test_exchange_calls_without_keys_fail_before_sending(fake_upbit: FakeUpbit) -> None:
    async with UpbitClient(fake_upbit.base_url) as upbit:
        with pytest.raises(AuthError, match="UPBIT_ACCESS_KEY"):
            await upbit.get_balances()
    assert fake_upbit.requests_to("/v1/accounts") == []


# --- error names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "name", "expected"),
    [
        (400, "insufficient_funds_bid", InsufficientFunds),
        (400, "insufficient_funds_ask", InsufficientFunds),
        (400, "under_min_total_bid", UnderMinTotal),
        (400, "under_min_total_ask", UnderMinTotal),
        (400, "invalid_price_bid", InvalidPrice),
        (400, "invalid_price_ask", InvalidPrice),
        (400, "create_bid_error", InvalidOrder),
        (400, "create_ask_error", InvalidOrder),
        (400, "validation_error", InvalidOrder),
        (400, "duplicate_identifier", DuplicateOrderIdentifier),
        (401, "jwt_verification", AuthError),
        (401, "invalid_query_payload", AuthError),
        (401, "expired_access_key", AuthError),
        (401, "nonce_used", AuthError),
        (401, "no_authorization_i_p", AuthError),
        (401, "out_of_scope", AuthError),
        (403, "something_new", AuthError),
        (404, "order_not_found", OrderNotFound),
        (429, "too_many_requests", RateLimited),
        (418, "too_many_requests_blocked", Blocked),
        (500, "server_error", ExchangeUnavailable),
        (400, "withdraw_address_not_registered", ExchangeError),
    ],
)
def test_error_names_map_to_typed_errors(status: int, name: str, expected: type[ExchangeError]) -> None:
    response = httpx.Response(status, json={"error": {"name": name, "message": "메시지"}})
    error = error_from_response(response, identifier="id-9")
    assert type(error) is expected
    assert error.name == name
    assert error.status == status
    assert error.context["identifier"] == "id-9"


async def test_insufficient_funds_from_the_exchange(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    with pytest.raises(InsufficientFunds) as caught:
        await client.place_order(market_buy("too-big", "999999999"))
    assert caught.value.name == "insufficient_funds_bid"
    assert caught.value.context["identifier"] == "too-big"


async def test_injected_insufficient_funds(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.inject_insufficient_funds()
    with pytest.raises(InsufficientFunds):
        await client.place_order(market_buy("refused", "10000"))
    assert fake_upbit.order(identifier="refused") is None


async def test_market_sell_under_min_total_is_refused_by_the_exchange(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    fake_upbit.set_balance("BTC", "1")
    with pytest.raises(UnderMinTotal) as caught:
        await client.place_order(OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, "tiny", volume=Decimal("0.00001")))
    assert caught.value.name == "under_min_total_ask"


async def test_off_grid_price_under_the_exchange_tick_table_is_invalid_price(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given the exchange applies the pre-2024 table (tick 5 between 1,000 and 10,000 KRW) and its instruments
    # endpoint is down, so the client can only use today's table (tick 1)
    fake_upbit.tick_time = datetime(2023, 1, 1, tzinfo=UTC)
    fake_upbit.set_orderbook("KRW-XRP", asks=[(1300, 100)], bids=[(1200, 100)])
    fake_upbit.inject_server_error(503, times=3, path="/v1/orderbook/instruments")
    # When the client sends a limit at 1,234 KRW
    with pytest.raises(InvalidPrice) as caught:
        await client.place_order(
            OrderRequest("KRW-XRP", Side.BUY, OrderType.LIMIT, "xrp-1", Decimal("10"), Decimal("1234"))
        )
    # Then the exchange refuses the price
    assert caught.value.name == "invalid_price_bid"


async def test_duplicate_identifier_and_unknown_order(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    await client.place_order(market_buy("once", "10000"))
    with pytest.raises(DuplicateOrderIdentifier):
        await client.place_order(market_buy("once", "10000"))
    with pytest.raises(OrderNotFound):
        await client.get_order(identifier="never-sent")


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"market": BTC, "side": "bid", "ord_type": "price", "price": "10000", "volume": "1"}, "create_bid_error"),
        ({"market": BTC, "side": "ask", "ord_type": "market", "price": "10000", "volume": "1"}, "create_ask_error"),
        ({"market": BTC, "side": "bid", "ord_type": "limit", "price": "95000000"}, "create_bid_error"),
        ({"market": BTC, "side": "bid", "ord_type": "best", "price": "10000"}, "validation_error"),
    ],
)
async def test_fake_enforces_per_ord_type_parameters(
    fake_upbit: FakeUpbit, client: UpbitClient, body: dict[str, str], name: str
) -> None:
    # A raw signed POST (the client's own normalisation would refuse these before sending)
    with pytest.raises(InvalidOrder) as caught:
        await client.transport.request("POST", "/v1/orders", body=body, group="order", auth=True)
    assert caught.value.name == name


# --- normalisation before sending ------------------------------------------------------------------------


async def test_limit_prices_go_on_the_tick_grid_and_volumes_are_truncated(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    fake_upbit.set_balance("BTC", "1")
    await client.place_order(limit(Side.BUY, "lb", "50123456", "0.012345678"))
    await client.place_order(limit(Side.SELL, "ls", "99123456", "0.1"))
    buy, sell = (r.json for r in fake_upbit.requests_to("/v1/orders", "POST"))
    assert (buy["price"], buy["volume"]) == ("50123000", "0.01234567")  # buys round down
    assert sell["price"] == "99124000"  # sells round up


async def test_min_total_is_checked_before_sending(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    with pytest.raises(UnderMinTotal):
        await client.place_order(market_buy("small", "4999.99"))
    with pytest.raises(UnderMinTotal):
        await client.place_order(limit(Side.BUY, "small-limit", "95000000", "0.00005"))
    assert fake_upbit.requests_to("/v1/orders", "POST") == []
    await client.place_order(market_buy("whole-won", "5000.7"))
    assert fake_upbit.requests_to("/v1/orders", "POST")[-1].json["price"] == "5000"


# --- order states ----------------------------------------------------------------------------------------


async def test_market_buy_ending_cancel_with_executed_volume_is_a_fill(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # When we market-buy 10,000 KRW against a 95,001,000 ask (a remainder below 1e-8 BTC stays unspent)
    placed = await client.place_order(market_buy("mb-1", "10000"))
    settled = await client.get_order(uuid=placed.uuid)
    # Then the order is 'cancel' with executed volume: a fill, not a failure
    assert settled.state is ExchangeOrderState.CANCEL
    assert settled.is_filled
    assert settled.executed_volume == Decimal("0.00010526")
    assert settled.executed_funds == Decimal("0.00010526") * Decimal("95001000")
    assert settled.paid_fee == settled.executed_funds * Decimal("0.0005")
    assert settled.trades[0].price == Decimal("95001000")
    assert fake_upbit.balance("KRW") == Decimal("1000000") - settled.executed_funds - settled.paid_fee
    assert fake_upbit.balance("BTC") == Decimal("0.00010526")


async def test_limit_rests_as_wait_then_fills_when_the_book_crosses(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    placed = await client.place_order(limit(Side.BUY, "rest", "94000000", "0.001"))
    assert [o.identifier for o in await client.get_open_orders(BTC)] == ["rest"]
    assert fake_upbit.locked("KRW") == Decimal("94000") * Decimal("1.0005")
    fake_upbit.set_orderbook(BTC, asks=[(93_999_000, "1")], bids=[(93_000_000, "1")])
    filled = await client.get_order(uuid=placed.uuid)
    assert filled.state is ExchangeOrderState.DONE
    assert filled.average_price == Decimal("94000000")  # the resting order is the maker: its own price
    assert fake_upbit.locked("KRW") == 0


async def test_cancel_answers_wait_then_cancel_on_the_next_get(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    placed = await client.place_order(limit(Side.BUY, "to-cancel", "90000000", "0.001"))
    answer = await client.cancel_order(identifier="to-cancel")
    assert answer.state is ExchangeOrderState.WAIT
    later = await client.get_order(uuid=placed.uuid)
    assert later.state is ExchangeOrderState.CANCEL
    assert not later.is_filled
    assert fake_upbit.balance("KRW") == Decimal("1000000")
    assert await client.get_open_orders() == []


async def test_order_chance_reads_fee_and_minimum(client: UpbitClient) -> None:
    chance = await client.get_order_chance(BTC)
    assert chance.bid_fee == Decimal("0.0005")
    assert chance.min_total == Decimal("5000")
    assert chance.krw_available == Decimal("1000000")


# --- rate limits and retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("json_body", [False, True])
async def test_429_backs_off_then_succeeds(fake_upbit: FakeUpbit, client: UpbitClient, json_body: bool) -> None:
    fake_upbit.inject_rate_limit(times=2, json_body=json_body, path="/v1/ticker")
    fake_upbit.set_ticker(BTC, "95000000")
    [ticker] = await client.get_tickers([BTC])
    assert ticker.trade_price == Decimal("95000000")
    assert [r.status for r in fake_upbit.requests_to("/v1/ticker")] == [429, 429, 200]


async def test_429_on_every_attempt_raises_rate_limited(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.inject_rate_limit(times=5, path="/v1/ticker")
    with pytest.raises(RateLimited):
        await client.get_tickers([BTC])
    assert len(fake_upbit.requests_to("/v1/ticker")) == 3


async def test_order_post_refused_with_429_is_retried_once_created(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.inject_rate_limit(times=1, method="POST", path="/v1/orders")
    await client.place_order(market_buy("after-429", "10000"))
    assert [r.status for r in fake_upbit.requests_to("/v1/orders", "POST")] == [429, 201]
    assert len(fake_upbit.orders) == 1


async def test_client_waits_when_remaining_req_reaches_zero(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    # Given a budget of 2 ticker requests per second
    fake_upbit.rate_limits["ticker"] = 2
    fake_upbit.set_ticker(BTC, "95000000")
    # When the client sends 5 in a row
    for _ in range(5):
        await client.get_tickers([BTC])
    # Then it waited for the next window whenever sec hit 0: the fake never had to answer 429
    assert [r.status for r in fake_upbit.requests_to("/v1/ticker")] == [200] * 5


async def test_418_stops_all_requests_until_the_block_passes(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    # Given the exchange blocks the client for 0.3 s
    fake_upbit.set_ticker(BTC, "95000000")
    fake_upbit.inject_block(0.3, path="/v1/ticker")
    with pytest.raises(Blocked):
        await client.get_tickers([BTC])
    # When the client is asked again during the block, it fails fast without sending anything
    with pytest.raises(Blocked, match="no request sent"):
        await client.get_balances()
    assert len(fake_upbit.requests) == 1
    # Then after the block it works again
    await asyncio.sleep(0.35)
    assert (await client.get_tickers([BTC]))[0].trade_price == Decimal("95000000")


async def test_fake_blocks_a_client_that_keeps_sending_after_429(fake_upbit: FakeUpbit) -> None:
    fake_upbit.rate_limits["ticker"] = 1
    fake_upbit.block_after_excess = 1
    fake_upbit.set_ticker(BTC, "1000")
    async with httpx.AsyncClient(base_url=fake_upbit.base_url) as http:
        statuses = [(await http.get("/v1/ticker", params={"markets": BTC})).status_code for _ in range(6)]
    # 200 within the budget, then 429, then 418 for keeping on (a second boundary may restart the count)
    assert 418 in statuses
    assert statuses.index(429) < statuses.index(418)
    assert all(status == 418 for status in statuses[statuses.index(418) :])


async def test_5xx_on_get_is_retried(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.inject_server_error(503, path="/v1/accounts")
    await client.get_balances()
    assert [r.status for r in fake_upbit.requests_to("/v1/accounts")] == [503, 200]


async def test_timeout_on_get_is_retried(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.inject_slow(1.0, path="/v1/accounts")
    balances = await client.get_balances()
    assert balances[0].currency == "KRW"
    assert len(fake_upbit.requests_to("/v1/accounts")) == 2


async def test_5xx_on_order_post_is_not_retried(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.inject_server_error(500, method="POST", path="/v1/orders", after_processing=True)
    with pytest.raises(ExchangeUnavailable) as caught:
        await client.place_order(market_buy("unknown-1", "10000"))
    assert caught.value.context["identifier"] == "unknown-1"
    assert len(fake_upbit.requests_to("/v1/orders", "POST")) == 1
    # The caller reconciles by identifier: the order exists on the exchange
    found = await client.get_order(identifier="unknown-1")
    assert found.is_filled


async def test_timeout_on_order_post_is_not_retried_and_reconciles(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.inject_slow(1.0, method="POST", path="/v1/orders")
    with pytest.raises(ExchangeUnavailable, match="reconcile by identifier") as caught:
        await client.place_order(market_buy("slow-1", "10000"))
    assert caught.value.context["identifier"] == "slow-1"
    assert len(fake_upbit.requests_to("/v1/orders", "POST")) == 1
    assert (await client.get_order(identifier="slow-1")).executed_volume > 0


async def test_connection_dropped_after_accept_leaves_an_order_to_reconcile(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given the exchange executes the order but the connection drops before the answer
    fake_upbit.inject_drop_after_accept()
    with pytest.raises(ExchangeUnavailable) as caught:
        await client.place_order(market_buy("crash-1", "10000"))
    # Then the client did not re-send, and reconciliation by identifier finds the fill
    assert caught.value.context["identifier"] == "crash-1"
    assert len(fake_upbit.requests_to("/v1/orders", "POST")) == 1
    order = await client.get_order(identifier="crash-1")
    assert order.state is ExchangeOrderState.CANCEL
    assert order.is_filled


async def test_connection_refused_is_unavailable(client: UpbitClient) -> None:
    async with UpbitClient("http://127.0.0.1:9", "a", "b", timeout=0.5, max_attempts=2, backoff_seconds=0.01) as dead:
        with pytest.raises(ExchangeUnavailable):
            await dead.get_tickers([BTC])


# --- standalone process ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_fake_runs_as_a_separate_process() -> None:
    # Given the fake started as its own process (as the scheduler's tests will do)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upbit_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()

        async def read_ticker() -> Decimal:
            async with UpbitClient(base_url) as upbit:
                return (await upbit.get_tickers([BTC]))[0].trade_price

        # Then a client reaches it with the printed base URL
        assert asyncio.run(read_ticker()) > 0
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_from_settings_uses_base_url_keys_and_timeout(
    monkeypatch: pytest.MonkeyPatch, fake_upbit: FakeUpbit
) -> None:
    monkeypatch.setenv("UPBIT_BASE_URL", fake_upbit.base_url)
    monkeypatch.setenv("UPBIT_ACCESS_KEY", fake_upbit.access_key)
    monkeypatch.setenv("UPBIT_SECRET_KEY", fake_upbit.secret_key)
    monkeypatch.setenv("UPBIT_TIMEOUT_SECONDS", "0.2")
    fake_upbit.set_balance("KRW", "5000")
    fake_upbit.inject_slow(1.0, times=3, path="/v1/accounts")
    async with UpbitClient.from_settings(load_settings(env_file=None)) as upbit:
        with pytest.raises(ExchangeUnavailable):
            await upbit.get_balances()  # every attempt timed out after 0.2 s
        assert (await upbit.get_balances())[0].balance == Decimal("5000")


async def test_market_list_and_tick_instruments(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.add_market("KRW-ETH", "이더리움", "Ethereum")
    markets = {row["market"]: row for row in await client.get_markets()}
    assert markets["KRW-ETH"]["english_name"] == "Ethereum"
    async with httpx.AsyncClient(base_url=fake_upbit.base_url) as http:
        answer = await http.get("/v1/orderbook/instruments", params={"markets": BTC})
    assert answer.json()[0]["tick_size"] == "1000"


async def test_limit_sell_rests_then_fills_and_credits_krw_minus_fee(
    fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    fake_upbit.set_balance("BTC", "0.01")
    placed = await client.place_order(limit(Side.SELL, "sell-high", "96000000", "0.01"))
    assert fake_upbit.locked("BTC") == Decimal("0.01")
    fake_upbit.set_orderbook(BTC, asks=[(96_200_000, "1")], bids=[(96_100_000, "1")])
    filled = await client.get_order(uuid=placed.uuid)
    # A resting order is a maker: it trades at its own limit price
    assert filled.state is ExchangeOrderState.DONE
    funds = Decimal("96000000") * Decimal("0.01")
    assert fake_upbit.balance("KRW") == Decimal("1000000") + funds - funds * Decimal("0.0005")
    assert fake_upbit.balance("BTC") == 0


async def test_post_answer_final_reports_the_outcome_at_once(fake_upbit: FakeUpbit, client: UpbitClient) -> None:
    fake_upbit.post_answer = "final"
    placed = await client.place_order(market_buy("final-1", "10000"))
    assert placed.state is ExchangeOrderState.CANCEL
    assert placed.is_filled
    assert placed.trades == ()  # the POST answer never carries trades


async def test_fake_honours_keep_alive_and_connection_close(fake_upbit: FakeUpbit) -> None:
    fake_upbit.set_ticker(BTC, "1000")
    async with httpx.AsyncClient(base_url=fake_upbit.base_url) as http:
        kept = [await http.get("/v1/ticker", params={"markets": BTC}) for _ in range(3)]
        closed = [
            await http.get("/v1/ticker", params={"markets": BTC}, headers={"Connection": "close"}) for _ in range(3)
        ]
    assert [r.headers["connection"] for r in kept] == ["keep-alive"] * 3
    assert [r.headers["connection"] for r in closed] == ["close"] * 3
    assert all(r.status_code == 200 for r in kept + closed)
