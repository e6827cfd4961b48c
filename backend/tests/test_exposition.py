"""The fast text exposition writes exactly what prometheus_client's ``generate_latest`` writes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from backend.app.services.exposition import TextExposition
from backend.app.services.metrics import HTTP_BUCKETS


class _Families(Collector):
    """Families built at scrape time, as the API's database collector does."""

    def collect(self):  # type: ignore[no-untyped-def]
        trades = CounterMetricFamily("trades", "Completed trades", labels=["symbol", "side"])
        trades.add_metric(["KRW-BTC", "buy"], 3)
        trades.add_metric(["KRW-ETH", "sell"], 1e21)
        yield trades
        yield GaugeMetricFamily("bot_running", "1 when running", value=1)
        stamped = GaugeMetricFamily("stamped", "with a timestamp", labels=["mode"])
        stamped.add_metric(["paper"], 0.5, timestamp=1_700_000_000.25)
        yield stamped


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    requests = Counter("http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    duration = Histogram(
        "http_request_duration_seconds", "HTTP request\nduration \\ s", ["route"], buckets=HTTP_BUCKETS,
        registry=registry,
    )  # fmt: skip
    Gauge("temperature", "no labels", registry=registry).set(float("nan"))
    Summary("latency", "a summary", registry=registry).observe(0.25)
    Info("build", "build information", registry=registry).info({"version": "1.0"})
    registry.register(_Families())
    requests.labels("GET", "/api/v1/trades", "200").inc(12)
    requests.labels("GET", 'odd "route" \\ with\nnewline', "404").inc()
    duration.labels("/api/v1/trades").observe(0.003)
    duration.labels("/api/v1/trades").observe(7.5)
    duration.labels("/metrics").observe(float("inf"))
    return registry


def test_output_is_byte_for_byte_generate_latest() -> None:
    # Given a registry with counters, gauges, histograms, a summary, an info, collector families, awkward label
    # values and a timestamp
    registry = _registry()
    exposition = TextExposition()
    # When it is rendered twice (the second time from the cached label text) and new samples appear between
    first = exposition.render(registry)
    assert first == generate_latest(registry)
    Counter("late", "registered after the first scrape", ["kind"], registry=registry).labels("x").inc(2)
    second = exposition.render(registry)
    # Then both renderings are exactly what prometheus_client writes
    assert second == generate_latest(registry)
    assert b'late_total{kind="x"} 2.0' in second
