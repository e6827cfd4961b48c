"""Per-client rate limits: a token bucket of ``per_minute`` requests of burst, refilled at ``per_minute`` a minute.

``InProcessRateLimiter`` keeps the buckets in the worker: exact with one worker, ``N`` times the limit with ``N``.
``SharedRateLimiter`` keeps them in Redis (``API_RATE_LIMIT_REDIS_URL``), so every worker and every API
instance on that Redis counts against the same bucket. While Redis cannot answer, each worker falls back to its
own buckets (logged, and counted in ``api_rate_limit_fallbacks_total``) and tries Redis again a few seconds later.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from src.config.system_groups import ApiConfig
from src.utils.logger import get_logger

log = get_logger(__name__)


class RateLimiter(Protocol):
    async def acquire(self, client: str) -> float:
        """0 when the request may go ahead; otherwise the seconds until one would be allowed."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class InProcessRateLimiter:
    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max_clients = max_clients

    async def acquire(self, client: str) -> float:
        return self.acquire_at(client, time.monotonic())

    def acquire_at(self, client: str, now: float) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
            self._buckets[client] = bucket
            if len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    async def aclose(self) -> None:
        return None


# The same token bucket as a GCRA, atomic in Redis on Redis's own clock: the key holds the "theoretical arrival
# time" (TAT, microseconds) of the next request at the sustained rate. A request is allowed while
# TAT - now <= (burst - 1) * interval, i.e. while the bucket holds at least one token; the answer is the wait
# in microseconds (0 = allowed). The key expires once the bucket is full again.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - now - (burst - 1) * interval
if wait > 0 then return wait end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
"""


class SharedRateLimiter:
    def __init__(
        self,
        redis: Redis,
        per_minute: int,
        *,
        key_prefix: str,
        on_fallback: Callable[[], None] = lambda: None,
        retry_after_failure_seconds: float = 5.0,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_GCRA)
        self._args = (max(1, round(60_000_000 / per_minute)), per_minute)
        self._prefix = key_prefix
        self._fallback = InProcessRateLimiter(per_minute)
        self._on_fallback = on_fallback
        self._retry_after_failure = retry_after_failure_seconds
        self._unavailable_until: float | None = None

    async def acquire(self, client: str) -> float:
        now = time.monotonic()
        if self._unavailable_until is not None and now < self._unavailable_until:
            return self._fall_back(client, now)
        try:
            wait_us = await self._script(keys=[self._prefix + client], args=self._args)
        except (RedisError, OSError) as exc:
            if self._unavailable_until is None:
                log.warning("api.rate_limit_store_unavailable", error=type(exc).__name__, fallback="in-process")
            self._unavailable_until = now + self._retry_after_failure
            return self._fall_back(client, now)
        if self._unavailable_until is not None:
            log.info("api.rate_limit_store_restored")
            self._unavailable_until = None
        return int(wait_us) / 1_000_000

    def _fall_back(self, client: str, now: float) -> float:
        self._on_fallback()
        return self._fallback.acquire_at(client, now)

    async def aclose(self) -> None:
        await self._redis.aclose()


def rate_limiter_for(api: ApiConfig, on_fallback: Callable[[], None] = lambda: None) -> RateLimiter:
    if api.rate_limit_redis_url is None:
        return InProcessRateLimiter(api.rate_limit_per_minute)
    redis = Redis.from_url(
        api.rate_limit_redis_url.get_secret_value(),
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),  # a failed call falls back at once; the limiter itself retries later
    )
    return SharedRateLimiter(
        redis, api.rate_limit_per_minute, key_prefix=api.rate_limit_redis_prefix, on_fallback=on_fallback
    )
