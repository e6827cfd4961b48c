"""The FakeUpbit routes the official SDK found missing, through our own transport: ``POST /v1/orders/test``,
``GET /v1/orders/closed`` and the public ``GET /v1/trades/ticks``; and the order listener behind myOrder events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from src.api.upbit.transport import UpbitTransport
from src.exceptions import DuplicateOrderIdentifier, InsufficientFunds, InvalidOrder, InvalidPrice, UnderMinTotal
from tests.fakes.upbit_server import FakeUpbit

BTC = "KRW-BTC"


@pytest.fixture
async def upbit(fake_upbit: FakeUpbit) -> AsyncIterator[UpbitTransport]:
    fake_upbit.set_balance("KRW", "1000000")
    fake_upbit.set_orderbook(BTC, asks=[(95_001_000, "1")], bids=[(95_000_000, "1")])
    transport = UpbitTransport(fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key, backoff_seconds=0.01)
    yield transport
    await transport.close()


def limit_body(identifier: str, price: str = "90000000", volume: str = "0.001") -> dict[str, str]:
    return {
        "market": BTC,
        "side": "bid",
        "ord_type": "limit",
        "price": price,
        "volume": volume,
        "identifier": identifier,
    }


async def post(upbit: UpbitTransport, path: str, body: dict[str, str]) -> Any:
    return await upbit.request("POST", path, body=body, group="order", auth=True, identifier=body.get("identifier"))


async def test_orders_test_answers_like_an_order_and_places_nothing(
    fake_upbit: FakeUpbit, upbit: UpbitTransport
) -> None:
    # When an order is tested
    answer = await post(upbit, "/v1/orders/test", limit_body("t-1"))
    # Then the answer is order-shaped, but nothing rests, nothing is locked, and the identifier is still free
    assert (answer["state"], answer["identifier"], answer["price"], answer["volume"]) == (
        "wait",
        "t-1",
        "90000000",
        "0.001",
    )
    assert fake_upbit.order(identifier="t-1") is None
    assert fake_upbit.locked("KRW") == 0
    assert fake_upbit.balance("KRW") == Decimal("1000000")
    placed = await post(upbit, "/v1/orders", limit_body("t-1"))
    assert placed["identifier"] == "t-1"
    assert fake_upbit.requests_to("/v1/orders/test")[0].status == 201


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (limit_body("bad-tick", price="90000001"), InvalidPrice),
        (limit_body("too-small", volume="0.00001"), UnderMinTotal),
        (limit_body("too-big", volume="1"), InsufficientFunds),
        ({"market": BTC, "side": "bid", "ord_type": "price", "volume": "1", "identifier": "mixed"}, InvalidOrder),
    ],
)
async def test_orders_test_refuses_what_an_order_would_be_refused_for(
    fake_upbit: FakeUpbit, upbit: UpbitTransport, body: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await post(upbit, "/v1/orders/test", body)
    assert fake_upbit.orders == []


async def test_orders_test_refuses_an_identifier_already_used(upbit: UpbitTransport) -> None:
    await post(upbit, "/v1/orders", limit_body("used-1"))
    with pytest.raises(DuplicateOrderIdentifier):
        await post(upbit, "/v1/orders/test", limit_body("used-1"))


async def test_closed_orders_lists_done_and_cancelled_orders_newest_first(
    fake_upbit: FakeUpbit, upbit: UpbitTransport
) -> None:
    # Given a filled limit buy, a cancelled limit and an open limit
    await post(upbit, "/v1/orders", limit_body("c-1", price="95001000", volume="0.0001"))
    await post(upbit, "/v1/orders", limit_body("c-2"))
    await upbit.request("DELETE", "/v1/order", params=[("identifier", "c-2")], group="default", auth=True)
    await post(upbit, "/v1/orders", limit_body("c-3"))
    # When the closed orders are listed
    closed = await upbit.get("/v1/orders/closed", [("market", BTC)], group="default", auth=True)
    cancelled = await upbit.get("/v1/orders/closed", [("states[]", "cancel")], group="default", auth=True)
    done = await upbit.get("/v1/orders/closed", [("state", "done")], group="default", auth=True)
    oldest_first = await upbit.get("/v1/orders/closed", [("order_by", "asc")], group="default", auth=True)
    # Then the open one is not there, the states filter and the order work
    assert [o["identifier"] for o in closed] == ["c-2", "c-1"]
    assert [o["identifier"] for o in cancelled] == ["c-2"]
    assert [o["identifier"] for o in done] == ["c-1"]
    assert [o["identifier"] for o in oldest_first] == ["c-1", "c-2"]


@pytest.mark.parametrize(
    "params",
    [
        [("states[]", "wait")],
        [("limit", "1001")],
        [("start_time", "2026-12-01T00:00:00+09:00"), ("end_time", "2026-12-09T00:00:00+09:00")],
        [("start_time", "yesterday")],
    ],
)
async def test_closed_orders_refuses_bad_parameters(upbit: UpbitTransport, params: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidOrder):  # validation_error
        await upbit.get("/v1/orders/closed", params, group="default", auth=True)


async def test_closed_orders_takes_a_millisecond_range(upbit: UpbitTransport) -> None:
    await post(
        upbit, "/v1/orders", {"market": BTC, "side": "bid", "ord_type": "price", "price": "10000", "identifier": "m-1"}
    )
    now = datetime.now(UTC)
    inside = [("start_time", str(int((now - timedelta(minutes=1)).timestamp() * 1000)))]
    before = [("end_time", str(int((now - timedelta(hours=1)).timestamp() * 1000)))]
    assert [o["identifier"] for o in await upbit.get("/v1/orders/closed", inside, group="default", auth=True)] == [
        "m-1"
    ]
    assert await upbit.get("/v1/orders/closed", before, group="default", auth=True) == []


async def test_trade_ticks_are_public_and_newest_first(fake_upbit: FakeUpbit, upbit: UpbitTransport) -> None:
    # Given two executions on the fake
    fake_upbit.set_orderbook(BTC, asks=[(95_001_000, "0.0001"), (95_002_000, "1")], bids=[(95_000_000, "1")])
    await post(
        upbit, "/v1/orders", {"market": BTC, "side": "bid", "ord_type": "price", "price": "20000", "identifier": "x"}
    )
    # When anyone asks without a JWT
    public = UpbitTransport(fake_upbit.base_url)
    try:
        ticks = await public.get("/v1/trades/ticks", [("market", BTC), ("count", "5")], group="trade")
        one = await public.get("/v1/trades/ticks", [("market", BTC)], group="trade")
        older = await public.get(
            "/v1/trades/ticks",
            [("market", BTC), ("count", "5"), ("cursor", str(ticks[0]["sequential_id"]))],
            group="trade",
        )
    finally:
        await public.close()
    # Then the executions come newest first in Upbit's shape, JSON numbers, paged by cursor
    assert [t["trade_price"] for t in ticks] == [95_002_000.0, 95_001_000.0]
    assert set(ticks[0]) >= {
        "market",
        "trade_date_utc",
        "trade_time_utc",
        "timestamp",
        "trade_volume",
        "ask_bid",
        "sequential_id",
    }
    assert ticks[0]["ask_bid"] == "BID"
    assert len(one) == 1
    assert older == ticks[1:]
    assert fake_upbit.requests_to("/v1/trades/ticks")[0].jwt_claims is None


async def test_every_order_change_reaches_the_listeners(fake_upbit: FakeUpbit, upbit: UpbitTransport) -> None:
    events: list[dict[str, Any]] = []
    fake_upbit.add_order_listener(events.append)
    fake_upbit.add_order_listener(lambda _event: 1 / 0)  # a broken listener does not break the exchange
    await post(upbit, "/v1/orders", limit_body("l-1", price="95001000", volume="0.0001"))
    assert [e["state"] for e in events] == ["wait", "trade", "done"]
    assert events[1]["trade"]["price"] == "95001000"
    assert events[1]["trade"]["fee"] == "4.75005"
    assert {e["identifier"] for e in events} == {"l-1"}
