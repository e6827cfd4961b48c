"""The hottest reads (``backend.app.api.hot_reads``) and the read cache (``backend.app.services.read_cache``):
the fast path answers byte for byte what FastAPI's route answers and leaves everything else to it, and a cached
read never outlives the event that changed it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.outbox import add_event
from backend.app.db.repositories.bot import BotRepository
from backend.app.models import TradeRow
from backend.app.schemas.trades import TRADE_FIELDS, TRADE_PAGE_JSON
from backend.app.services.read_cache import ReadCache
from backend.tests.conftest import ADMIN_PASSWORD, API_KEY, AppFactory, Seeder, SettingsFactory, app_of, at
from src.domain.events import EventType
from src.domain.exits import ExitReason
from src.domain.orders import Side
from src.exceptions import ConfigurationError

KEY = {"X-API-Key": API_KEY}


async def _both(
    make_client: AppFactory, headers: dict[str, str] | None = KEY, **env: str
) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    """The app with its fast path, and the same app with every request through FastAPI's routing."""
    fast = await make_client(headers=headers, API_READ_CACHE_SECONDS="0", **env)
    routed = await make_client(headers=headers, metrics_options={"hot_reads": False}, API_READ_CACHE_SECONDS="0", **env)
    return fast, routed


async def _seed_varied(seed: Seeder) -> None:
    rows = []
    for n in range(12):
        side = Side.SELL if n % 3 == 0 else Side.BUY
        trade = seed.trade(
            at(n) + timedelta(microseconds=123_450 * (n % 2)),  # whole seconds and fractions
            side=side,
            price=f"{1000 + n}.5",
            amount="0.00000001" if n == 4 else "1.25",
            realized_pnl="-12.5" if side is Side.SELL else None,
        )
        trade.trade_id = f't-{n:03d}-é"\\\u2028'  # text the JSON must escape alike
        trade.exit_reason = ExitReason.STOP_LOSS if n == 6 else None
        rows.append(trade)
    await seed.add(*rows)


async def test_the_fast_path_answers_byte_for_byte_what_the_route_answers(
    make_client: AppFactory, seed: Seeder
) -> None:
    # Given trades with fractions of seconds, tiny amounts, text to escape, exits and no P&L
    await _seed_varied(seed)
    fast, routed = await _both(make_client)
    first = await fast.get("/api/v1/trades", params={"limit": "5"})
    cursor = first.json()["next_cursor"]
    queries = ["", "?limit=5", "?limit=500", f"?limit=5&cursor={cursor}", f"?cursor={cursor}&limit=7"]
    queries += ["?mode=paper&limit=3", "?mode=live", "?symbol=KRW-BTC&side=sell", "?status=completed&side=buy&limit=2"]
    queries += [f"?mode=paper&cursor={cursor}", "?symbol=KRW-ETH"]
    for query in queries:
        # When the same page is read through the fast path and through FastAPI's route
        a, b = await fast.get("/api/v1/trades" + query), await routed.get("/api/v1/trades" + query)
        # Then status, body and content type are the same
        assert (a.status_code, a.headers["content-type"], a.content) == (
            b.status_code,
            b.headers["content-type"],
            b.content,
        )
    a, b = await fast.get("/api/v1/bot/status"), await routed.get("/api/v1/bot/status")
    assert a.status_code == b.status_code == 200
    assert _without_age(a.json()) == _without_age(b.json())


def _without_age(body: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in body.items() if key != "heartbeat_age_seconds"}


async def test_orjson_pages_are_the_bytes_of_the_reference_serialiser(make_client: AppFactory, seed: Seeder) -> None:
    # Given varied trades, read as the page's served rows
    await _seed_varied(seed)
    fast, _routed = await _both(make_client)
    body = (await fast.get("/api/v1/trades", params={"limit": "50"})).content
    page = orjson.loads(body)
    # When the same page is serialised by the TypedDict reference (TRADE_PAGE_JSON, mirroring TradePage)
    items = [{**item, "created_at": datetime.fromisoformat(item["created_at"])} for item in page["items"]]
    reference = TRADE_PAGE_JSON.dump_json({**page, "items": items})
    # Then the bytes are identical, key order included
    assert body == reference
    assert tuple(page["items"][0]) == TRADE_FIELDS


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("?limit=0", KEY, 422),
        ("?limit=501", KEY, 422),
        ("?limit=05", KEY, 200),  # pydantic takes it; the fast path leaves it to FastAPI
        ("?limit=abc", KEY, 422),
        ("?cursor=not-a-cursor", KEY, 422),
        ("?cursor=", KEY, 422),
        ("?limit=5&limit=6", KEY, 200),
        ("?skip=0", KEY, 200),
        ("?symbol=KRW-BTC", KEY, 200),
        ("?symbol=krw-btc", KEY, 422),
        ("?mode=bogus", KEY, 422),
        ("?side=SELL", KEY, 422),
        ("?from_date=2026-01-05T12:00:00Z", KEY, 200),
        ("?symbol=KRW%2DBTC", KEY, 200),
        ("?unknown=1", KEY, 200),
        ("", {"X-API-Key": "wrong"}, 401),
        ("", {"X-API-Key": "wrong", "Authorization": "Bearer x"}, 401),
        ("", {"Authorization": "Bearer not-a-token"}, 401),
        ("", {"Authorization": "Basic abc"}, 401),
        ("", {}, 401),
    ],
)
async def test_what_the_fast_path_does_not_take_gets_fastapis_answer(
    make_client: AppFactory, seed: Seeder, query: str, headers: dict[str, str], status: int
) -> None:
    # Given trades, and the app with and without its fast path
    await seed.add(seed.trade(at(0)), seed.trade(at(1)))
    fast, routed = await _both(make_client, headers=None)
    # When an unusual or refused request is sent to both
    a = await fast.get("/api/v1/trades" + query, headers=headers)
    b = await routed.get("/api/v1/trades" + query, headers=headers)
    # Then both answer the same status and body (FastAPI's own, for the refusals)
    assert a.status_code == b.status_code == status
    assert a.content == b.content
    assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")


async def test_public_reads_and_bearer_tokens_take_the_fast_path_as_the_route_would(
    make_client: AppFactory, seed: Seeder
) -> None:
    await seed.add(seed.trade(at(0)))
    fast, routed = await _both(make_client, headers=None, API_PUBLIC_READ="true")
    a = await fast.get("/api/v1/trades", headers={"X-API-Key": ""})
    b = await routed.get("/api/v1/trades", headers={"X-API-Key": ""})
    assert a.status_code == b.status_code == 200
    assert a.content == b.content
    token = await fast.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    a = await fast.get("/api/v1/trades", headers=bearer)
    b = await routed.get("/api/v1/trades", headers=bearer)
    assert a.status_code == b.status_code == 200
    assert a.content == b.content


async def test_hot_reads_keep_the_edge_rate_limit_and_headers(make_client: AppFactory, seed: Seeder) -> None:
    # Given a limit of 2 requests a minute
    await seed.add(seed.trade(at(0)))
    client = await make_client(headers=KEY, API_RATE_LIMIT_PER_MINUTE="2")
    answers = [await client.get("/api/v1/trades") for _ in range(3)]
    # Then the third is refused and every answer carries the security headers
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert all(answer.headers["x-content-type-options"] == "nosniff" for answer in answers)
    metrics = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/api/v1/trades",status="200"} 2.0' in metrics


async def _committed_with_event(sessions: async_sessionmaker[AsyncSession], trade: TradeRow) -> None:
    async with sessions.begin() as session:  # as the scheduler writes a trade: the row and its event together
        session.add(trade)
        await session.flush()
        await add_event(session, EventType.TRADE, mode="paper", symbol=trade.symbol, data={"trade_id": trade.trade_id})


async def _until(check: object, seconds: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not seen in time"
        await asyncio.sleep(0.02)


async def test_a_cached_page_is_dropped_by_the_next_event(
    make_client: AppFactory, seed: Seeder, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a cache that would hold reads for a minute, and a first page read once (now cached)
    await seed.add(seed.trade(at(0)))
    client = await make_client(headers=KEY, API_READ_CACHE_SECONDS="60")
    assert len((await client.get("/api/v1/trades")).json()["items"]) == 1
    await seed.add(seed.trade(at(1)))  # no event: the cached page does not show it
    assert len((await client.get("/api/v1/trades")).json()["items"]) == 1
    assert app_of(client).state.read_cache.hits == 1
    # When the scheduler commits a trade with its event
    await _committed_with_event(db_sessions, seed.trade(at(2)))

    # Then the page shows it as soon as the API has the event (NOTIFY on PostgreSQL, the poll on SQLite)
    async def shows_all() -> bool:
        return len((await client.get("/api/v1/trades")).json()["items"]) == 3

    await _until(shows_all)


async def test_a_change_without_an_event_shows_within_the_cache_seconds(make_client: AppFactory, seed: Seeder) -> None:
    # Given a cache of 0.3 s and a page read once
    await seed.add(seed.trade(at(0)))
    client = await make_client(headers=KEY, API_READ_CACHE_SECONDS="0.3")
    assert len((await client.get("/api/v1/trades")).json()["items"]) == 1
    # When a trade is written with no event (as realised P&L is written onto a trade after its fill)
    await seed.add(seed.trade(at(1)))
    # Then it shows once the cached read is 0.3 s old, and with the cache off at once
    await asyncio.sleep(0.35)
    assert len((await client.get("/api/v1/trades")).json()["items"]) == 2
    off = await make_client(headers=KEY, API_READ_CACHE_SECONDS="0")
    await off.get("/api/v1/trades")
    await seed.add(seed.trade(at(2)))
    assert len((await off.get("/api/v1/trades")).json()["items"]) == 3


async def test_a_cached_status_still_ages_and_a_heartbeat_refreshes_it(
    make_client: AppFactory, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a scheduler's heartbeat and a status read once (cached for a minute)
    bot = BotRepository(db_sessions)
    await bot.write_heartbeat("default", state="running", mode="paper", symbols=["KRW-BTC"])
    client = await make_client(headers=KEY, API_READ_CACHE_SECONDS="60")
    first = (await client.get("/api/v1/bot/status")).json()
    await asyncio.sleep(0.2)
    # When it is read again from the cache, its age has grown
    second = (await client.get("/api/v1/bot/status")).json()
    assert second["heartbeat_at"] == first["heartbeat_at"]
    assert second["heartbeat_age_seconds"] >= first["heartbeat_age_seconds"] + 0.15
    # And a new heartbeat (its event) shows without waiting for the cache to expire
    await bot.write_heartbeat("default", state="paused", mode="paper", symbols=["KRW-BTC"])

    async def paused() -> bool:
        return (await client.get("/api/v1/bot/status")).json()["state"] == "paused"

    await _until(paused)


async def test_a_control_request_shows_in_the_status_at_once(make_client: AppFactory) -> None:
    client = await make_client(headers=KEY, API_READ_CACHE_SECONDS="60")
    assert (await client.get("/api/v1/bot/status")).json()["desired_state"] == "running"
    answer = await client.post("/api/v1/bot/control", json={"action": "pause", "reason": "test"})
    assert answer.status_code == 200
    assert (await client.get("/api/v1/bot/status")).json()["desired_state"] == "paused"
    # And so does a run-time setting, with the stored JSON value as it was written
    values = {"risk.max_positions": 5, "trading.symbols": ["KRW-BTC", "KRW-XRP"]}
    answer = await client.put("/api/v1/bot/config", json={"values": values, "reason": "test"})
    assert answer.status_code == 200
    settings = {item["key"]: item for item in (await client.get("/api/v1/bot/status")).json()["settings"]}
    assert settings["risk.max_positions"]["requested"] == 5
    assert settings["trading.symbols"]["requested"] == ["KRW-BTC", "KRW-XRP"]


# --- ReadCache on its own ----------------------------------------------------------------------------------
async def test_requests_that_miss_together_share_one_read() -> None:
    cache: ReadCache[int] = ReadCache(60)
    reads = 0

    async def load() -> int:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return reads

    assert await asyncio.gather(*(cache.get("k", load) for _ in range(20))) == [1] * 20
    assert reads == 1
    assert await cache.get("k", load) == 1


async def test_a_read_that_began_before_an_invalidation_is_not_kept_or_shared() -> None:
    cache: ReadCache[str] = ReadCache(60)
    started = asyncio.Event()
    release = asyncio.Event()

    async def old() -> str:
        started.set()
        await release.wait()
        return "old"

    async def new() -> str:
        return "new"

    first = asyncio.create_task(cache.get("k", old))
    await started.wait()
    cache.invalidate()  # something was committed while the first read ran
    late = await cache.get("k", new)  # a request after the commit does not join the older read
    release.set()
    assert (await first, late) == ("old", "new")
    assert await cache.get("k", old) == "new"


async def test_entries_expire_and_the_oldest_go_first() -> None:
    now = [0.0]
    cache: ReadCache[str] = ReadCache(1.0, max_entries=2, clock=lambda: now[0])

    async def value(text: str) -> str:
        return text

    assert await cache.get("a", lambda: value("a1")) == "a1"
    now[0] = 0.9
    assert await cache.get("a", lambda: value("a2")) == "a1"
    now[0] = 1.0
    assert await cache.get("a", lambda: value("a3")) == "a3"
    await cache.get("b", lambda: value("b"))
    await cache.get("c", lambda: value("c"))  # more keys than max_entries: "a" was used longest ago
    assert await cache.get("a", lambda: value("a4")) == "a4"


async def test_a_failed_read_is_not_kept() -> None:
    cache: ReadCache[str] = ReadCache(60)

    async def boom() -> str:
        raise RuntimeError("database down")

    async def fine() -> str:
        return "ok"

    with pytest.raises(RuntimeError):
        await cache.get("k", boom)
    assert await cache.get("k", fine) == "ok"


def test_the_cache_seconds_setting_is_validated(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigurationError, match="API_READ_CACHE_SECONDS"):
        make_settings(API_READ_CACHE_SECONDS="-1")
    assert make_settings(API_READ_CACHE_SECONDS="0").api.read_cache_seconds == 0
