"""Benchmark: our Upbit REST client against Upbit's official SDK (upbit-sdk 1.1.0), both against FakeUpbit.

Run from the project root after ``make sdk``::

    .venv/bin/python -m benchmarks.upbit_sdk.run [--n 300]

One process, one event loop: the SDK is imported from ``.venv-sdk``'s site-packages appended *after* the bot's
own (so httpx, pydantic and websockets are the bot's versions; the SDK's REST code needs nothing else but
``distro``). Measured:

- latency of ``GET /v1/ticker`` and ``POST /v1/orders`` (a resting limit buy with an identifier), ours and the
  SDK's alternating call by call, after a warm-up; the fake's rate limits off so only the clients are timed;
- behaviour: a burst of 25 ticker calls against the fake's 10/s budget (who paces by ``Remaining-Req``?), one
  injected 429, a 418 block of 2 s followed by 5 more calls (who keeps sending into the block?), and an order
  POST whose connection drops after the exchange accepted it, or answered 500 after placing it (who sends the
  order again, and what does the caller see?).

Prints markdown tables and writes benchmarks/results/upbit_sdk.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from src.api.interfaces import OrderRequest
from src.api.upbit.websocket import UpbitStream
from src.api.upbit_client import UpbitClient
from src.domain.market_stream import PriceTick, StreamState
from src.domain.orders import OrderType, Side
from src.exceptions import ExchangeError
from src.utils.logger import configure_logging
from tests.fakes.upbit_server import FakeUpbit
from tests.fakes.upbit_websocket import FakeUpbitWebSocket

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SDK_SITE = ROOT / ".venv-sdk" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
BTC = "KRW-BTC"


def import_sdk() -> Any:
    if not SDK_SITE.exists():
        raise SystemExit(f"{SDK_SITE} is missing: run `make sdk` first")
    sys.path.append(str(SDK_SITE))
    import upbit

    return upbit


def fresh_fake(*, limits: bool) -> FakeUpbit:
    fake = FakeUpbit().start()
    fake.seed_demo(Decimal("1000000000000"))
    fake.enforce_rate_limits = limits
    return fake


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": len(samples),
        "mean_ms": statistics.fmean(samples) * 1000,
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
    }


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def latency(upbit: Any, n: int) -> dict[str, dict[str, dict[str, float]]]:
    fake = fresh_fake(limits=False)
    ours = UpbitClient(fake.base_url, fake.access_key, fake.secret_key)
    sdk = upbit.AsyncUpbit(access_key=fake.access_key, secret_key=fake.secret_key, base_url=fake.base_url)
    counter = iter(range(10**9))

    def our_order() -> Awaitable[Any]:
        return ours.place_order(
            OrderRequest(
                BTC,
                Side.BUY,
                OrderType.LIMIT,
                f"ours-{next(counter)}",
                volume=Decimal("0.0001"),
                price=Decimal("90000000"),
            )
        )

    def sdk_order() -> Awaitable[Any]:
        return sdk.orders.create(
            market=BTC,
            side="bid",
            ord_type="limit",
            price="90000000",
            volume="0.0001",
            identifier=f"sdk-{next(counter)}",
        )

    pairs: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = {
        "GET /v1/ticker": (lambda: ours.get_tickers([BTC]), lambda: sdk.tickers.list_by_trading_pairs(markets=BTC)),
        "POST /v1/orders": (our_order, sdk_order),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for name, (mine, theirs) in pairs.items():
            for _ in range(20):  # warm-up: connections, JWT, imports
                await mine()
                await theirs()
            samples: dict[str, list[float]] = {"ours": [], "sdk": []}
            for i in range(n):
                order = (("ours", mine), ("sdk", theirs)) if i % 2 == 0 else (("sdk", theirs), ("ours", mine))
                for who, call in order:
                    samples[who].append(await timed(call))
            results[name] = {who: percentiles(values) for who, values in samples.items()}
    finally:
        await ours.close()
        await sdk.close()
        fake.stop()
    return results


def statuses(fake: FakeUpbit, path: str) -> list[int]:
    return [r.status for r in fake.requests_to(path)]


async def outcome(call: Callable[[], Awaitable[Any]]) -> str:
    try:
        await call()
    except ExchangeError as exc:
        return f"{type(exc).__name__} ({exc.name or exc.status or 'no answer'})"
    except Exception as exc:
        status = getattr(exc, "status_code", None)
        return f"{type(exc).__name__}" + (f" ({status})" if status else "")
    return "ok"


async def behaviour(upbit: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    async def each_client(scenario: str, run: Callable[[Any, FakeUpbit, str], Awaitable[dict[str, Any]]]) -> None:
        for who in ("ours", "sdk"):
            fake = fresh_fake(limits=True)
            if who == "ours":
                client: Any = UpbitClient(fake.base_url, fake.access_key, fake.secret_key)
            else:  # the SDK as a new user gets it: default retries (2)
                client = upbit.AsyncUpbit(
                    access_key=fake.access_key, secret_key=fake.secret_key, base_url=fake.base_url
                )
            await asyncio.sleep(1.05 - time.monotonic() % 1)  # start at the beginning of a rate-limit second
            try:
                rows.append({"scenario": scenario, "client": who, **await run(client, fake, who)})
            finally:
                await client.close()
                fake.stop()

    def ticker(client: Any, who: str) -> Awaitable[Any]:
        return client.get_tickers([BTC]) if who == "ours" else client.tickers.list_by_trading_pairs(markets=BTC)

    def order(client: Any, who: str, identifier: str | None) -> Awaitable[Any]:
        if who == "ours":
            assert identifier is not None
            return client.place_order(
                OrderRequest(
                    BTC, Side.BUY, OrderType.LIMIT, identifier, volume=Decimal("0.0001"), price=Decimal("90000000")
                )
            )
        extra = {"identifier": identifier} if identifier else {}
        return client.orders.create(
            market=BTC, side="bid", ord_type="limit", price="90000000", volume="0.0001", **extra
        )

    async def burst(client: Any, fake: FakeUpbit, who: str) -> dict[str, Any]:
        started = time.perf_counter()
        results = [await outcome(lambda: ticker(client, who)) for _ in range(25)]
        seen = statuses(fake, "/v1/ticker")
        return {
            "result": f"{results.count('ok')}/25 ok" + "".join(sorted({f"; {r}" for r in results if r != "ok"})),
            "requests": len(seen),
            "429": seen.count(429),
            "418": seen.count(418),
            "seconds": round(time.perf_counter() - started, 2),
        }

    async def one_429(client: Any, fake: FakeUpbit, who: str) -> dict[str, Any]:
        fake.inject_rate_limit(1, json_body=True, path="/v1/ticker")
        started = time.perf_counter()
        result = await outcome(lambda: ticker(client, who))
        seen = statuses(fake, "/v1/ticker")
        return {
            "result": result,
            "requests": len(seen),
            "429": seen.count(429),
            "418": seen.count(418),
            "seconds": round(time.perf_counter() - started, 2),
        }

    async def block_418(client: Any, fake: FakeUpbit, who: str) -> dict[str, Any]:
        fake.inject_block(2.0, path="/v1/ticker")
        started = time.perf_counter()
        results = []
        for _ in range(6):
            results.append(await outcome(lambda: ticker(client, who)))
            await asyncio.sleep(0.1)
        seen = statuses(fake, "/v1/ticker")
        return {
            "result": "; ".join(results),
            "requests": len(seen),
            "429": seen.count(429),
            "418": seen.count(418),
            "seconds": round(time.perf_counter() - started, 2),
        }

    def order_fault(
        fault: Callable[[FakeUpbit], None], identifier: str | None
    ) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def run(client: Any, fake: FakeUpbit, who: str) -> dict[str, Any]:
            fault(fake)
            started = time.perf_counter()
            result = await outcome(lambda: order(client, who, identifier))
            seen = statuses(fake, "/v1/orders")
            return {
                "result": result,
                "requests": len(seen),
                "orders placed": len(fake.orders),
                "seconds": round(time.perf_counter() - started, 2),
            }

        return run

    await each_client("burst of 25 GET /v1/ticker (budget 10/s)", burst)
    await each_client("one 429 on GET /v1/ticker", one_429)
    await each_client("418 block of 2 s, then 5 more GET /v1/ticker 0.1 s apart", block_418)
    drop = order_fault(lambda f: f.inject_drop_after_accept(1), "dup-1")
    await each_client("POST /v1/orders with identifier: connection dropped after acceptance", drop)
    error = order_fault(
        lambda f: f.inject_server_error(500, 1, method="POST", path="/v1/orders", after_processing=True), "dup-2"
    )
    await each_client("POST /v1/orders with identifier: 500 after the order was placed", error)
    # the SDK without an identifier: nothing stops a second order
    fake = fresh_fake(limits=True)
    sdk = upbit.AsyncUpbit(access_key=fake.access_key, secret_key=fake.secret_key, base_url=fake.base_url)
    fake.inject_drop_after_accept(1)
    started = time.perf_counter()
    result = await outcome(lambda: order(sdk, "sdk", None))
    rows.append(
        {
            "scenario": "POST /v1/orders without identifier: connection dropped after acceptance",
            "client": "sdk",
            "result": result,
            "requests": len(statuses(fake, "/v1/orders")),
            "orders placed": len(fake.orders),
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    await sdk.close()
    fake.stop()
    return rows


def sdk_websocket() -> list[dict[str, Any]]:
    """The SDK's stream manager (defaults) in .venv-sdk, as a subprocess: reconnect after a drop, then refused
    reconnects (HTTP 429)."""
    rows: list[dict[str, Any]] = []
    with FakeUpbit() as rest, FakeUpbitWebSocket(upbit=rest) as ws:
        rest.set_ticker(BTC, 95_000_000)
        python = ROOT / ".venv-sdk" / "bin" / "python"
        side = ROOT / "benchmarks" / "upbit_sdk" / "sdk_ws_side.py"
        proc = subprocess.Popen([str(python), str(side), rest.base_url, ws.base_url], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        lines = iter(proc.stdout)
        json.loads(next(lines))  # the snapshot: subscribed
        dropped = time.time()
        ws.disconnect_all()
        back = json.loads(next(lines))
        rows.append(
            {
                "scenario": "connection dropped",
                "client": "sdk",
                "result": f"next message after {back['t'] - dropped:.2f} s (fixed 1 s delay, then resubscribed)",
            }
        )
        ws.connect_limit = 0  # every handshake refused with 429 from now on
        dropped = time.time()
        ws.disconnect_all()
        end = json.loads(next(lines))
        rows.append(
            {
                "scenario": "reconnects refused (HTTP 429)",
                "client": "sdk",
                "result": f"{end['event']} {end.get('error', '')} after {end['t'] - dropped:.2f} s, "
                f"{ws.refused_connects} refused handshake(s); the consumer must restart it",
            }
        )
        proc.wait(timeout=30)
    return rows


async def websocket() -> list[dict[str, Any]]:
    """Reconnect after a dropped connection, and what happens when Upbit refuses the reconnects (HTTP 429):
    the SDK's stream manager and our UpbitStream, each with its defaults."""
    rows = await asyncio.to_thread(sdk_websocket)
    # --- ours ---
    with FakeUpbit() as rest, FakeUpbitWebSocket(upbit=rest) as ws:
        rest.set_ticker(BTC, 95_000_000)
        ticks: list[float] = []

        async def on_tick(_tick: PriceTick) -> None:
            ticks.append(time.perf_counter())

        stream = UpbitStream(ws.url, symbols=[BTC], on_tick=on_tick)
        task = asyncio.create_task(stream.run())
        while not ticks:
            await asyncio.sleep(0.01)
        dropped = time.perf_counter()
        ws.disconnect_all()
        while len(ticks) < 2:
            await asyncio.sleep(0.005)
        rows.append(
            {
                "scenario": "connection dropped",
                "client": "ours",
                "result": f"next message after {ticks[1] - dropped:.2f} s (backoff 0.25-0.5 s, then resubscribed)",
            }
        )
        ws.connect_limit = 0
        ws.disconnect_all()
        await asyncio.sleep(10)
        rows.append(
            {
                "scenario": "reconnects refused (HTTP 429)",
                "client": "ours",
                "result": f"still supervising after 10 s, state {stream.state.value}, {ws.refused_connects} refused "
                f"handshakes (>= 1 s apart after a 429, backoff up to 30 s), never raised",
            }
        )
        ws.connect_limit = 5
        while stream.state is not StreamState.LIVE:
            await asyncio.sleep(0.05)
        await stream.stop()
        await task
    return rows


def sdk_source_facts(upbit: Any) -> dict[str, Any]:
    package = Path(upbit.__file__).parent
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in package.rglob("*.py")).lower()
    from upbit import _constants

    return {
        "mentions of remaining-req in the SDK source": text.count("remaining-req") + text.count("remaining_req"),
        "DEFAULT_MAX_RETRIES": _constants.DEFAULT_MAX_RETRIES,
        "INITIAL_RETRY_DELAY": _constants.INITIAL_RETRY_DELAY,
        "MAX_RETRY_DELAY": _constants.MAX_RETRY_DELAY,
    }


def markdown(
    lat: dict[str, Any], rows: list[dict[str, Any]], ws_rows: list[dict[str, Any]], facts: dict[str, Any]
) -> str:
    lines = ["| call | client | n | mean (ms) | p50 (ms) | p90 (ms) | p99 (ms) |", "|---|---|---:|---:|---:|---:|---:|"]
    for call, by_client in lat.items():
        for who, s in by_client.items():
            lines.append(
                f"| {call} | {who} | {s['n']} | {s['mean_ms']:.2f} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
                f"{s['p99_ms']:.2f} |"
            )
    lines += [
        "",
        "| scenario | client | what the caller got | requests the fake saw | 429s | 418s | orders placed | s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['client']} | {r['result']} | {r['requests']} | {r.get('429', '')} | "
            f"{r.get('418', '')} | {r.get('orders placed', '')} | {r['seconds']} |"
        )
    lines += ["", "| WebSocket scenario | client | what happened |", "|---|---|---|"]
    lines += [f"| {r['scenario']} | {r['client']} | {r['result']} |" for r in ws_rows]
    lines += ["", "SDK source: " + ", ".join(f"{k} = {v}" for k, v in facts.items())]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="timed calls per client and endpoint")
    args = parser.parse_args()
    configure_logging("ERROR", stream=sys.stderr)
    upbit = import_sdk()
    lat = await latency(upbit, args.n)
    rows = await behaviour(upbit)
    ws_rows = await websocket()
    facts = sdk_source_facts(upbit)
    print(markdown(lat, rows, ws_rows, facts))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "upbit_sdk.json").write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "sdk": upbit.__version__,
                "latency": lat,
                "behaviour": rows,
                "websocket": ws_rows,
                "sdk_source": facts,
            },
            indent=2,
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
