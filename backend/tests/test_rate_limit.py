"""The rate limit shared through Redis (``API_RATE_LIMIT_REDIS_URL``): one budget across workers, the same token
bucket as in process, and a fallback to in-process counting while Redis does not answer.

Each test runs its own ``redis-server`` on a free loopback port (Debian's ``redis`` package); without the binary
these tests skip, unless ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from backend.app.api.rate_limit import InProcessRateLimiter, SharedRateLimiter
from backend.tests.conftest import API_KEY, AppFactory

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A private redis-server that keeps nothing on disk; ``stop`` and ``start`` again on the same port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is required under CI=true (Debian package redis-server)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_two_workers_share_one_budget_per_client(make_client: AppFactory, redis_server: RedisServer) -> None:
    # Given two API workers on one Redis, with a limit of three requests a minute
    env = {"API_RATE_LIMIT_PER_MINUTE": "3", "API_RATE_LIMIT_REDIS_URL": redis_server.url}
    first = await make_client(headers={"X-API-Key": API_KEY}, **env)
    second = await make_client(headers={"X-API-Key": API_KEY}, **env)
    # When one client's requests alternate between the workers
    statuses = [(await worker.get("/api/v1/trades")).status_code for worker in (first, second, first)]
    limited = await second.get("/api/v1/trades")
    # Then the fourth is refused, as one worker alone would refuse it, with the wait of one token (60 s / 3)
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json() == {"detail": "rate limit exceeded; retry later"}
    assert 19 <= int(limited.headers["retry-after"]) <= 20
    # And another client (by address, no key) still has its own budget on both workers
    assert (await first.get("/api/v1/bot/status", headers={"X-API-Key": ""})).status_code == 401
    # And the budget lives in Redis under the configured prefix, with an expiry
    redis = Redis.from_url(redis_server.url)
    try:
        keys = sorted(await redis.keys("*"))
        assert keys[0] == b"ai-trader:rate-limit:api-key"
        assert [key.startswith(b"ai-trader:rate-limit:ip:") for key in keys[1:]] == [True]
        assert 0 < await redis.pttl("ai-trader:rate-limit:api-key") <= 61_000
    finally:
        await redis.aclose()


async def test_the_shared_bucket_refills_like_the_in_process_one(redis_server: RedisServer) -> None:
    # Given a shared limit of 1,200 a minute: a burst of 1,200, then one token every 50 ms
    shared = SharedRateLimiter(Redis.from_url(redis_server.url), 1200, key_prefix="refill:")
    local = InProcessRateLimiter(1200)
    try:
        # When a client spends its burst as fast as it can
        allowed = 0
        while (wait := await shared.acquire("client")) == 0 and allowed < 2000:
            allowed += 1
        # Then it got the burst (plus what refilled meanwhile), and is told to wait at most one token's time
        assert 1200 <= allowed < 2000
        assert 0 < wait <= 0.05
        # And the in-process bucket of the same size answers the same way once spent
        assert [local.acquire_at("client", 0.0) for _ in range(1200)] == [0.0] * 1200
        assert local.acquire_at("client", 0.0) == pytest.approx(0.05)
        # And after the wait the next request goes ahead
        await asyncio.sleep(wait + 0.01)
        assert await shared.acquire("client") == 0
        # And other clients were never touched
        assert await shared.acquire("other") == 0
    finally:
        await shared.aclose()


async def test_without_redis_each_worker_limits_on_its_own_and_counts_the_fallbacks(
    make_client: AppFactory, redis_server: RedisServer
) -> None:
    # Given an API whose Redis has stopped answering, with a limit of three requests a minute
    redis_server.stop()
    client = await make_client(
        headers={"X-API-Key": API_KEY}, API_RATE_LIMIT_PER_MINUTE="3", API_RATE_LIMIT_REDIS_URL=redis_server.url
    )
    # When a client sends four requests
    statuses = [(await client.get("/api/v1/trades")).status_code for _ in range(4)]
    # Then the worker still limits it, in process
    assert statuses == [200, 200, 200, 429]
    # And every one of those decisions is counted for alerting
    metrics = (await client.get("/metrics")).text
    assert "api_rate_limit_fallbacks_total 4.0" in metrics


async def test_the_limiter_uses_redis_again_once_it_answers(redis_server: RedisServer) -> None:
    # Given a shared limiter of 2 a minute whose Redis goes away
    fallbacks: list[int] = []
    shared = SharedRateLimiter(
        Redis.from_url(redis_server.url, socket_connect_timeout=0.5),
        2,
        key_prefix="back:",
        on_fallback=lambda: fallbacks.append(1),
        retry_after_failure_seconds=0,
    )
    try:
        redis_server.stop()
        assert await shared.acquire("client") == 0
        assert fallbacks == [1]
        # When Redis is back (empty: it keeps nothing on disk)
        redis_server.start()
        # Then the budget is Redis's again: two requests go ahead there, the third waits, and no fallback is counted
        assert [await shared.acquire("client") for _ in range(2)] == [0, 0]
        assert await shared.acquire("client") > 0
        assert fallbacks == [1]
    finally:
        await shared.aclose()
