"""GET /api/v1/trades: filters, newest-first order, keyset and offset paging, one trade, statistics."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from backend.tests.conftest import Seeder, at
from src.domain.modes import TradingMode
from src.domain.orders import Side, TradeStatus


async def _ten_trades(seed: Seeder) -> None:
    await seed.add(
        *(seed.trade(at(minute), symbol="KRW-BTC" if minute % 2 else "KRW-ETH") for minute in range(10)),
    )


async def test_trades_are_listed_newest_first_with_money_as_exact_strings(
    client: httpx.AsyncClient, seed: Seeder
) -> None:
    # Given three trades at different times, one with a 20-digit amount
    await seed.add(
        seed.trade(at(0)),
        seed.trade(at(2), price="123456789012.12345678", amount="0.00000001", fee="0.00000617"),
        seed.trade(at(1)),
    )
    # When the list is read
    response = await client.get("/api/v1/trades")
    # Then the newest comes first and money is a decimal string, digit for digit
    assert response.status_code == 200
    body = response.json()
    assert [item["trade_id"] for item in body["items"]] == ["t-00002", "t-00003", "t-00001"]
    assert body["items"][0]["price"] == "123456789012.12345678"
    assert body["items"][0]["fee"] == "0.00000617"
    assert body["next_cursor"] is None
    assert body["total"] is None


async def test_zero_money_is_fixed_point_not_scientific(client: httpx.AsyncClient, seed: Seeder) -> None:
    # Given a trade whose fee is zero (stored as 0.00000000)
    await seed.add(seed.trade(at(0), fee="0", realized_pnl="0"))
    # When it is read, as a page and alone
    page = (await client.get("/api/v1/trades")).json()
    single = (await client.get("/api/v1/trades/t-00001")).json()
    # Then zero is written as a plain decimal, never as 0E-8
    assert page["items"][0]["fee"] == "0.00000000"
    assert page["items"][0]["realized_pnl"] == "0.00000000"
    assert single["fee"] == "0.00000000"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"symbol": "KRW-ETH"}, {"t-00001", "t-00003"}),
        ({"side": "sell"}, {"t-00002"}),
        ({"status": "failed"}, {"t-00004"}),
        ({"mode": "live"}, {"t-00005"}),
        ({"from_date": "2026-01-05T12:01:00Z", "to_date": "2026-01-05T12:03:00+00:00"}, {"t-00002", "t-00003"}),
        ({"from_date": "2026-01-05T21:03:00+09:00"}, {"t-00004", "t-00005"}),
    ],
)
async def test_filters_select_matching_trades(
    client: httpx.AsyncClient, seed: Seeder, query: dict[str, str], expected: set[str]
) -> None:
    # Given trades differing in symbol, side, status, mode and time
    await seed.add(
        seed.trade(at(0), symbol="KRW-ETH"),
        seed.trade(at(1), side=Side.SELL, realized_pnl="10"),
        seed.trade(at(2), symbol="KRW-ETH"),
        seed.trade(at(3), status=TradeStatus.FAILED),
        seed.trade(at(4), mode=TradingMode.LIVE),
    )
    # When filtered
    response = await client.get("/api/v1/trades", params=query)
    # Then exactly the matching trades come back (to_date is exclusive, time zones are honoured)
    assert response.status_code == 200
    assert {item["trade_id"] for item in response.json()["items"]} == expected


async def test_cursor_walks_every_trade_once_even_with_equal_timestamps(
    client: httpx.AsyncClient, seed: Seeder
) -> None:
    # Given seven trades, four of which share one timestamp
    await seed.add(*(seed.trade(at(min(minute, 3))) for minute in range(7)))
    # When pages of two are followed by cursor
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = (await client.get("/api/v1/trades", params=params)).json()
        seen.extend(item["trade_id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    # Then every trade appears once, newest first (ties broken by id), over four pages
    assert pages == 4
    assert seen == ["t-00007", "t-00006", "t-00005", "t-00004", "t-00003", "t-00002", "t-00001"]


async def test_skip_paging_returns_total_page_and_page_size(client: httpx.AsyncClient, seed: Seeder) -> None:
    # Given ten trades
    await _ten_trades(seed)
    # When the third page of three is asked for by offset
    body = (await client.get("/api/v1/trades", params={"skip": "6", "limit": "3"})).json()
    # Then it holds trades 4..2 with the total and the page number
    assert [item["trade_id"] for item in body["items"]] == ["t-00004", "t-00003", "t-00002"]
    assert (body["total"], body["page"], body["page_size"]) == (10, 3, 3)
    assert body["next_cursor"] is not None
    # And a skip past the end is an empty page, still with the total
    empty = (await client.get("/api/v1/trades", params={"skip": "50", "symbol": "KRW-ETH"})).json()
    assert (empty["items"], empty["total"]) == ([], 5)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"skip": "-1"}, "skip"),
        ({"side": "short"}, "side"),
        ({"symbol": "btc"}, "symbol"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "W10", "skip": "0"}, "cursor"),
        ({"from_date": "2026-01-05T12:00:00"}, "from_date"),
        ({"from_date": "263083"}, "from_date"),
        ({"to_date": "2026-01-05T12:00Z"}, "to_date"),
        ({"from_date": "2026-01-06T00:00:00Z", "to_date": "2026-01-05T00:00:00Z"}, "from_date"),
    ],
)
async def test_bad_query_parameters_are_422_naming_the_field(
    client: httpx.AsyncClient, query: dict[str, str], field: str
) -> None:
    # When a parameter is out of bounds, malformed, or inconsistent with another
    response = await client.get("/api/v1/trades", params=query)
    # Then the answer is 422 and names the parameter, without echoing internals
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(error["loc"][-1] == field for error in detail), detail
    assert all(set(error) == {"loc", "msg", "type"} for error in detail)


async def test_limit_at_its_bound_is_accepted(client: httpx.AsyncClient, seed: Seeder) -> None:
    await _ten_trades(seed)
    response = await client.get("/api/v1/trades", params={"limit": "500"})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 10


async def test_one_trade_by_trade_id_and_404_for_unknown(client: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.add(seed.trade(at(0), side=Side.SELL, realized_pnl="-1500.5"))
    found = await client.get("/api/v1/trades/t-00001")
    assert found.status_code == 200
    assert found.json()["realized_pnl"] == "-1500.50000000"
    missing = await client.get("/api/v1/trades/nope")
    assert (missing.status_code, missing.json()) == (404, {"detail": "trade not found"})


async def test_statistics_are_exact_with_realised_pnl_win_rate_and_unmatched_sells(
    client: httpx.AsyncClient, seed: Seeder
) -> None:
    # Given buys and sells in two markets on two days; one sell lacks a realised P&L; one trade failed
    await seed.add(
        seed.trade(at(0), price="100000000", amount="0.002", fee="100"),
        seed.trade(at(1), price="110000000", amount="0.001", fee="55.1"),
        seed.trade(at(2), side=Side.SELL, price="120000000", amount="0.001", fee="60", realized_pnl="13333.33"),
        seed.trade(at(3), side=Side.SELL, price="90000000", amount="0.001", fee="45", realized_pnl="-10000.01"),
        seed.trade(at(4), side=Side.SELL, price="95000000", amount="0.0005", fee="23.75"),
        seed.trade(at(24 * 60), symbol="KRW-ETH", price="5000000", amount="0.1", fee="250"),
        seed.trade(at(24 * 60 + 1), symbol="KRW-ETH", side=Side.SELL, price="5100000", amount="0.1", fee="255",
                   realized_pnl="9495.00000001"),
        seed.trade(at(5), status=TradeStatus.FAILED, price="1", amount="1", fee="1"),
    )  # fmt: skip
    # When the summary is read
    response = await client.get("/api/v1/trades/statistics/summary")
    assert response.status_code == 200
    body = response.json()
    overall = body["overall"]
    # Then counts, volume, fees and P&L are exact over completed trades only
    assert (overall["trade_count"], overall["buy_count"], overall["sell_count"]) == (7, 3, 4)
    assert Decimal(overall["volume_krw"]) == Decimal("200000") + 110000 + 120000 + 90000 + 47500 + 500000 + 510000
    assert Decimal(overall["fee_krw"]) == Decimal("788.85")
    assert Decimal(overall["realized_pnl_krw"]) == Decimal("12828.32000001")
    # And the win rate counts only sells with a P&L; the one without is reported, not guessed
    assert (overall["winning_sells"], overall["losing_sells"], overall["unmatched_sells"]) == (2, 1, 1)
    assert overall["win_rate_pct"] == "66.67"
    # And per symbol the average prices are volume-weighted
    btc = next(entry for entry in body["by_symbol"] if entry["symbol"] == "KRW-BTC")
    assert Decimal(btc["avg_buy_price"]) == (Decimal("310000") / Decimal("0.003")).quantize(Decimal("1e-8"))
    assert Decimal(btc["avg_sell_price"]) == Decimal("257500") / Decimal("0.0025")
    assert btc["win_rate_pct"] == "50.00"
    # And the days are separate periods
    assert [(entry["period_start"], entry["trade_count"]) for entry in body["by_period"]] == [
        ("2026-01-05T00:00:00Z", 5),
        ("2026-01-06T00:00:00Z", 2),
    ]


async def test_statistics_filter_by_symbol_and_period_by_month(client: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.add(
        seed.trade(at(0), symbol="KRW-ETH", price="5000000", amount="0.1", fee="250"),
        seed.trade(at(0), price="1000", amount="1", fee="1"),
    )
    body = (
        await client.get("/api/v1/trades/statistics/summary", params={"symbol": "KRW-ETH", "period": "month"})
    ).json()
    assert body["overall"]["trade_count"] == 1
    assert body["overall"]["win_rate_pct"] is None
    assert [entry["symbol"] for entry in body["by_symbol"]] == ["KRW-ETH"]
    assert body["by_period"][0]["period_start"] == "2026-01-01T00:00:00Z"
