"""The API's Prometheus metrics: HTTP traffic, and gauges/counters derived from the database at scrape time.

Scrapes stay cheap on a large database: trade and AI-decision totals are kept in memory and advanced
incrementally (only rows with an id above the last one seen are aggregated), the rest is a handful of
indexed single-row reads, and the result is cached for ``cache_seconds``. A full recount runs in the
background every ``full_refresh_seconds`` and replaces the running totals, so a row committed out of id
order, or a trade that became ``completed`` after it was first seen, is counted at the latest then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.db.queries.bot_status import bot_status
from backend.app.db.queries.metrics import (
    TradeKey,
    TradeTotals,
    decision_counts_between,
    latest_confidence_between,
    max_ids,
    merge_counts,
    trade_totals_between,
)
from backend.app.db.queries.portfolio import latest_snapshot
from backend.app.db.types import utcnow
from backend.app.services.exposition import TextExposition
from src.config.settings import Settings
from src.domain.bot import BotState
from src.utils.logger import get_logger

log = get_logger(__name__)

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class _Totals:
    """Running totals as of ``trade_high``/``decision_high`` (largest ids counted)."""

    trade_high: int = 0
    decision_high: int = 0
    trades: dict[TradeKey, TradeTotals] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    confidence: dict[str, Decimal] = field(default_factory=dict)


@dataclass(slots=True)
class _Point:
    portfolio_value_krw: Decimal | None = None
    portfolio_profit_rate: Decimal | None = None
    bot_running: int = 0
    safe_mode: int = 0


class DatabaseCollector(Collector):
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        *,
        cache_seconds: float = 5.0,
        full_refresh_seconds: float = 900.0,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._cache_seconds = cache_seconds
        self._full_refresh_seconds = full_refresh_seconds
        self._totals: _Totals | None = None
        self._point = _Point()
        self._generation = 0
        self._refreshed_at = float("-inf")
        self._full_at = float("-inf")
        self._full_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.database_up = 0
        self.version = 0  # advances whenever a refresh may have changed what ``collect`` yields

    def start_warm_up(self) -> None:
        """Count the totals in the background now, so the first scrape does not pay for the full count."""
        self._tasks.add(asyncio.create_task(self.refresh()))

    async def aclose(self, timeout: float = 10.0) -> None:
        """Let running database reads finish (a cancelled query would strand its pooled connection)."""
        pending = {task for task in (*self._tasks, self._full_task) if task is not None and not task.done()}
        if not pending:
            return
        _, still_running = await asyncio.wait(pending, timeout=timeout)
        for task in still_running:
            task.cancel()

    async def refresh(self) -> None:
        if time.monotonic() - self._refreshed_at < self._cache_seconds:
            return
        if self._lock.locked() and self._totals is not None:
            return  # another scrape is refreshing; this one serves the values it has rather than wait
        async with self._lock:
            if time.monotonic() - self._refreshed_at < self._cache_seconds:
                return
            try:
                await self._refresh()
                self.database_up = 1
            except Exception as exc:  # keep serving the last values; the gauge says the database is down
                self.database_up = 0
                log.warning("metrics.refresh_failed", error=type(exc).__name__)
            self._refreshed_at = time.monotonic()
            self.version += 1

    async def _refresh(self) -> None:
        if self._totals is None:
            await self._recount()
        elif time.monotonic() - self._full_at >= self._full_refresh_seconds and self._full_task is None:
            self._full_task = asyncio.create_task(self._background_recount())
        await self._advance()
        await self._read_point()

    async def _background_recount(self) -> None:
        try:
            await self._recount()
        except Exception as exc:
            log.warning("metrics.recount_failed", error=type(exc).__name__)
        finally:
            self._full_task = None

    async def _recount(self) -> None:
        started = time.monotonic()
        async with self._engine.connect() as connection:
            trade_high, decision_high = await max_ids(connection)
            fresh = _Totals(
                trade_high=trade_high,
                decision_high=decision_high,
                trades=await trade_totals_between(connection, 0, trade_high),
                decisions=await decision_counts_between(connection, 0, decision_high),
                confidence=await latest_confidence_between(connection, 0, decision_high),
            )
        self._totals = fresh
        self._generation += 1
        self.version += 1
        self._full_at = started

    async def _advance(self) -> None:
        totals, generation = self._totals, self._generation
        if totals is None:  # the first count failed; the next refresh starts with it again
            return
        async with self._engine.connect() as connection:
            trade_high, decision_high = await max_ids(connection)
            trades = await trade_totals_between(connection, totals.trade_high, trade_high)
            decisions = await decision_counts_between(connection, totals.decision_high, decision_high)
            confidence = await latest_confidence_between(connection, totals.decision_high, decision_high)
        if generation != self._generation:  # a recount replaced the totals meanwhile; it already covers these
            return
        merge_counts(totals.trades, trades)
        merge_counts(totals.decisions, decisions)
        totals.confidence.update(confidence)
        totals.trade_high = max(totals.trade_high, trade_high)
        totals.decision_high = max(totals.decision_high, decision_high)

    async def _read_point(self) -> None:
        mode = self._settings.trading.mode
        async with self._engine.connect() as connection:
            snapshot = await latest_snapshot(connection, mode)
            status = await bot_status(connection, self._settings.scheduler.instance_name, mode)
        heartbeat = status.heartbeat
        running = (
            heartbeat is not None
            and heartbeat.state == BotState.RUNNING
            and (utcnow() - heartbeat.heartbeat_at).total_seconds() <= self._settings.scheduler.heartbeat_stale_seconds
        )
        self._point = _Point(
            portfolio_value_krw=snapshot.total_value_krw if snapshot else None,
            portfolio_profit_rate=snapshot.profit_rate if snapshot else None,
            bot_running=int(running),
            safe_mode=int(status.risk is not None and status.risk.active),
        )

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._trade_metrics()
        yield from self._decision_metrics()
        yield from self._point_metrics()

    def _trade_metrics(self) -> Iterator[Metric]:
        labels = ["symbol", "side", "mode"]
        count = CounterMetricFamily("trades", "Completed trades recorded in the database", labels=labels)
        volume = CounterMetricFamily("trade_volume_krw", "KRW value of completed trades", labels=labels)
        fees = CounterMetricFamily("trade_fee_krw", "Fees paid on completed trades, KRW", labels=labels)
        trades = self._totals.trades if self._totals else {}
        for key, totals in sorted(trades.items()):
            count.add_metric(list(key), totals.count)
            volume.add_metric(list(key), float(totals.volume_krw))
            fees.add_metric(list(key), float(totals.fee_krw))
        yield from (count, volume, fees)

    def _decision_metrics(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "ai_decisions", "AI decisions recorded, by symbol and final decision", labels=["symbol", "decision"]
        )
        confidence = GaugeMetricFamily(
            "ai_confidence", "Confidence (0-100) of the newest AI decision", labels=["symbol"]
        )
        if self._totals:
            for (symbol, decision), value in sorted(self._totals.decisions.items()):
                decisions.add_metric([symbol, decision], value)
            for symbol, latest in sorted(self._totals.confidence.items()):
                confidence.add_metric([symbol], float(latest))
        yield from (decisions, confidence)

    def _point_metrics(self) -> Iterator[Metric]:
        mode = str(self._settings.trading.mode)
        value = GaugeMetricFamily(
            "portfolio_value_krw", "Total value of the newest portfolio snapshot", labels=["mode"]
        )
        rate = GaugeMetricFamily(
            "portfolio_profit_rate", "Profit rate of the newest portfolio snapshot", labels=["mode"]
        )
        if self._point.portfolio_value_krw is not None:
            value.add_metric([mode], float(self._point.portfolio_value_krw))
        if self._point.portfolio_profit_rate is not None:
            rate.add_metric([mode], float(self._point.portfolio_profit_rate))
        yield from (value, rate)
        yield GaugeMetricFamily(
            "bot_running", "1 when the scheduler's fresh heartbeat says running", value=self._point.bot_running
        )
        safe_mode = GaugeMetricFamily(
            "bot_safe_mode", "1 while the risk manager's safe mode blocks new buys", labels=["mode"]
        )
        safe_mode.add_metric([mode], self._point.safe_mode)
        yield safe_mode
        yield GaugeMetricFamily(
            "api_metrics_database_up",
            "1 when the last database read for these metrics succeeded",
            value=self.database_up,
        )


class ApiMetrics:
    """One registry per app, so several apps (tests) never share counters.

    ``registry`` holds the HTTP metrics, which change with every request. The database collector's text changes
    only when it refreshes (every ``cache_seconds`` at most), so it is rendered then and reused by the scrapes
    in between."""

    def __init__(self, engine: AsyncEngine, settings: Settings, **collector_options: float):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.rate_limit_fallbacks = Counter(
            "api_rate_limit_fallbacks",
            "Rate-limit decisions taken in process because the shared store (Redis) did not answer",
            registry=self.registry,
        )
        self.event_clients = Gauge(
            "events_websocket_clients", "Clients connected to /api/v1/ws/events", registry=self.registry
        )
        self.event_clients_dropped = Counter(
            "events_websocket_clients_dropped",
            "Event stream clients closed by the server because they were too slow",
            registry=self.registry,
        )
        self.database = DatabaseCollector(engine, settings, **collector_options)
        self._exposition = TextExposition()
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._database_text = b""
        self._database_text_version = -1

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # ``labels()`` checks and looks its labels up again on every call: once per key here
            labels = (method, route, str(status))
            children = self._children[key] = (self.requests.labels(*labels), self.duration.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    async def render(self) -> bytes:
        await self.database.refresh()
        version = self.database.version
        if version != self._database_text_version:
            self._database_text = self._exposition.render(self.database)
            self._database_text_version = version
        return self._exposition.render(self.registry) + self._database_text
