"""Benchmark: the API under uvicorn over 1,000,000 trades in PostgreSQL, loaded by wrk on loopback.

Run from the project root (needs PostgreSQL at 127.0.0.1:5432 and ``wrk``; ``--install-wrk`` runs apt-get)::

    .venv/bin/python -m benchmarks.api.run [--rows 1000000] [--workers 1 2] [--connections 64] [--duration 20]

It creates a private database (dropped at the end unless ``--keep-db``), loads it with COPY, starts uvicorn,
runs wrk against the first page of trades, a deep page by cursor, the bot status and /metrics, measures the
cost of a /metrics scrape that reads the database, prints a markdown table and writes
``benchmarks/results/api.json`` (``--output``). ``--rate-limit-redis redis://127.0.0.1:6379/0`` counts the rate
limit in that Redis instead of in each worker.

Side by side in the same run: the framework's ceiling, a bare FastAPI app under the same uvicorn settings serving
the API's first page of 50 trades from memory (``benchmarks/api/bare.py``; ``--no-bare`` skips it), measured before
and after the API's targets, and each target's req/s as a share of it; and with ``--baseline DIR`` the API of
another checkout (today's main: ``git archive main | tar -x -C DIR``) on the same database, target by target
alternating with this one; ``--uncached`` adds this checkout with its read cache off (``API_READ_CACHE_SECONDS=0``)::

    .venv/bin/python -m benchmarks.api.run --workers 2 --baseline /tmp/main-src --uncached --no-single
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from backend.app.db.migrations import upgrade_to_head
from backend.app.db.queries.paging import Cursor

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SERVER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
API_KEY = "bench-api-key-" + "0" * 32
SYMBOLS = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE")
START = datetime(2024, 1, 1, tzinfo=UTC)
CHUNK = 100_000


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- data -----------------------------------------------------------------------------------------------
def _trade_csv(first: int, count: int) -> bytes:
    lines = []
    for i in range(first, first + count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        sell = i % 2 == 1
        price = 90_000_000 + (i * 7919) % 20_000_000
        amount = f"0.{(i * 104729) % 99_999_999 + 1:08d}"
        total = f"{price * float(amount):.8f}"
        fee = f"{price * float(amount) * 0.0005:.8f}"
        pnl = f"{((i * 31) % 20001 - 10000) / 7:.8f}" if sell and i % 10 else ""
        at = (START + timedelta(seconds=30 * i)).isoformat()
        side = "sell" if sell else "buy"
        lines.append(f"t-{i:08d},{symbol},{side},{price},{amount},{total},{fee},{pnl},completed,paper,{at},{at}")
    return ("\n".join(lines) + "\n").encode()


def _decision_csv(first: int, count: int) -> bytes:
    lines = []
    for i in range(first, first + count):
        decision = ("buy", "sell", "hold")[i % 3]
        at = (START + timedelta(minutes=5 * i)).isoformat()
        confidence = f"{(i * 37) % 10001 / 100:.2f}"
        lines.append(f"{SYMBOLS[i % len(SYMBOLS)]},{decision},{confidence},hold,false,ai,gpt-4o-mini,0.0002,{at}")
    return ("\n".join(lines) + "\n").encode()


async def _copy(connection: asyncpg.Connection, table: str, columns: list[str], make: Any, rows: int) -> None:
    for first in range(0, rows, CHUNK):
        data = make(first, min(CHUNK, rows - first))
        await connection.copy_to_table(table, source=io.BytesIO(data), columns=columns, format="csv")


async def load(url: str, rows: int) -> float:
    started = time.perf_counter()
    connection = await asyncpg.connect(_dsn(url))
    try:
        trade_columns = ["trade_id", "symbol", "side", "price", "amount", "total", "fee", "realized_pnl", "status",
                         "mode", "created_at", "updated_at"]  # fmt: skip
        await _copy(connection, "trades", trade_columns, _trade_csv, rows)
        decision_columns = ["symbol", "decision", "confidence", "final_decision", "overridden", "source", "model",
                            "cost_usd", "created_at"]  # fmt: skip
        await _copy(connection, "ai_decisions", decision_columns, _decision_csv, rows // 10)
        now = datetime.now(UTC)
        await connection.execute(
            "INSERT INTO portfolio_snapshots (total_value_krw, cash_krw, profit_rate, positions, mode, created_at)"
            " SELECT 10000000 + g, 5000000, 0.01, '{}'::jsonb, 'paper', $1::timestamptz - g * interval '1 hour'"
            " FROM generate_series(1, 10000) AS g",
            now,
        )
        await connection.execute(
            "INSERT INTO bot_state (instance_name, state, mode, symbols, schedule, heartbeat_at, created_at)"
            " VALUES ('default', 'running', 'paper', '[\"KRW-BTC\"]'::jsonb, '0 * * * *', now(),"
            " now())"
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def deep_cursor(url: str, offset: int) -> str:
    connection = await asyncpg.connect(_dsn(url))
    try:
        row = await connection.fetchrow(
            "SELECT created_at, id FROM trades ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1", offset
        )
    finally:
        await connection.close()
    return Cursor(row["created_at"].astimezone(UTC), row["id"]).encode()


# --- server ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    url: str,
    workers: int,
    port: int,
    pool_size: int,
    rate_limit_redis: str | None = None,
    *,
    app: str = "backend.app.main:app",
    source: Path = ROOT,
    extra_env: dict[str, str] | None = None,
    ready_path: str = "/ready",
    extra_args: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """uvicorn serving ``app`` imported from ``source`` (the checkout under test, or ``--baseline``'s)."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "API_KEY": API_KEY,
        "API_RATE_LIMIT_PER_MINUTE": "100000000",
        "API_RATE_LIMIT_REDIS_URL": rate_limit_redis or "",
        "API_RATE_LIMIT_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": str(pool_size),  # per worker; no overflow, so no connection churn under load
        "DB_MAX_OVERFLOW": "0",
        "PYTHONPATH": str(source),
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--no-access-log", "--no-server-header", "--log-level", "warning"]
    command += extra_args or []
    server = subprocess.Popen(command, cwd=source, env=env, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2) as response:
                if response.status == 200:
                    time.sleep(1.0)  # let the metrics warm-up (a full recount) finish
                    return server
        except OSError:
            time.sleep(0.3)
    stop_server(server)
    raise RuntimeError("uvicorn did not become ready within 90 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


# --- wrk ------------------------------------------------------------------------------------------------
@dataclass
class WrkResult:
    target: str
    server: str  # "api" (this checkout), "api-uncached" (--uncached), "baseline" (--baseline) or "bare" (the ceiling)
    workers: int
    connections: int
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    load_average: float
    errors: int
    non_2xx: int
    socket_errors: str


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, connections: int, duration: int, threads: int, nice: int = 0) -> dict[str, Any]:
    """``nice``: added to wrk's priority (negative undoes a caller's ``os.nice``; needs root)."""
    command = ["nice", "-n", str(nice)] if nice else []
    command += ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency"]
    command += ["-H", f"X-API-Key: {API_KEY}", url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    if "99" not in percentiles:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(percentiles["50"]),
        "p90_ms": _ms(percentiles["90"]),
        "p99_ms": _ms(percentiles["99"]),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else "none",
    }


# --- /metrics scrape cost, in process ---------------------------------------------------------------------
async def scrape_cost(url: str) -> dict[str, float]:
    """Milliseconds of a full recount (startup, then every 15 min in the background) and of a scrape that
    reads the database incrementally (what a Prometheus scrape costs at most, every ``cache_seconds``)."""
    from backend.app.db.session import create_engine
    from backend.app.services.metrics import ApiMetrics
    from src.config.settings import load_settings

    os.environ["DATABASE_URL"] = url
    settings = load_settings(env_file=None)
    engine = create_engine(url, pre_ping=False)
    metrics = ApiMetrics(engine.execution_options(isolation_level="AUTOCOMMIT"), settings, cache_seconds=0.0)
    try:
        started = time.perf_counter()
        await metrics.render()
        recount = (time.perf_counter() - started) * 1000
        if metrics.database.database_up != 1:
            raise RuntimeError("the metrics collector could not read the database")
        timings = []
        for _ in range(50):
            started = time.perf_counter()
            await metrics.render()
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        await engine.dispose()
    timings.sort()
    return {
        "full_recount_ms": round(recount, 1),
        "uncached_scrape_p50_ms": round(statistics.median(timings), 2),
        "uncached_scrape_max_ms": round(timings[-1], 2),
    }


# --- main -----------------------------------------------------------------------------------------------
def _describe_machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def cpu_probe_ms() -> float:
    """Best of 5 of ``sum(range(10**7))``: how fast this (shared, virtual) CPU is right now. Runs on different
    days, or on a host whose neighbours are busy, differ by this factor before any code does."""
    return round(min(timeit.repeat("sum(range(10**7))", number=1, repeat=5)) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--deep-offset", type=int, default=900_000)
    parser.add_argument("--pool-size", type=int, default=4, help="DB_POOL_SIZE of each worker")
    parser.add_argument(
        "--rate-limit-redis", metavar="URL", help="count the rate limit in this Redis (API_RATE_LIMIT_REDIS_URL)"
    )
    parser.add_argument("--output", default="api.json", help="results file name in benchmarks/results/")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install -y wrk when it is missing")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also measure the API of another checkout, side by side (e.g. git archive main | tar -x -C DIR)",
    )
    parser.add_argument(
        "--no-bare", action="store_true", help="skip the bare FastAPI endpoint (benchmarks/api/bare.py)"
    )
    parser.add_argument("--no-single", action="store_true", help="skip the one-connection runs")
    parser.add_argument(
        "--uncached",
        action="store_true",
        help="also measure this checkout with API_READ_CACHE_SECONDS=0 (every request reads the database)",
    )
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        if not args.install_wrk:
            raise SystemExit("wrk not found: install it (apt-get install -y wrk) or pass --install-wrk")
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)

    load_before = [round(value, 2) for value in os.getloadavg()]
    probe_before = cpu_probe_ms()
    print(f"CPU probe: sum(range(10**7)) in {probe_before} ms; load average {load_before}", flush=True)
    name = f"bench_api_{uuid.uuid4().hex[:8]}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        upgrade_to_head(url)
        load_seconds = asyncio.run(load(url, args.rows))
        print(f"loaded {args.rows:,} trades in {load_seconds:.1f} s", flush=True)
        cursor = asyncio.run(deep_cursor(url, min(args.deep_offset, args.rows - 100)))
        scrape = asyncio.run(scrape_cost(url))
        print(f"metrics scrape cost: {scrape}", flush=True)
        targets = {
            "GET /api/v1/trades?limit=50": "/api/v1/trades?limit=50",
            f"GET /api/v1/trades?limit=50&cursor=<row {args.deep_offset:,}>": f"/api/v1/trades?limit=50&cursor={cursor}",  # noqa: E501
            "GET /api/v1/bot/status": "/api/v1/bot/status",
            "GET /metrics": "/metrics",
        }
        results: list[WrkResult] = []
        for workers in args.workers:
            results += measure_servers(url, workers, targets, args)
    finally:
        if not args.keep_db:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    report = {
        "machine": _describe_machine(),
        "cpu_probe_ms": {"before": probe_before, "after": cpu_probe_ms()},
        "rows": args.rows,
        "load_seconds": round(load_seconds, 1),
        "duration_seconds": args.duration,
        "wrk_threads": args.threads,
        "pool_size_per_worker": args.pool_size,
        "rate_limit_store": "redis" if args.rate_limit_redis else "in-process",
        "metrics_scrape": scrape,
        "baseline": str(args.baseline) if args.baseline else None,
        "load_average_before": load_before,
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "results": [asdict(result) for result in results],
        "share_of_bare": share_of_bare(results),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")
    header = (
        "| target | server | workers | connections | req/s | % of bare | p50 ms | p90 ms | p99 ms | errors | load avg |"
    )
    print("\n" + header)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    shares = report["share_of_bare"]
    for result in results:
        print(_row(result, shares.get(f"{result.server}|{result.workers}|{result.connections}|{result.target}")))


STARTUP_SETTLE_SECONDS = 15
BARE_TARGET = "GET /bare (the first page's bytes from memory, bare FastAPI)"


def measure_servers(url: str, workers: int, targets: dict[str, str], args: argparse.Namespace) -> list[WrkResult]:
    """Start the API (and ``--baseline``'s API, and the bare app) with ``workers`` workers, then run wrk against
    each in turn, alternating: bare, then per target baseline and this checkout, then bare again. Side by side in
    one run, so the machine's speed (shared, it varies by the minute) moves all of them alike."""
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        port = _free_port()
        servers["api"] = (port, start_server(url, workers, port, args.pool_size, args.rate_limit_redis))
        if args.baseline:
            port = _free_port()
            server = start_server(url, workers, port, args.pool_size, args.rate_limit_redis, source=args.baseline)
            servers["baseline"] = (port, server)
        if args.uncached:
            port = _free_port()
            uncached = {"API_READ_CACHE_SECONDS": "0"}
            servers["api-uncached"] = (port, start_server(url, workers, port, args.pool_size, extra_env=uncached))
        first_page = fetch(servers["api"][0], "/api/v1/trades?limit=50")
        if "baseline" in servers and fetch(servers["baseline"][0], "/api/v1/trades?limit=50") != first_page:
            raise RuntimeError("the baseline's first page differs from this checkout's")
        body_file = Path(tempfile.gettempdir()) / f"bench-bare-body-{os.getpid()}.json"
        body_file.write_bytes(first_page)
        if not args.no_bare:
            port = _free_port()
            bare = start_server(url, workers, port, args.pool_size, app="benchmarks.api.bare:app",
                                extra_env={"BENCH_BARE_BODY": str(body_file)}, ready_path="/bare")  # fmt: skip
            servers["bare"] = (port, bare)
        time.sleep(STARTUP_SETTLE_SECONDS)  # every API server recounts its metrics at start-up (all of the trades)
        plan: list[tuple[str, str, str]] = []  # (server, label, path)
        if "bare" in servers:
            plan.append(("bare", BARE_TARGET, "/bare"))
        for label, path in targets.items():
            plan += [(name, label, path) for name in ("baseline", "api", "api-uncached") if name in servers]
        if "bare" in servers:
            plan.append(("bare", BARE_TARGET, "/bare"))
        results: list[WrkResult] = []
        for name, label, path in plan:
            url_of_target = f"http://127.0.0.1:{servers[name][0]}{path}"
            run_wrk(url_of_target, args.connections, 3, args.threads)  # warm-up
            runs = [(args.connections, args.threads, args.duration)]
            if not args.no_single:
                runs.append((1, 1, 5))
            for connections, threads, seconds in runs:
                measured = run_wrk(url_of_target, connections, seconds, threads)
                load_avg = round(os.getloadavg()[0], 2)
                results.append(WrkResult(label, name, workers, connections, load_average=load_avg, **measured))
                print(_row(results[-1]), flush=True)
        return results
    finally:
        for _port, server in servers.values():
            stop_server(server)


def fetch(port: int, path: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def share_of_bare(results: list[WrkResult]) -> dict[str, float]:
    """Each run's req/s as a share of the bare app's (the mean of its runs with the same workers and connections),
    keyed ``server|workers|connections|target``."""
    shares = {}
    for result in results:
        if result.server == "bare":
            continue
        same = (result.workers, result.connections)
        bare = [r.requests_per_second for r in results if r.server == "bare" and (r.workers, r.connections) == same]
        if bare:
            key = f"{result.server}|{result.workers}|{result.connections}|{result.target}"
            shares[key] = round(result.requests_per_second / statistics.mean(bare), 4)
    return shares


def _row(result: WrkResult, share: float | None = None) -> str:
    return (
        f"| `{result.target}` | {result.server} | {result.workers} | {result.connections} | "
        f"{result.requests_per_second:,.0f} | {'' if share is None else f'{share:.0%}'} | {result.p50_ms:.1f} | "
        f"{result.p90_ms:.1f} | {result.p99_ms:.1f} | {result.errors} | {result.load_average} |"
    )


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(_dsn(SERVER_URL))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
