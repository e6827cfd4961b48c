"""The live event stream ``/api/v1/ws/events`` on a real uvicorn (loopback), on SQLite and PostgreSQL: who may
connect, resume with no event lost or repeated, the events the scheduler's own paths write, and latency."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from backend.app.api.v1.endpoints import events as events_endpoint
from backend.app.core.scheduler import TradingScheduler
from backend.app.core.security import create_access_token
from backend.app.db.outbox import add_event
from backend.app.db.repositories.bot import BotRepository
from backend.app.main import create_app
from backend.app.models import EventRow, PositionRow
from backend.app.services import event_stream
from backend.app.services.trading_engine import TradingEngine
from backend.tests.conftest import API_KEY, JWT_SECRET, SettingsFactory
from src.config.system_groups import SchedulerConfig
from src.data.replay import ReplayMarketSource
from src.domain.bot import BotAction
from src.domain.events import EventType, NullNotifier
from src.domain.modes import TradingMode
from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.upbit_server import FakeUpbit
from tests.support.candles import make_candles
from tests.support.strategies import AlwaysBuy

START = datetime(2024, 3, 1, tzinfo=UTC)

PATH = "/api/v1/ws/events"
KEY_HEADER = {"X-API-Key": API_KEY}

Serve = Callable[..., Any]


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on uvicorn at 127.0.0.1 on a free port, lifespan included; yields ``ws://127.0.0.1:<port>``."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def serve(make_settings: SettingsFactory) -> AsyncIterator[Serve]:
    """``await serve(**env)`` → the ``ws://`` base URL of the app built from those settings, served by uvicorn."""
    async with AsyncExitStack() as stack:

        async def build(**env: str) -> str:
            app = create_app(make_settings(**env))
            return await stack.enter_async_context(serving(app))

        yield build


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next event (pings skipped)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message.get("type") != "ping":
            return message  # type: ignore[no-any-return]


async def refusal(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason of a connection the server closes."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 8)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def heartbeat(bot: BotRepository, n: int) -> None:
    await bot.write_heartbeat(
        "default", state="running", mode="paper", symbols=["KRW-BTC"], details={"desired_state": "running", "n": n}
    )


async def event_ids(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessions() as session:
        return list(await session.scalars(select(EventRow.id).order_by(EventRow.id)))


# --- who may connect ---------------------------------------------------------------------------------------
async def test_api_key_header_streams_what_the_scheduler_writes(
    serve: Serve, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a client connected with the X-API-Key header
    base = await serve()
    bot = BotRepository(db_sessions, TradingMode.PAPER)
    async with connect(base + PATH, additional_headers=KEY_HEADER) as ws:
        await asyncio.sleep(0.1)  # connected and subscribed
        # When the operator pauses the bot and the scheduler writes its heartbeat
        await bot.request_state(BotAction.PAUSE, by="api-key", reason="test")
        await heartbeat(bot, 1)
        # Then the desired state, the applied state and the heartbeat arrive, in that order, as the protocol says
        received = [await receive(ws) for _ in range(3)]
    assert [m["type"] for m in received] == ["bot_state", "bot_state", "heartbeat"]
    assert received[0]["data"] == {"desired": "paused", "by": "api-key"}
    assert received[1]["data"] == {"instance": "default", "state": "running"}
    assert [m["id"] for m in received] == sorted(m["id"] for m in received)
    assert set(received[2]) == {"id", "type", "at", "mode", "symbol", "data"}
    assert received[2]["mode"] == "paper"
    assert received[2]["data"]["desired_state"] == "running"


async def test_bearer_token_header_is_accepted(serve: Serve, db_sessions: async_sessionmaker[AsyncSession]) -> None:
    # Given a JWT from the API's own issuer, in the Authorization header
    base = await serve()
    token = create_access_token("admin", JWT_SECRET, 5).token
    async with connect(base + PATH, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await asyncio.sleep(0.1)
        # When an error is logged by the scheduler
        await BotRepository(db_sessions, TradingMode.PAPER).log("error", "exchange down", source="scheduler")
        # Then it arrives
        message = await receive(ws)
    assert message["type"] == "error"
    assert message["data"] == {"level": "error", "message": "exchange down", "source": "scheduler"}


@pytest.mark.parametrize("credential", ["api_key", "token"])
async def test_first_message_authenticates_and_resumes(
    serve: Serve, db_sessions: async_sessionmaker[AsyncSession], credential: str
) -> None:
    # Given three events already written
    base = await serve()
    bot = BotRepository(db_sessions, TradingMode.PAPER)
    for n in range(3):
        await heartbeat(bot, n)
    first, *_ = await event_ids(db_sessions)
    secret = API_KEY if credential == "api_key" else create_access_token("admin", JWT_SECRET, 5).token
    # When a browser-like client (no headers) sends the auth message with after=<the first id>
    async with connect(base + PATH) as ws:
        await ws.send(json.dumps({"type": "auth", credential: secret, "after": first}))
        # Then it gets the two later events, oldest first
        received = [await receive(ws) for _ in range(2)]
    assert [m["id"] for m in received] == [first + 1, first + 2]


@pytest.mark.parametrize(
    ("headers", "first_message", "why"),
    [
        ({"X-API-Key": "wrong-key-0123456789abcdef0123456789"}, None, "invalid API key"),
        ({"Authorization": "Bearer not.a.jwt"}, None, "invalid token"),
        ({}, {"type": "auth", "api_key": "wrong"}, "invalid API key"),
        ({}, {"type": "subscribe"}, "first message must be"),
        ({}, {"type": "auth"}, "neither api_key nor token"),
    ],
)
async def test_bad_credentials_are_refused_with_1008(
    serve: Serve, headers: dict[str, str], first_message: dict[str, Any] | None, why: str
) -> None:
    # Given the stream without public reads
    base = await serve()
    # When a client brings wrong credentials
    async with connect(base + PATH, additional_headers=headers) as ws:
        if first_message is not None:
            await ws.send(json.dumps(first_message))
        # Then the server closes with 1008 (policy violation) and says why
        code, reason = await refusal(ws)
    assert code == 1008
    assert why in reason


async def test_no_credentials_in_time_is_refused(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a short wait for the auth message
    monkeypatch.setattr(events_endpoint, "AUTH_SECONDS", 0.3)
    base = await serve()
    # When a client sends nothing
    async with connect(base + PATH) as ws:
        code, reason = await refusal(ws)
    # Then it is refused and told how to authenticate
    assert code == 1008
    assert "authentication required" in reason


async def test_a_bad_after_is_refused(serve: Serve) -> None:
    base = await serve()
    async with connect(base + PATH + "?after=-1", additional_headers=KEY_HEADER) as ws:
        code, reason = await refusal(ws)
    assert (code, reason) == (1008, "after must be a non-negative integer (an event id)")


async def test_public_read_streams_without_credentials(
    serve: Serve, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given API_PUBLIC_READ=true and one event written before the client connects
    base = await serve(API_PUBLIC_READ="true")
    bot = BotRepository(db_sessions, TradingMode.PAPER)
    await heartbeat(bot, 0)
    # When a client connects with no credentials at all, resuming from 0
    async with connect(base + PATH + "?after=0") as ws:
        before = await receive(ws)
        await heartbeat(bot, 1)
        live = await receive(ws)
    # Then it gets the old event and the live one
    assert before["data"]["instance"] == "default"
    assert [before["type"], live["type"]] == ["bot_state", "heartbeat"]
    async with connect(base + PATH, additional_headers={"X-API-Key": "wrong-key-0123456789abcdef012345"}) as ws:
        code, _ = await refusal(ws)
    assert code == 1008  # wrong credentials are still wrong


async def test_shutdown_closes_clients_and_stops_the_reader(make_settings: SettingsFactory) -> None:
    # Given a served app with a connected client
    app = create_app(make_settings())
    async with serving(app) as base:
        ws = await connect(base + PATH, additional_headers=KEY_HEADER)
        await asyncio.sleep(0.1)
        assert len(app.state.events.subscribers) == 1
    # When the server shut down (the block above ended: uvicorn stopped, the lifespan ran to its end)
    # Then the client was told to come back (1012 service restart from uvicorn, or 1001 from the stream)
    code, _reason = await refusal(ws)
    assert code in (1001, 1012)
    assert app.state.events.subscribers == set()
    assert app.state.events._task is not None
    assert app.state.events._task.done()


async def test_an_idle_stream_gets_pings_from_the_watchdog(make_settings: SettingsFactory) -> None:
    # Given a stream that pings after 0.3 s without an event
    app = create_app(make_settings())
    app.state.events.idle_seconds = 0.3
    async with serving(app) as base, connect(base + PATH, additional_headers=KEY_HEADER) as ws:
        # When nothing is written for a while, Then the client gets pings, spaced by the idle time
        started = time.monotonic()
        first = json.loads(await asyncio.wait_for(ws.recv(), 3))
        second = json.loads(await asyncio.wait_for(ws.recv(), 3))
        elapsed = time.monotonic() - started
    assert first == second == {"type": "ping"}
    assert 0.5 <= elapsed < 2.5


# --- resume --------------------------------------------------------------------------------------------------
async def test_reconnects_under_load_lose_and_repeat_nothing(
    serve: Serve, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a scheduler writing heartbeats continuously
    base = await serve()
    bot = BotRepository(db_sessions, TradingMode.PAPER)
    written = 150
    writing = asyncio.create_task(_write_heartbeats(bot, written, pause=0.005))
    # When a client reads a few events, disconnects, misses some, and resumes with after=<last id>, five times
    received: list[int] = []
    after = 0
    for _round in range(5):
        # (max_queue=None: the client library keeps reading, so its close handshake is not stuck behind the
        # events it will not read)
        async with connect(f"{base}{PATH}?after={after}", additional_headers=KEY_HEADER, max_queue=None) as ws:
            for _ in range(12):
                received.append((await receive(ws))["id"])
        after = received[-1]
        await asyncio.sleep(0.05)  # events are written while it is away
    await writing
    async with connect(f"{base}{PATH}?after={after}", additional_headers=KEY_HEADER) as ws:
        total = len(await event_ids(db_sessions))
        while len(received) < total:
            received.append((await receive(ws))["id"])
    # Then it has every event exactly once, in order
    assert received == await event_ids(db_sessions)
    assert total == written + 1  # the heartbeats and the first bot_state


async def _write_heartbeats(bot: BotRepository, count: int, pause: float) -> None:
    for n in range(count):
        await heartbeat(bot, n)
        await asyncio.sleep(pause)


async def test_a_burst_larger_than_the_queue_arrives_whole(
    serve: Serve, db_sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given client queues of 5 events
    monkeypatch.setattr(event_stream, "QUEUE_SIZE", 5)
    base = await serve()
    bot = BotRepository(db_sessions, TradingMode.PAPER)
    async with connect(base + PATH, additional_headers=KEY_HEADER) as ws:
        await asyncio.sleep(0.1)
        # When 60 events commit between two reads of the outbox
        await _write_heartbeats(bot, 60, pause=0)
        # Then all arrive, in order (the client read the overflow from the database)
        received = [(await receive(ws))["id"] for _ in range(61)]
    assert received == await event_ids(db_sessions)


async def test_a_client_that_stops_reading_is_dropped_and_others_go_on(
    serve: Serve, db_sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a send limit of 0.5 s, a client that stops reading after its handshake, and one that reads on
    monkeypatch.setattr(events_endpoint, "SEND_SECONDS", 0.5)
    base = await serve()
    metrics_url = base.replace("ws://", "http://") + "/metrics"
    slow = await asyncio.to_thread(_handshake_then_stop_reading, base)
    # (it starts reading again once the server dropped it, so the close frame behind the queued bytes arrives before
    # the server's close timeout ends the connection, however long the reading client takes under load)
    closing = asyncio.create_task(asyncio.to_thread(_close_frame_once_dropped, slow, metrics_url))
    async with connect(base + PATH, additional_headers=KEY_HEADER) as fast:
        await asyncio.sleep(0.2)
        # When more is written than the socket buffers hold (300 events of 100 kB)
        for n in range(300):
            async with db_sessions.begin() as session:
                await add_event(session, EventType.ERROR, mode="paper", data={"n": n, "blob": "x" * 100_000})
        # Then the reading client gets them all
        received = [(await receive(fast, timeout=10))["data"]["n"] for _ in range(300)]
    assert received == list(range(300))
    # And the one that stopped reading was closed with 1013 and the id to resume from
    code, reason = await closing
    assert code == 1013
    assert reason.startswith("too slow (a message waited 0.5 s to be sent); reconnect with after=")
    metrics = (await asyncio.to_thread(_get, base.replace("ws://", "http://") + "/metrics")).decode()
    assert "events_websocket_clients_dropped_total 1.0" in metrics
    assert "events_websocket_clients 0.0" in metrics


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def _handshake_then_stop_reading(base: str) -> socket.socket:
    """A raw WebSocket client with a 16 kB receive buffer that reads its handshake answer and nothing more."""
    host, port = base.removeprefix("ws://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect((host, int(port)))
    sock.sendall(
        (
            f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"X-API-Key: {API_KEY}\r\n\r\n"
        ).encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


def _close_frame_once_dropped(sock: socket.socket, metrics_url: str) -> tuple[int, str]:
    """Wait (not reading) until the API counts a dropped client, then read up to its close frame."""
    deadline = time.monotonic() + 60
    while b"events_websocket_clients_dropped_total 1.0" not in _get(metrics_url):
        assert time.monotonic() < deadline, "the client that stopped reading was never dropped"
        time.sleep(0.05)
    return _close_frame_after_all_messages(sock)


def _close_frame_after_all_messages(sock: socket.socket) -> tuple[int, str]:
    """Read the server's (unmasked) frames until its close frame: its code and reason."""
    sock.settimeout(20)
    stream = sock.makefile("rb")

    def read(n: int) -> bytes:
        data = stream.read(n)
        assert len(data) == n, "connection ended without a close frame"
        return data

    while True:
        opcode, length = read(1)[0] & 0x0F, read(1)[0] & 0x7F
        if length == 126:
            length = int.from_bytes(read(2), "big")
        elif length == 127:
            length = int.from_bytes(read(8), "big")
        payload = read(length)
        if opcode == 0x8:
            sock.close()
            return int.from_bytes(payload[:2], "big"), payload[2:].decode()


# --- the scheduler's own paths -----------------------------------------------------------------------------
async def test_a_paper_trade_and_its_exit_stream_with_their_types(
    serve: Serve,
    db_engine: AsyncEngine,
    db_sessions: async_sessionmaker[AsyncSession],
    make_settings: SettingsFactory,
    fake_upbit: FakeUpbit,
    fake_fear_greed: FakeFearGreed,
) -> None:
    # Given the API streaming, and a paper engine on the fake Upbit with a strategy that buys
    fake_upbit.seed_demo()
    env = {
        "UPBIT_BASE_URL": fake_upbit.base_url,
        "FEAR_GREED_URL": fake_fear_greed.url,
        "MIN_TRADE_INTERVAL_HOURS": "0",
        "TRADING_SYMBOLS": "KRW-BTC",
    }
    base = await serve(**env)
    engine = await TradingEngine.create(
        make_settings(**env),
        db_engine,
        mode=TradingMode.PAPER,
        notifier=NullNotifier(),
        strategy=AlwaysBuy(),
        quick_filter=None,
    )
    async with connect(base + PATH, additional_headers=KEY_HEADER) as ws:
        await asyncio.sleep(0.1)
        try:
            # When the trading job buys and the position job sells at the stop
            await engine.start_up()
            [bought] = await engine.trading_job()
            async with db_sessions.begin() as session:
                position = await session.scalar(select(PositionRow))
                position.stop_price = position.avg_entry_price * 10
            [sold] = await engine.position_job()
        finally:
            await engine.aclose()
        total = len(await event_ids(db_sessions))
        received = [await receive(ws) for _ in range(total)]
    assert (bought.error, sold.error) == (None, None)
    # Then the decision, both orders, their trades and the exit arrive, typed, in the order they were written
    types = [m["type"] for m in received]
    assert types[:3] == ["decision", "order_placed", "order_filled"]
    assert types.count("order_placed") == types.count("order_filled") == 2
    assert "trade" in types[3 : types.index("order_placed", 2)]
    assert types[-1] == "exit"
    assert all(m["mode"] == "paper" and m["symbol"] == "KRW-BTC" for m in received)
    decision = received[0]["data"]
    assert (decision["final_decision"], decision["source"]) == ("buy", "rules")
    buy = received[1]["data"]
    assert (buy["side"], buy["status"]) == ("buy", "pending")
    trade = next(m for m in received if m["type"] == "trade")["data"]
    assert trade["side"] == "buy"
    assert float(trade["price"]) > 0
    exit_ = received[-1]["data"]
    assert exit_["reason"] == "stop_loss"
    assert "realized_pnl" in exit_


async def test_the_running_scheduler_obeys_a_pause_and_the_stream_shows_each_step(
    serve: Serve, db_engine: AsyncEngine, make_settings: SettingsFactory
) -> None:
    """Given the scheduler process running (lock, APScheduler, control poll every 0.1 s) and a client on the
    stream, when the operator pauses the bot and changes the markets through the API, then the stream shows the
    request, the scheduler's applied state and the applied settings, in that order, and heartbeats."""
    env = {"MIN_TRADE_INTERVAL_HOURS": "0", "TRADING_SYMBOLS": "KRW-BTC"}
    base = await serve(**env)
    candles = {"KRW-BTC": make_candles(START, 310, "1h", seed=2), "KRW-ETH": make_candles(START, 310, "1h", seed=3)}
    source = ReplayMarketSource({s: {"1h": c} for s, c in candles.items()}, start=START + timedelta(hours=300))
    engine = await TradingEngine.create(
        make_settings(**env), db_engine, mode=TradingMode.REPLAY, market_source=source, quick_filter=None
    )
    config = SchedulerConfig(_env_file=None, SCHEDULER_CONTROL_POLL_SECONDS="0.1")  # type: ignore[call-arg]
    scheduler = TradingScheduler(engine, db_engine, config)
    task = asyncio.create_task(scheduler.run(handle_signals=False))
    http = httpx.AsyncClient(base_url=base.replace("ws://", "http://"), headers=KEY_HEADER)
    try:
        await asyncio.wait_for(scheduler.started.wait(), timeout=10)
        async with connect(base + PATH, additional_headers=KEY_HEADER) as ws:
            await asyncio.sleep(0.1)
            # When the operator pauses the bot and moves it to KRW-ETH
            pause = await http.post("/api/v1/bot/control", json={"action": "pause", "reason": "watching"})
            assert pause.status_code == 200, pause.text
            change = {"values": {"trading.symbols": ["KRW-ETH"]}, "reason": "rotate"}
            assert (await http.put("/api/v1/bot/config", json=change)).status_code == 200
            seen: list[dict[str, Any]] = []
            while not any(m["type"] == "settings_applied" for m in seen):
                seen.append(await receive(ws))
            while not any(m["type"] == "heartbeat" and m["data"]["state"] == "paused" for m in seen):
                seen.append(await receive(ws))
    finally:
        await http.aclose()
        scheduler.request_stop("test")
        assert await asyncio.wait_for(task, timeout=10) == 0
        await engine.aclose()
    # Then: the request (by the API key), the scheduler following it, the settings it applied
    steps = [m for m in seen if m["type"] != "heartbeat"]
    request, *applied = steps
    assert (request["type"], request["data"]["desired"], request["data"]["by"]) == ("bot_state", "paused", "api-key")
    by_type = {m["type"]: m["data"] for m in applied}
    assert sorted(m["type"] for m in applied) == ["bot_state", "settings_applied"]  # the poll applies both
    assert (by_type["bot_state"]["state"], by_type["bot_state"]["previous"]) == ("paused", "running")
    assert by_type["settings_applied"]["changes"]["trading.symbols"] == {"from": ["KRW-BTC"], "to": ["KRW-ETH"]}
    assert request["mode"] == "paper"  # the API's TRADING_MODE, as its other answers
    assert {m["mode"] for m in seen if m is not request} == {"replay"}  # the scheduler's own


# --- latency -------------------------------------------------------------------------------------------------
async def test_live_events_arrive_well_within_a_second(
    serve: Serve, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given three connected clients
    base = await serve()
    bot = BotRepository(db_sessions, TradingMode.PAPER)
    async with (
        connect(base + PATH, additional_headers=KEY_HEADER) as a,
        connect(base + PATH, additional_headers=KEY_HEADER) as b,
        connect(base + PATH, additional_headers=KEY_HEADER) as c,
    ):
        await asyncio.sleep(0.1)
        latencies = []
        for n in range(10):
            # When an event commits
            await heartbeat(bot, n)
            committed = time.perf_counter()
            # Then every client has it soon after (SQLite polls every 0.1 s; PostgreSQL is woken by NOTIFY)
            for ws in (a, b, c):
                await receive(ws)
            latencies.append(time.perf_counter() - committed)
            await asyncio.sleep(0.03)
    assert max(latencies) < 0.6
    if db_sessions.kw.get("bind") is not None and db_sessions.kw["bind"].dialect.name == "postgresql":
        assert sorted(latencies)[len(latencies) // 2] < 0.05
