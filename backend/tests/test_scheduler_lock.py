"""One trader per account, whatever happens to the database (issue 11, section 2).

PostgreSQL: a private server that the tests start and restart themselves (``tests/support/pg_server.py``);
every order that reaches the exchange is checked against the server's own ``pg_locks``: its sender held
the advisory lock at that moment. SQLite: a lease whose holder is provably dead on this host is taken
over at once; a live holder, or one on another host, still blocks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.core.scheduler import EXIT_LOCK_HELD, EXIT_LOCK_LOST, EXIT_OK, TradingScheduler, lock_name
from backend.app.db.lock import SchedulerLock, _advisory_key, holder_is_dead, process_start
from backend.app.db.migrations import upgrade_to_head
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.session import create_engine, session_factory
from backend.app.models import OrderRow, SchedulerLockRow
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from backend.tests.conftest import BASE_ENV
from src.api.interfaces import IExchangeClient, Order, OrderRequest
from src.config.env import PROJECT_ROOT
from src.config.settings import load_settings
from src.config.system_groups import SchedulerConfig
from src.data.replay import ReplayMarketSource
from src.domain.events import EventKind, NullNotifier
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus
from src.exceptions import SchedulerLockHeld, SchedulerLockLost
from tests.support import pg_server as pg_server_module
from tests.support.candles import make_candles
from tests.support.pg_server import PrivatePostgres, private_postgres
from tests.support.rows import count_rows

START = datetime(2024, 3, 1, tzinfo=UTC)
BUY = Decimal("100000")

pytestmark = pytest.mark.integration


# --- a private PostgreSQL server ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_server() -> Iterator[PrivatePostgres]:
    yield from private_postgres()


@pytest.fixture
def pg_url(pg_server: PrivatePostgres) -> str:
    """A fresh, migrated database on the private server."""
    name = f"lock_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        connection = await asyncpg.connect(pg_server.url().replace("+asyncpg", ""))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    url = pg_server.url(name)
    upgrade_to_head(url)
    return url


@dataclass
class Send:
    scheduler: str
    identifier: str
    sender_backend: int | None  # the backend pid of the sender's lock connection
    holder_backend: int | None  # the backend pid holding the advisory lock, as the server sees it


@dataclass
class Wire:
    """Every order that reached the exchange, with who held the lock at that moment (server's view)."""

    database_url: str
    sends: list[Send] = field(default_factory=list)

    async def holder_backend(self, key: int) -> int | None:
        connection = await asyncpg.connect(self.database_url.replace("+asyncpg", ""))
        try:
            return await connection.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                " AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
                (key >> 32) & 0xFFFFFFFF,
                key & 0xFFFFFFFF,
            )
        finally:
            await connection.close()

    def sent_by(self, scheduler: str) -> list[Send]:
        return [s for s in self.sends if s.scheduler == scheduler]


class WatchedExchange:
    """The engine's exchange, recording each ``place_order`` with the lock holder at that instant."""

    def __init__(self, inner: IExchangeClient, name: str, wire: Wire | None, lock: Callable[[], SchedulerLock]) -> None:
        self._inner = inner
        self._name = name
        self._wire = wire
        self._lock = lock
        self.placed: list[str] = []

    async def place_order(self, request: OrderRequest) -> Order:
        self.placed.append(request.identifier)
        if self._wire is not None:
            lock = self._lock()
            holder = await self._wire.holder_backend(_advisory_key(lock.name))
            self._wire.sends.append(Send(self._name, request.identifier, lock.backend_pid, holder))
        return await self._inner.place_order(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class Trader:
    """A real ``TradingScheduler`` over a replay engine (paper exchange), on its own database engine."""

    name: str
    scheduler: TradingScheduler
    engine: TradingEngine
    db: AsyncEngine
    metrics: SchedulerMetrics
    notifier: NullNotifier
    exchange: WatchedExchange
    task: asyncio.Task[int] | None = None

    async def start(self) -> int | None:
        """Run until started (None) or until it gave up (its exit code)."""
        self.task = asyncio.create_task(self.scheduler.run(handle_signals=False))
        started = asyncio.create_task(self.scheduler.started.wait())
        await asyncio.wait({self.task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        return self.task.result() if self.task.done() else None

    async def buy(self) -> Any:
        return await self.engine.pipeline.trading.market_buy("KRW-BTC", BUY, reason=f"test {self.name}", cycle_id=None)

    async def stop(self) -> int:
        assert self.task is not None
        self.scheduler.request_stop("test")
        return await asyncio.wait_for(self.task, timeout=30)

    def sample(self, metric: str) -> float | None:
        return self.metrics.registry.get_sample_value(metric)


TraderFactory = Callable[..., Awaitable[Trader]]


@pytest.fixture
async def make_trader(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TraderFactory]:
    built: list[Trader] = []

    async def build(name: str, database_url: str, *, wire: Wire | None = None, poll_seconds: float = 3600) -> Trader:
        for key, value in {**BASE_ENV, "DATABASE_URL": database_url, "MIN_TRADE_INTERVAL_HOURS": "0"}.items():
            monkeypatch.setenv(key, value)
        settings = load_settings(env_file=None)
        db = create_engine(database_url)
        candles = make_candles(START, 300, "1h", start_price=50_000_000, seed=2)
        source = ReplayMarketSource({"KRW-BTC": {"1h": candles}}, start=START + timedelta(hours=300))
        notifier = NullNotifier()
        metrics = SchedulerMetrics()
        engine = await TradingEngine.create(
            settings,
            db,
            mode=TradingMode.REPLAY,
            market_source=source,
            symbols=["KRW-BTC"],
            notifier=notifier,
            metrics=metrics,
        )
        config = SchedulerConfig(
            _env_file=None, SCHEDULER_INSTANCE_NAME=name, SCHEDULER_CONTROL_POLL_SECONDS=str(poll_seconds)
        )
        scheduler = TradingScheduler(engine, db, config, metrics=metrics)
        exchange = WatchedExchange(engine.pipeline.trading.exchange, name, wire, lambda: scheduler.lock)
        engine.pipeline.trading.exchange = exchange
        trader = Trader(name, scheduler, engine, db, metrics, notifier, exchange)
        built.append(trader)
        return trader

    yield build
    for trader in built:
        if trader.task is not None and not trader.task.done():
            trader.scheduler.request_stop("teardown")
            await asyncio.wait_for(trader.task, timeout=30)
        await trader.engine.aclose()
        await trader.db.dispose()


def _assert_every_send_by_the_holder(wire: Wire) -> None:
    for send in wire.sends:
        assert send.holder_backend is not None, f"{send.scheduler} sent {send.identifier} while nobody held the lock"
        assert send.sender_backend is not None, f"{send.scheduler} sent {send.identifier} without a lock connection"
        assert send.sender_backend == send.holder_backend, f"{send} was sent by a process not holding the lock"


# --- PostgreSQL: the server restarts under a running scheduler ----------------------------------------------
async def test_a_scheduler_whose_lock_another_took_during_a_restart_sends_nothing_and_stops(
    pg_server: PrivatePostgres, pg_url: str, make_trader: TraderFactory
) -> None:
    """Given scheduler A holds the advisory lock and has traded, when PostgreSQL restarts and scheduler B starts
    (and takes the lock) before A's next control poll, then A's next order is refused before anything is
    written or sent, A says so (log, Telegram, heartbeat, metrics) and stops with exit code 4; B trades; every
    order that reached the exchange was sent by the lock's holder at that instant."""
    wire = Wire(pg_url)
    a = await make_trader("a", pg_url, wire=wire)
    assert await a.start() is None
    assert (await a.buy()).status is OrderStatus.FILLED

    await asyncio.to_thread(pg_server.restart)
    b = await make_trader("b", pg_url, wire=wire)
    assert await b.start() is None  # A's lock died with its connection: B gets it

    orders_before = await count_rows(session_factory(a.db), OrderRow)
    started = time.perf_counter()
    with pytest.raises(SchedulerLockLost) as refused:
        await a.buy()
    refusal_ms = (time.perf_counter() - started) * 1000
    assert refused.value.taken_over
    assert len(a.exchange.placed) == 1  # nothing more reached the exchange
    assert await count_rows(session_factory(a.db), OrderRow) == orders_before  # and no row was written

    assert await asyncio.wait_for(a.task, timeout=30) == EXIT_LOCK_LOST  # type: ignore[arg-type]
    assert "lost the scheduler lock" in (a.scheduler.exit_reason or "")
    assert a.sample("scheduler_lock_lost_total") == 1
    assert a.sample("scheduler_lock_held") == 0
    assert [e.title for e in a.notifier.events if e.kind is EventKind.ERROR] == [
        "Scheduler lock lost: no orders until it is held again"
    ]
    heartbeat = await BotRepository(session_factory(a.db)).get_heartbeat("a")
    assert heartbeat.state == "stopped"
    assert "lost the scheduler lock" in heartbeat.last_error

    assert (await b.buy()).status is OrderStatus.FILLED
    assert await b.stop() == EXIT_OK
    _assert_every_send_by_the_holder(wire)
    assert [s.scheduler for s in wire.sends] == ["a", "b"]
    print(f"\nlost lock refused in the order path in {refusal_ms:.1f} ms")


async def test_a_scheduler_re_takes_its_lock_after_a_restart_and_a_second_one_is_refused(
    pg_server: PrivatePostgres, pg_url: str, make_trader: TraderFactory
) -> None:
    """Given scheduler A holds the lock (control poll every 0.1 s), when PostgreSQL restarts, then A's poll
    finds the lock gone and re-takes it on a new connection within a second, and says so; a scheduler B
    started afterwards is refused (exit code 3); A keeps trading and shuts down cleanly, freeing the lock."""
    wire = Wire(pg_url)
    a = await make_trader("a", pg_url, wire=wire, poll_seconds=0.1)
    assert await a.start() is None
    assert (await a.buy()).status is OrderStatus.FILLED

    began = time.perf_counter()
    restart = asyncio.create_task(asyncio.to_thread(pg_server.restart))
    while a.sample("scheduler_lock_lost_total") != 1:  # the poll keeps running while the server is down
        assert time.perf_counter() - began < 10, "the lost lock was not noticed"
        await asyncio.sleep(0.005)
    noticed_ms = (time.perf_counter() - began) * 1000
    await restart
    restarted = time.perf_counter()
    while a.sample("scheduler_lock_held") != 1:
        assert time.perf_counter() - restarted < 5, "the lost lock was not re-taken"
        await asyncio.sleep(0.005)
    retaken_ms = (time.perf_counter() - restarted) * 1000

    b = await make_trader("b", pg_url, wire=wire)
    assert await b.start() == EXIT_LOCK_HELD
    assert (await a.buy()).status is OrderStatus.FILLED
    assert [e.title for e in a.notifier.events if e.kind is EventKind.BOT_STATE_CHANGED][-1] == (
        "Scheduler lock re-taken: trading continues"
    )
    assert "re-taken" in ((await BotRepository(session_factory(a.db)).get_heartbeat("a")).last_error or "")

    assert await a.stop() == EXIT_OK
    _assert_every_send_by_the_holder(wire)
    assert [s.scheduler for s in wire.sends] == ["a", "a"]
    assert await wire.holder_backend(_advisory_key(a.scheduler.lock.name)) is None
    print(f"\nlock loss noticed {noticed_ms:.0f} ms after the restart began; re-taken {retaken_ms:.0f} ms after")


async def test_the_order_path_re_takes_a_free_lock_before_sending(
    pg_server: PrivatePostgres, pg_url: str, make_trader: TraderFactory
) -> None:
    """Given A holds the lock and its control poll has not run since PostgreSQL restarted, when A places an
    order, then the check before the order finds the lock gone, re-takes it (it is free) and sends."""
    wire = Wire(pg_url)
    a = await make_trader("a", pg_url, wire=wire)
    assert await a.start() is None
    await asyncio.to_thread(pg_server.restart)

    assert (await a.buy()).status is OrderStatus.FILLED

    _assert_every_send_by_the_holder(wire)
    assert a.sample("scheduler_lock_lost_total") == 1
    assert a.sample("scheduler_lock_held") == 1
    assert await a.stop() == EXIT_OK


async def test_the_lock_still_held_by_this_process_s_dead_session_is_re_taken(pg_url: str) -> None:
    """Given the lock's connection died on the client's side while the server keeps its session (a network
    cut: the server may not notice for hours), when the lock is checked, then this process ends that stale
    session of its own (matched by backend pid and start time) and re-takes the lock on a new connection."""
    db = create_engine(pg_url)
    try:
        lock = SchedulerLock(db, "trading:paper")
        await lock.acquire()
        stale, stale_pid = lock._pg_connection, lock.backend_pid
        assert stale is not None
        lock._pg_connection = await db.connect()  # what the client now sees: a connection without the lock

        assert await lock.check() is True

        wire = Wire(pg_url)
        assert await wire.holder_backend(_advisory_key(lock.name)) == lock.backend_pid != stale_pid
        with pytest.raises(Exception, match=r"terminat|closed"):
            await stale.scalar(text("SELECT 1"))
        await lock.release()
        assert await wire.holder_backend(_advisory_key(lock.name)) is None
    finally:
        await db.dispose()


def _scheduler_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "UPBIT_", "TRADING_", "TELEGRAM_"))}
    env.update(
        DATABASE_URL=database_url,
        TRADING_MODE="paper",
        SCHEDULER_METRICS_PORT="0",
        LOG_FORMAT="json",
        PYTHONPATH=str(PROJECT_ROOT),
        **extra,
    )
    return env


async def _pg_state(database_url: str) -> tuple[str | None, int | None]:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        row = await connection.fetchrow("SELECT state, pid FROM bot_state")
    finally:
        await connection.close()
    return (None, None) if row is None else (row["state"], row["pid"])


def test_sigterm_after_a_database_restart_exits_cleanly(pg_server: PrivatePostgres, pg_url: str) -> None:
    """Given a scheduler process holding the lock, when PostgreSQL restarts and SIGTERM follows before any
    control poll, then the process exits 0 with one clear log line about the lock, and no traceback."""
    command = [sys.executable, str(PROJECT_ROOT / "scheduler_main.py")]
    env = _scheduler_env(pg_url, SCHEDULER_CONTROL_POLL_SECONDS="3600")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while asyncio.run(_pg_state(pg_url))[0] != "running":
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.2)
        pg_server.restart()

        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    output = (process.stdout.read() if process.stdout else "") + (process.stderr.read() if process.stderr else "")
    assert code == EXIT_OK, output
    assert "Traceback" not in output
    assert "lock.release_connection_lost" in output
    assert asyncio.run(_pg_state(pg_url))[0] == "stopped"


# --- SQLite: a lease whose holder died on this host ----------------------------------------------------------
def _sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "lock.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{path}"


def _dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


async def _write_lease(db: AsyncEngine, holder: str, expires_in: timedelta = timedelta(minutes=2)) -> None:
    now = datetime.now(UTC)
    async with db.begin() as connection:
        await connection.execute(
            SchedulerLockRow.__table__.insert().values(
                name="trading:paper", holder=holder, acquired_at=now, expires_at=now + expires_in
            )
        )


async def _lease_holder(db: AsyncEngine, name: str = "trading:paper") -> str | None:
    async with db.connect() as connection:
        return await connection.scalar(select(SchedulerLockRow.holder).where(SchedulerLockRow.name == name))


@pytest.mark.parametrize(
    ("case", "taken_over"),
    [
        ("dead pid on this host", True),
        ("pid reused by a later process", True),
        ("live process on this host", False),
        ("this very process", False),
        ("dead pid on another host", False),
    ],
)
async def test_a_lease_is_taken_over_at_once_only_from_a_provably_dead_holder(
    case: str, taken_over: bool, tmp_path: Path, sqlite_template: Path, live_process: subprocess.Popen[bytes]
) -> None:
    """Given an unexpired SQLite lease, when a scheduler takes the lock, then it takes the lease over at once
    when the holder's process is gone from this host (or its pid now belongs to a process started at another
    time), and is refused when the holder lives, is this very process (another lock object), or is on
    another host (nothing can be proved there: the lease rule applies)."""
    host = socket.gethostname()
    holder = {
        "dead pid on this host": f"{host}:{_dead_pid()}:12345:dead",
        "pid reused by a later process": f"{host}:{live_process.pid}:1:old",
        "live process on this host": f"{host}:{live_process.pid}:{process_start(live_process.pid)}:alive",
        "this very process": f"{host}:{os.getpid()}:{process_start(os.getpid())}:other",
        "dead pid on another host": f"elsewhere.example:{_dead_pid()}:12345:far",
    }[case]
    assert holder_is_dead(holder) is taken_over
    db = create_engine(_sqlite_url(tmp_path, sqlite_template))
    try:
        await _write_lease(db, holder)
        lock = SchedulerLock(db, "trading:paper")
        if taken_over:
            await lock.acquire()
            assert await _lease_holder(db) == lock.holder
        else:
            with pytest.raises(SchedulerLockHeld, match=holder):
                await lock.acquire()
            assert await _lease_holder(db) == holder
    finally:
        await db.dispose()


def _sqlite_state(db_path: Path) -> tuple[str | None, int | None]:
    with sqlite3.connect(db_path) as connection:
        row = connection.execute("SELECT state, pid FROM bot_state").fetchone()
    return (None, None) if row is None else (row[0], row[1])


def _wait_for(predicate: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_a_scheduler_restarted_after_a_crash_starts_at_once(tmp_path: Path) -> None:
    """Given a scheduler process killed with SIGKILL (its lease 120 s from expiry), when a new scheduler starts
    on the same host, then it takes the lease over and runs at once instead of exiting with code 3."""
    db_path = tmp_path / "scheduler.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{db_path}")
    command = [sys.executable, str(PROJECT_ROOT / "scheduler_main.py")]
    env = _scheduler_env(f"sqlite+aiosqlite:///{db_path}", SCHEDULER_CONTROL_POLL_SECONDS="0.5")
    crashed = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    restarted: subprocess.Popen[str] | None = None
    try:
        _wait_for(lambda: _sqlite_state(db_path) == ("running", crashed.pid))
        crashed.kill()
        crashed.wait()

        started = time.monotonic()
        restarted = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: restarted.poll() is not None or _sqlite_state(db_path) == ("running", restarted.pid))
        assert restarted.poll() is None, restarted.stderr.read() if restarted.stderr else ""
        assert time.monotonic() - started < 60

        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=30) == EXIT_OK
        assert "lock.taken_over_from_dead_holder" in (restarted.stderr.read() if restarted.stderr else "")
    finally:
        for process in (crashed, restarted):
            if process is not None and process.poll() is None:
                process.kill()
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM scheduler_locks").fetchone()[0] == 0


async def test_a_sqlite_lease_taken_by_another_is_noticed_before_the_next_order(
    tmp_path: Path, sqlite_template: Path, make_trader: TraderFactory
) -> None:
    """Given scheduler A holds the SQLite lease and its control poll has not run, when the lease expires and
    another process takes it, then A's next order is refused before it is written or sent and A stops (4)."""
    url = _sqlite_url(tmp_path, sqlite_template)
    a = await make_trader("a", url)
    assert await a.start() is None
    assert (await a.buy()).status is OrderStatus.FILLED
    async with a.db.begin() as connection:  # A was suspended longer than its lease
        await connection.execute(update(SchedulerLockRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    other = SchedulerLock(a.db, lock_name(a.engine))
    await other.acquire()

    with pytest.raises(SchedulerLockLost):
        await a.buy()

    assert len(a.exchange.placed) == 1
    assert await count_rows(session_factory(a.db), OrderRow) == 1
    assert await asyncio.wait_for(a.task, timeout=30) == EXIT_LOCK_LOST  # type: ignore[arg-type]
    assert await _lease_holder(a.db, other.name) == other.holder
    await other.release()


# --- the order path: refused between writing the row and sending ---------------------------------------------
class _RefuseSecondCheck:
    def __init__(self) -> None:
        self.checks = 0

    async def ensure_held(self) -> None:
        self.checks += 1
        if self.checks == 2:
            raise SchedulerLockLost("lost the lock 'trading:replay': test")


async def test_an_order_refused_right_before_sending_is_marked_failed_and_never_sent(
    tmp_path: Path, sqlite_template: Path, make_trader: TraderFactory
) -> None:
    """Given the lock is held when the order row is written but lost right after, when the order would be sent,
    then nothing reaches the exchange and the row is final (failed, "not sent"), so reconciliation has
    nothing to settle and nothing is ever re-sent."""
    a = await make_trader("a", _sqlite_url(tmp_path, sqlite_template))
    guard = _RefuseSecondCheck()
    a.engine.guard_orders(guard)

    with pytest.raises(SchedulerLockLost):
        await a.buy()

    assert a.exchange.placed == []
    async with session_factory(a.db)() as session:
        [row] = (await session.scalars(select(OrderRow))).all()
    assert row.status is OrderStatus.FAILED
    assert "not sent" in (row.error_message or "")
    assert await a.engine.pipeline.trading.reconcile() == []


# --- the private server's own rule ---------------------------------------------------------------------------
def test_missing_postgresql_binaries_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given no initdb/pg_ctl, when CI=true, then the restart tests fail instead of skipping."""
    monkeypatch.setattr(pg_server_module, "_bin_dir", lambda: None)
    monkeypatch.setenv("CI", "true")

    with pytest.raises(pytest.fail.Exception, match="required because CI=true"):
        next(private_postgres())
