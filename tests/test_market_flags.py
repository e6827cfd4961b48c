"""Upbit's market flags and test orders through the real client against the fake: ``market/all?is_details=true``
parsed into ``MarketStatus``, the ``MarketStatusBook`` gate, and ``POST /v1/orders/test`` with ``market_offline``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from src.api.interfaces import OrderRequest
from src.api.upbit.parsing import parse_market_status
from src.api.upbit_client import UpbitClient
from src.domain.market_stream import MarketStatus
from src.domain.orders import OrderType, Side
from src.exceptions import DataError, InvalidOrder, MarketOffline
from src.trading.market_status import MarketStatusBook
from src.trading.preflight import OrderPreflight
from tests.fakes.upbit_server import FakeUpbit

AT = datetime(2026, 12, 5, 12, tzinfo=UTC)


@pytest.fixture
async def client(fake_upbit: FakeUpbit) -> AsyncIterator[UpbitClient]:
    fake_upbit.seed_demo()
    async with UpbitClient(fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key) as upbit:
        yield upbit


def _buy(symbol: str = "KRW-BTC", total: str = "10000") -> OrderRequest:
    return OrderRequest(symbol, Side.BUY, OrderType.MARKET_BUY, "bot-1-x", krw_total=Decimal(total))


async def test_market_flags_come_from_the_detailed_market_list_without_keys(fake_upbit: FakeUpbit) -> None:
    # Given Upbit flags KRW-ETH with a caution and KRW-XRP with a warning
    fake_upbit.seed_demo()
    fake_upbit.set_market_event("KRW-ETH", caution=True)
    fake_upbit.set_market_event("KRW-XRP", warning=True, caution=True)
    # When a client without keys (paper mode) reads the market list with details
    async with UpbitClient(fake_upbit.base_url) as public:
        statuses = {s.symbol: s for s in await public.get_market_statuses()}
    # Then each market's flags are read, and the request asked for the details
    assert statuses["KRW-BTC"] == MarketStatus("KRW-BTC")
    assert statuses["KRW-ETH"].reason == "market_caution"
    assert statuses["KRW-XRP"].reason == "market_warning"
    [request] = fake_upbit.requests_to("/v1/market/all")
    assert request.params == {"is_details": ["true"]}
    assert request.jwt_claims is None


def test_caution_as_an_object_of_alert_flags_is_flagged_when_any_is_true() -> None:
    # The SDK's shape: caution is an object of alert types (since 2026-01 any alert level sets caution)
    row = {"market": "KRW-ABC", "market_event": {"warning": False, "caution": {"PRICE_FLUCTUATIONS": True}}}
    quiet = {"market": "KRW-DEF", "market_event": {"warning": False, "caution": {"PRICE_FLUCTUATIONS": False}}}
    assert parse_market_status(row) == MarketStatus("KRW-ABC", caution=True)
    assert parse_market_status(quiet) == MarketStatus("KRW-DEF")
    assert parse_market_status({"market": "KRW-GHI"}) == MarketStatus("KRW-GHI")  # no market_event: clear
    with pytest.raises(DataError):
        parse_market_status({"market": "KRW-JKL", "market_event": "warning"})


def test_the_book_refuses_entries_in_flagged_markets_and_reports_changes() -> None:
    book = MarketStatusBook()
    changed = book.update([MarketStatus("KRW-ABC", caution=True), MarketStatus("KRW-BTC")], AT)
    assert changed == [MarketStatus("KRW-ABC", caution=True)]
    assert book.entry_refusal("KRW-ABC") == "market_caution: Upbit flags KRW-ABC with a caution; no new buys"
    assert book.entry_refusal("KRW-BTC") is None
    assert book.entry_refusal("KRW-NEW") is None  # not listed: clear
    # When the caution becomes a warning, then cleared
    assert book.update([MarketStatus("KRW-ABC", warning=True)], AT) == [MarketStatus("KRW-ABC", warning=True)]
    assert (book.entry_refusal("KRW-ABC") or "").startswith("market_warning:")
    assert book.update([], AT) == [MarketStatus("KRW-ABC")]
    assert book.flagged == []


async def test_a_test_order_is_validated_but_never_placed(client: UpbitClient, fake_upbit: FakeUpbit) -> None:
    krw = fake_upbit.balance("KRW")
    await client.test_order(_buy())
    [request] = fake_upbit.requests_to("/v1/orders/test", "POST")
    assert request.json["ord_type"] == "price"
    assert "identifier" not in request.json  # the identifier stays free for the real order
    assert fake_upbit.orders == []
    assert fake_upbit.balance("KRW") == krw
    with pytest.raises(InvalidOrder):  # Upbit's other refusals come back as they would for the order
        await client.test_order(_buy("KRW-NOPE"))


async def test_a_market_offline_after_maintenance_refuses_the_test_order(
    client: UpbitClient, fake_upbit: FakeUpbit
) -> None:
    # Given KRW-BTC is offline after maintenance
    fake_upbit.set_market_offline("KRW-BTC")
    preflight = OrderPreflight(client)
    # When the first order is tested, then Upbit's market_offline comes back as MarketOffline
    refusal = await preflight.refusal(_buy())
    assert isinstance(refusal, MarketOffline)
    assert refusal.name == "market_offline"
    # And the market is tested again next time; once back online the test passes and is not repeated
    fake_upbit.set_market_offline("KRW-BTC", False)
    assert await preflight.refusal(_buy()) is None
    assert await preflight.refusal(_buy()) is None
    assert len(fake_upbit.requests_to("/v1/orders/test", "POST")) == 2
    # And after a maintenance notice (reset), the next order is tested again
    preflight.reset(["KRW-BTC"])
    assert preflight.needs_test("KRW-BTC")
