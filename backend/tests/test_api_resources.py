"""Orders, AI decisions and portfolio endpoints."""

from __future__ import annotations

import httpx
import pytest

from backend.tests.conftest import Seeder, at
from src.domain.orders import OrderStatus


async def test_orders_filter_by_state_newest_first(client: httpx.AsyncClient, seed: Seeder) -> None:
    # Given orders in several states
    await seed.add(
        seed.order(at(0), status=OrderStatus.FILLED),
        seed.order(at(1), status=OrderStatus.PENDING),
        seed.order(at(2), status=OrderStatus.FAILED),
        seed.order(at(3), status=OrderStatus.PENDING, symbol="KRW-ETH"),
    )
    # When the pending ones are asked for
    body = (await client.get("/api/v1/orders", params={"state": "pending"})).json()
    # Then only they come back, newest first, with their identifiers and money as strings
    assert [item["identifier"] for item in body["items"]] == ["bot-00004", "bot-00002"]
    assert body["items"][0]["requested_total"] == "100000.00000000"
    assert body["items"][0]["order_type"] == "price"
    all_orders = (await client.get("/api/v1/orders", params={"limit": "3"})).json()
    assert len(all_orders["items"]) == 3
    assert all_orders["next_cursor"] is not None
    assert (await client.get("/api/v1/orders", params={"state": "lost"})).status_code == 422


async def test_ai_decisions_show_override_model_and_cost_but_not_the_prompt(
    client: httpx.AsyncClient, seed: Seeder
) -> None:
    # Given a buy the validator turned into a hold, and a plain hold
    await seed.add(
        seed.decision(at(0), decision="buy", final_decision="hold", overridden=True),
        seed.decision(at(1), decision="hold", final_decision="hold", confidence=None, symbol="KRW-ETH"),
    )
    # When the overridden decisions are listed
    response = await client.get("/api/v1/ai/decisions", params={"overridden": "true"})
    # Then the adviser's word, the final decision, why, the model and the cost are there
    [item] = response.json()["items"]
    assert (item["decision"], item["final_decision"], item["overridden"]) == ("buy", "hold", True)
    assert item["override_reasons"] == ["rsi above 70"]
    assert (item["confidence"], item["reason"], item["model"]) == ("72.50", "breakout with volume", "gpt-4o-mini")
    assert item["cost_usd"] == "0.00022800"
    assert (item["prompt_tokens"], item["completion_tokens"]) == (1200, 80)
    assert "prompt" not in item
    assert "secret prompt text" not in response.text


@pytest.mark.parametrize(
    ("query", "count"),
    [({"symbol": "KRW-ETH"}, 1), ({"decision": "buy"}, 1), ({"final_decision": "hold"}, 2), ({}, 2)],
)
async def test_ai_decision_filters(client: httpx.AsyncClient, seed: Seeder, query: dict[str, str], count: int) -> None:
    await seed.add(
        seed.decision(at(0), decision="buy", final_decision="hold", overridden=True),
        seed.decision(at(1), decision="hold", final_decision="hold", symbol="KRW-ETH"),
    )
    assert len((await client.get("/api/v1/ai/decisions", params=query)).json()["items"]) == count


async def test_ai_decisions_list_the_cycles_decisions_and_the_filters_calls_on_request(
    client: httpx.AsyncClient, seed: Seeder
) -> None:
    # Given a cycle's decision and a quick-filter model call (purpose=filter)
    filter_call = seed.decision(at(1), decision="hold", final_decision="hold")
    filter_call.purpose = "filter"
    await seed.add(seed.decision(at(0)), filter_call)
    # When decisions are listed, then only the cycle's come back; ?purpose=filter lists the filter's calls
    [decision] = (await client.get("/api/v1/ai/decisions")).json()["items"]
    assert decision["purpose"] == "decision"
    [call] = (await client.get("/api/v1/ai/decisions", params={"purpose": "filter"})).json()["items"]
    assert (call["purpose"], call["cost_usd"], call["prompt_tokens"]) == ("filter", "0.00022800", 1200)
    assert (await client.get("/api/v1/ai/decisions", params={"purpose": "backtest"})).status_code == 422


async def test_portfolio_latest_snapshot_and_history(client: httpx.AsyncClient, seed: Seeder) -> None:
    # Given no snapshot, the latest is a 404 that says so
    missing = await client.get("/api/v1/portfolio")
    assert (missing.status_code, missing.json()) == (404, {"detail": "no portfolio snapshot yet"})
    # Given three snapshots
    await seed.add(
        seed.snapshot(at(0), "10000000.00"), seed.snapshot(at(120), "10250000.50", "0.025"),
        seed.snapshot(at(60), "9900000.00", "-0.01"),
    )  # fmt: skip
    # Then the latest is the newest by time, exact
    latest = (await client.get("/api/v1/portfolio")).json()
    assert (latest["total_value_krw"], latest["profit_rate"]) == ("10250000.50", "0.02500000")
    assert latest["positions"] == {"KRW-BTC": {"amount": "0.05"}}
    # And the history is newest first, filterable by time, and empty for another mode
    history = (await client.get("/api/v1/portfolio/history", params={"from_date": "2026-01-05T12:30:00Z"})).json()
    assert [item["total_value_krw"] for item in history["items"]] == ["10250000.50", "9900000.00"]
    live = (await client.get("/api/v1/portfolio/history", params={"mode": "live"})).json()
    assert live["items"] == []
