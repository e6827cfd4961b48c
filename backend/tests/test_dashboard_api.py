"""What the dashboard adds to the API: its static files and CSP, the candles of the market view and the AI spend
against the budgets (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pandas as pd

from backend.tests.conftest import API_KEY, AppFactory, Seeder
from src.config.env import PROJECT_ROOT
from tests.fakes.upbit_server import FakeUpbit


async def test_dashboard_is_served_with_its_own_content_security_policy(anonymous: httpx.AsyncClient) -> None:
    # Given the app, When a browser opens /dashboard
    redirect = await anonymous.get("/dashboard")
    page = await anonymous.get("/dashboard/")
    script = await anonymous.get("/dashboard/app.js")
    # Then it is sent to the page, which loads only its own files (no CDN, no inline script)
    assert redirect.status_code == 307
    assert redirect.headers["location"] == "/dashboard/"
    assert page.status_code == 200
    assert '<script src="app.js"></script>' in page.text
    assert "http" not in page.text.replace("http-equiv", "")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "connect-src 'self'" in policy
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    # and the API keeps its strict policy
    assert (await anonymous.get("/health")).headers["content-security-policy"].startswith("default-src 'none'")


async def test_dashboard_config_names_the_mode_to_show_first(make_client: AppFactory) -> None:
    # Given an API configured for replay with public reads
    client = await make_client(TRADING_MODE="replay", API_PUBLIC_READ="true")
    # When the page asks before log-in, Then it learns the mode and that reads are public, and nothing secret
    body = (await client.get("/dashboard/config")).json()
    assert body == {"mode": "replay", "public_read": True}


async def test_replay_candles_come_from_the_bundled_history(client: httpx.AsyncClient) -> None:
    # When the market view asks for a week of replayed hourly candles
    response = await client.get(
        "/api/v1/market/candles",
        params={
            "symbol": "KRW-BTC",
            "timeframe": "1h",
            "mode": "replay",
            "from_date": "2023-12-01T00:00:00Z",
            "to_date": "2023-12-08T00:00:00Z",
        },
    )
    # Then they are the bundled file's rows of that range (its 6-hour gap of 3 December stays a gap), oldest
    # first, with open time and OHLCV
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "bundled"
    assert body["mode"] == "replay"
    candles = body["candles"]
    file = pd.read_csv(PROJECT_ROOT / "backtest_data" / "hourly" / "KRW-BTC_1h.csv", parse_dates=["timestamp"])
    in_range = file[(file.timestamp >= "2023-12-01T00:00:00Z") & (file.timestamp < "2023-12-08T00:00:00Z")]
    assert len(candles) == len(in_range) == 7 * 24 - 6
    assert [candle[4] for candle in candles] == in_range.close.astype(float).tolist()
    assert candles[0][0] == "2023-12-01T00:00:00Z"
    assert candles[-1][0] == "2023-12-07T23:00:00Z"
    first = candles[0]
    assert first[2] >= max(first[1], first[4]) >= min(first[1], first[4]) >= first[3] > 0


async def test_candles_reject_an_unknown_timeframe_or_market(client: httpx.AsyncClient) -> None:
    # When the timeframe or the market is not one the system knows, Then 422 / 404 with the reason
    bad_timeframe = await client.get("/api/v1/market/candles", params={"symbol": "KRW-BTC", "timeframe": "7m"})
    bad_symbol = await client.get("/api/v1/market/candles", params={"symbol": "btc", "mode": "replay"})
    missing = await client.get("/api/v1/market/candles", params={"symbol": "KRW-XRP", "mode": "replay"})
    assert bad_timeframe.status_code == 422
    assert "unknown timeframe" in bad_timeframe.text
    assert bad_symbol.status_code == 422
    assert missing.status_code == 404
    assert "KRW-XRP" in missing.json()["detail"]


async def test_candles_need_a_reader(make_client: AppFactory) -> None:
    # Given reads are not public, When an anonymous client asks, Then 401
    anonymous = await make_client()
    response = await anonymous.get("/api/v1/market/candles", params={"symbol": "KRW-BTC", "mode": "replay"})
    assert response.status_code == 401


async def test_ai_usage_adds_up_the_day_and_the_month_against_the_budgets(
    make_client: AppFactory, seed: Seeder
) -> None:
    # Given model calls on 14 and 15 December and one in November, and a call that spent no tokens (cache)
    cached = seed.decision(datetime(2023, 12, 14, 9, tzinfo=UTC))
    cached.prompt_tokens = cached.completion_tokens = 0
    cached.cost_usd = Decimal("0")
    await seed.add(
        seed.decision(datetime(2023, 12, 14, 1, tzinfo=UTC)),
        seed.decision(datetime(2023, 12, 14, 23, 59, tzinfo=UTC)),
        seed.decision(datetime(2023, 12, 15, 0, tzinfo=UTC)),
        seed.decision(datetime(2023, 11, 30, 23, tzinfo=UTC)),
        cached,
    )
    client = await make_client(
        headers={"X-API-Key": API_KEY},
        AI_DAILY_BUDGET_USD="0.5",
        AI_MONTHLY_BUDGET_USD="7",
    )
    # When the overview asks for 14 December
    body = (await client.get("/api/v1/ai/usage", params={"day": "2023-12-14"})).json()
    # Then the day holds its two calls, the month its three, each at 0.000228 USD, next to the budgets
    money = ("day_cost_usd", "daily_budget_usd", "month_cost_usd", "monthly_budget_usd")
    assert {key: Decimal(value) if key in money else value for key, value in body.items()} == {
        "day": "2023-12-14",
        "day_calls": 2,
        "day_cost_usd": Decimal("0.000456"),
        "daily_budget_usd": Decimal("0.5"),
        "month_calls": 3,
        "month_cost_usd": Decimal("0.000684"),
        "monthly_budget_usd": Decimal("7"),
    }


async def test_paper_candles_come_from_upbit_and_its_refusals_are_named(
    make_client: AppFactory, fake_upbit: FakeUpbit
) -> None:
    # Given an exchange with 200 hourly KRW-BTC candles, and the API in paper mode pointed at it
    fake_upbit.seed_demo()
    client = await make_client(headers={"X-API-Key": API_KEY}, UPBIT_BASE_URL=fake_upbit.base_url)
    # When the market view asks for the newest 50
    response = await client.get("/api/v1/market/candles", params={"symbol": "KRW-BTC", "timeframe": "1h", "limit": 50})
    # Then they are Upbit's, oldest first, one request to its candle endpoint without keys
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "upbit"
    assert body["mode"] == "paper"
    assert len(body["candles"]) == 50
    times = [candle[0] for candle in body["candles"]]
    assert times == sorted(times)
    assert len(fake_upbit.requests_to("/v1/candles/minutes/60")) == 1
    # When the exchange does not know the market, Then 404 with Upbit's reason; when it is down, 502
    unknown = await client.get("/api/v1/market/candles", params={"symbol": "KRW-NOPE", "timeframe": "1h"})
    assert unknown.status_code == 404
    assert "KRW-NOPE" in unknown.json()["detail"]
    fake_upbit.stop()
    down = await client.get("/api/v1/market/candles", params={"symbol": "KRW-BTC", "timeframe": "1h"})
    assert down.status_code == 502
    assert "Upbit did not answer" in down.json()["detail"]
