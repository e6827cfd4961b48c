"""Metrics born in the scheduler, served by its own HTTP endpoint (the API serves the database-derived ones).

Each ``SchedulerMetrics`` owns a registry, so tests can build as many as they like; the scheduler
process serves its one on ``SCHEDULER_METRICS_HOST``:``SCHEDULER_METRICS_PORT`` (loopback by default; 0 disables
the endpoint).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from src.domain.decisions import Decision, DecisionSource
from src.domain.orders import Side
from src.utils.logger import get_logger

log = get_logger(__name__)

_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TICK_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60)


class SchedulerMetrics:
    """Implements the pipeline's observer hooks and the scheduler's job timing."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.job_duration = Histogram(
            "scheduler_job_duration_seconds", "Duration of scheduler jobs", ["job"], registry=r, buckets=_JOB_BUCKETS
        )
        self.job_success = Counter("scheduler_job_success_total", "Scheduler jobs that succeeded", ["job"], registry=r)
        self.job_failure = Counter("scheduler_job_failure_total", "Scheduler jobs that failed", ["job"], registry=r)
        self.bot_running = Gauge(
            "bot_running", "1 while the bot trades (running), 0 when paused or stopped", registry=r
        )
        self.lock_held = Gauge(
            "scheduler_lock_held", "1 while this scheduler holds its account's single-trader lock", registry=r
        )
        self.lock_lost = Counter(
            "scheduler_lock_lost_total",
            "Times the single-trader lock was found lost (database restart, lease taken over)",
            registry=r,
        )
        self.bot_errors = Counter("bot_errors_total", "Errors in trading jobs and cycles", ["kind"], registry=r)
        self.ai_decisions = Counter(
            "ai_decisions_total",
            "Final decisions of the trading cycle (a vetoed buy counts as hold)",
            ["decision", "source"],
            registry=r,
        )
        self.ai_decision_overrides = Counter(
            "ai_decision_overrides_total",
            "Proposed decisions turned into hold, by who vetoed them (quick_filter, validator, risk, ...)",
            ["proposed", "by"],
            registry=r,
        )
        self.ai_confidence = Gauge("ai_confidence", "Confidence of the latest AI decision (0-100)", registry=r)
        self.trades = Counter("trades_total", "Executed trades (fills)", ["side", "symbol"], registry=r)
        self.trade_volume = Counter("trade_volume_krw_total", "KRW traded", ["side", "symbol"], registry=r)
        self.trade_fee = Counter("trade_fee_krw_total", "Fees paid in KRW", ["symbol"], registry=r)
        self.portfolio_value = Gauge("portfolio_value_krw", "Total account value in KRW", registry=r)
        self.portfolio_profit_rate = Gauge("portfolio_profit_rate", "Return since the start, as a fraction", registry=r)
        self.portfolio_drawdown = Gauge(
            "portfolio_drawdown_pct", "Fall of the account value from its highest snapshot, in percent", registry=r
        )
        self.portfolio_max_drawdown = Gauge(
            "portfolio_max_drawdown_pct",
            "Deepest fall of the account value from a running peak, in percent",
            registry=r,
        )
        self._peak = 0.0
        self._deepest = 0.0
        self.stage_duration = Histogram(
            "trading_cycle_stage_duration_seconds",
            "Duration of a trading cycle stage",
            ["stage"],
            registry=r,
            buckets=_STAGE_BUCKETS,
        )
        self.exchange_errors = Counter(
            "exchange_request_errors_total", "Exchange request errors", ["operation", "error"], registry=r
        )
        self.ai_errors = Counter("ai_request_errors_total", "AI adviser failures", ["reason"], registry=r)
        self.ai_tokens = Counter(
            "ai_tokens_total", "Tokens of requests that reached the model", ["purpose", "kind"], registry=r
        )
        self.ai_cost = Counter(
            "ai_cost_usd_total", "USD of requests that reached the model (configured prices)", ["purpose"], registry=r
        )
        self.ai_budget_limit = Gauge(
            "ai_budget_limit_usd", "The AI spend cap of the current UTC period (0 = no cap)", ["period"], registry=r
        )
        self.ai_budget_remaining = Gauge(
            "ai_budget_remaining_usd", "USD left of this UTC period's AI budget (+Inf: no cap)", ["period"], registry=r
        )

        # the real-time exits (backend/app/services/price_watch.py)
        self.stream_state = Gauge(
            "realtime_stream_state",
            "The public price stream's state: 1 for the current one (off, connecting, live, stale, down)",
            ["state"],
            registry=r,
        )
        self.stream_messages = Counter(
            "realtime_stream_messages_total", "Price ticks received, by source (stream, rest)", ["source"], registry=r
        )
        self.stream_reconnects = Counter(
            "realtime_stream_reconnects_total", "Reconnects of the public price stream", registry=r
        )
        self.fallback_active = Gauge(
            "realtime_fallback_active", "1 while the REST fallback polls the held coins' prices", registry=r
        )
        self.watched_positions = Gauge(
            "realtime_watched_positions", "Open positions whose levels the real-time exits watch", registry=r
        )
        self.realtime_exits = Counter(
            "realtime_exits_total",
            "Crossings handled by the real-time exits, by tick source and outcome (sold, not_sold)",
            ["source", "outcome"],
            registry=r,
        )
        self.tick_to_order = Histogram(
            "realtime_tick_to_order_seconds",
            "From a crossing tick's arrival to the exit order's answer",
            registry=r,
            buckets=_TICK_BUCKETS,
        )

    def serve(self, port: int, addr: str = "127.0.0.1", *, instance: str) -> Any | None:
        """Serve ``/metrics`` on ``addr:port`` (port 0: not at all) with every sample labelled ``bot_instance`` =
        ``instance`` (one scheduler is one instance: the A/B panels compare it like any other); returns the server
        (``shutdown()`` stops it)."""
        return InstanceMetrics({instance: self}).serve(port, addr)

    # --- pipeline observer ------------------------------------------------------------------------
    def on_stage(self, stage: str, seconds: float) -> None:
        self.stage_duration.labels(stage=stage).observe(seconds)

    def on_decision(self, source: DecisionSource, decision: Decision, confidence: Decimal | None) -> None:
        self.ai_decisions.labels(decision=decision, source=source).inc()
        if confidence is not None and source in (DecisionSource.AI, DecisionSource.CACHE):
            self.ai_confidence.set(float(confidence))

    def on_override(self, proposed: str, by: str) -> None:
        self.ai_decision_overrides.labels(proposed=proposed, by=by).inc()

    def on_ai_error(self, reason: str) -> None:
        self.ai_errors.labels(reason=reason[:40]).inc()

    def on_ai_usage(self, purpose: str, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal) -> None:
        self.ai_tokens.labels(purpose=purpose, kind="prompt").inc(prompt_tokens)
        self.ai_tokens.labels(purpose=purpose, kind="completion").inc(completion_tokens)
        self.ai_cost.labels(purpose=purpose).inc(float(cost_usd))

    def on_ai_budget(self, period: str, limit_usd: Decimal, remaining_usd: Decimal | None) -> None:
        self.ai_budget_limit.labels(period=period).set(float(limit_usd))
        self.ai_budget_remaining.labels(period=period).set(math.inf if remaining_usd is None else float(remaining_usd))

    def expect_trades_in(self, symbols: list[str]) -> None:
        """Start the trade counters of these markets at 0, so "no trade yet" is a value and not a missing series."""
        for symbol in symbols:
            for side in Side:
                self.trades.labels(side=side.value, symbol=symbol)
                self.trade_volume.labels(side=side.value, symbol=symbol)
            self.trade_fee.labels(symbol=symbol)

    def on_trade(self, trade: Any) -> None:
        self.trades.labels(side=trade.side.value, symbol=trade.symbol).inc()
        self.trade_volume.labels(side=trade.side.value, symbol=trade.symbol).inc(float(trade.total))
        self.trade_fee.labels(symbol=trade.symbol).inc(float(trade.fee))

    def on_exchange_error(self, operation: str, error: str) -> None:
        self.exchange_errors.labels(operation=operation, error=error).inc()

    def on_portfolio(self, equity: Decimal, profit_rate: Decimal | None) -> None:
        self.portfolio_value.set(float(equity))
        if profit_rate is not None:
            self.portfolio_profit_rate.set(float(profit_rate))
        self._track_drawdown(float(equity))

    def seed_equity_curve(self, equities: list[Decimal]) -> None:
        """Start the drawdown gauges from the account's stored snapshots (oldest first), so a restart keeps them."""
        for equity in equities:
            self._track_drawdown(float(equity))

    def _track_drawdown(self, equity: float) -> None:
        self._peak = max(self._peak, equity)
        drawdown = (self._peak - equity) / self._peak * 100 if self._peak > 0 else 0.0
        self._deepest = max(self._deepest, drawdown)
        self.portfolio_drawdown.set(drawdown)
        self.portfolio_max_drawdown.set(self._deepest)


INSTANCE_LABEL = "bot_instance"  # not ``instance``: Prometheus sets that one to the scrape target


class InstanceMetrics(Collector):
    """One ``SchedulerMetrics`` per A/B instance, served as one set of metrics with a ``bot_instance`` label on every
    sample (``scheduler_main.py --instances``)."""

    def __init__(self, metrics: Mapping[str, SchedulerMetrics]) -> None:
        self.metrics = dict(metrics)
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for instance, metrics in self.metrics.items():
            for family in metrics.registry.collect():
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    labels = {**sample.labels, INSTANCE_LABEL: instance}
                    target.samples.append(Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar))
        yield from merged.values()

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any | None:
        """Serve ``/metrics`` on ``addr:port`` (port 0: not at all); returns the server (``shutdown()`` stops it)."""
        if port <= 0:
            return None
        try:
            server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:  # e.g. another process already serves on this port
            log.error("metrics.port_unavailable", host=addr, port=port, error=str(exc))
            return None
        log.info("metrics.serving", host=addr, port=port, instances=list(self.metrics))
        return server
