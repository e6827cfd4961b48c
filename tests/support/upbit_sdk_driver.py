"""The official Upbit SDK (upbit-sdk 1.1.0) driving a fake Upbit: the SDK side of the conformance test.

Runs ONLY in the SDK's own virtual environment (``.venv-sdk``, made by ``make sdk``), never in the bot's: the SDK
needs websockets<16 and the bot pins 17. ``tests/test_upbit_sdk_conformance.py`` starts FakeUpbit and
FakeUpbitWebSocket, runs this file as a subprocess and reads one JSON object per step from stdout::

    {"step": "accounts", "ok": true, "detail": ...}
    {"step": "duplicate identifier", "ok": false, "error": {"type": "BadRequestError", "status": 400, "body": ...}}

Every REST answer is checked against the SDK's own response model (as ``_strict_response_validation`` would), so a
field the fake forgets or mistypes fails the step; the few places where the SDK's types disagree with Upbit's
documented answers are listed in KNOWN_DISAGREEMENTS and reported as ``known``. The announcement step prints
``announcement-ready`` once subscribed and waits for the test to push a notice.
Arguments: ``--rest URL --ws URL --access KEY --secret KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import upbit
from pydantic import TypeAdapter, ValidationError
from upbit import AsyncUpbit
from upbit.types import (
    AccountListResponse,
    CandleListDaysResponse,
    CandleListMinutesResponse,
    Order,
    OrderbookListInstrumentsResponse,
    OrderbookListResponse,
    OrderListClosedResponse,
    OrderRetrieveChanceResponse,
    TickerListByTradingPairsResponse,
    TradeListResponse,
    TradingPairListResponse,
)
from upbit.types.announcement import Announcement
from upbit.types.connect_private_server_event import MyOrder
from upbit.types.connect_public_server_event import Ticker

BTC = "KRW-BTC"

# Where the SDK's declared types disagree with what Upbit documents and the fake therefore keeps: a market buy
# (ord_type "price") has no volume, so Upbit answers ``remaining_volume: null`` while the SDK types it ``str``.
KNOWN_DISAGREEMENTS: tuple[tuple[str, type[Any]], ...] = (("remaining_volume", type(None)),)


def _dump(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump(item) for item in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return value


def _report(step: str, ok: bool, **fields: Any) -> None:
    print(json.dumps({"step": step, "ok": ok, **fields}, ensure_ascii=False, default=str), flush=True)


def check_shape(model: Any, data: Any) -> tuple[list[str], list[str]]:
    """Validate ``data`` against the SDK's model the way ``_strict_response_validation`` would; the problems
    and the known disagreements (see KNOWN_DISAGREEMENTS), each as "location: message"."""
    try:
        TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        problems, known = [], []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            line = f"{where}: {error['msg']} (got {error.get('input')!r})"[:300]
            field = str(error["loc"][-1]) if error["loc"] else ""
            tolerated = any(
                field == name and isinstance(error.get("input"), kind) for name, kind in KNOWN_DISAGREEMENTS
            )
            (known if tolerated else problems).append(line)
        return problems, known
    return [], []


async def _step(name: str, model: Any, call: Callable[[], Awaitable[Any]]) -> Any:
    """One REST call through the SDK's raw-response API: the status, the JSON, and its shape check."""
    try:
        raw = await call()
        data = raw.http_response.json(parse_float=str)  # what the SDK itself does with numbers
    except upbit.APIStatusError as exc:
        _report(name, False, error={"type": type(exc).__name__, "status": exc.status_code, "body": exc.body})
        return None
    except Exception as exc:
        _report(
            name,
            False,
            error={"type": type(exc).__name__, "message": str(exc)[:2000], "trace": traceback.format_exc()[-2000:]},
        )
        return None
    problems, known = check_shape(model, data)
    _report(name, not problems, status=raw.http_response.status_code, detail=data, problems=problems, known=known)
    return data


async def rest_steps(client: AsyncUpbit) -> None:
    raw = client.with_raw_response
    await _step("accounts", AccountListResponse, lambda: raw.accounts.list())
    await _step("candles minutes", CandleListMinutesResponse, lambda: raw.candles.list_minutes(1, market=BTC, count=5))
    await _step("candles days", CandleListDaysResponse, lambda: raw.candles.list_days(market=BTC, count=3))
    await _step("ticker", TickerListByTradingPairsResponse, lambda: raw.tickers.list_by_trading_pairs(markets=BTC))
    await _step("orderbook", OrderbookListResponse, lambda: raw.orderbooks.list(markets=BTC))
    await _step("instruments", OrderbookListInstrumentsResponse, lambda: raw.orderbooks.list_instruments(markets=BTC))
    await _step("order chance", OrderRetrieveChanceResponse, lambda: raw.orders.retrieve_chance(market=BTC))
    await _step("market list with details", TradingPairListResponse, lambda: raw.trading_pairs.list(is_details=True))
    await _step(
        "orders/test",
        Order,
        lambda: raw.orders.test_create(
            market=BTC, side="bid", ord_type="limit", price="90000000", volume="0.001", identifier="sdk-test-1"
        ),
    )
    await _step(
        "orders/test refuses an off-tick price",
        Order,
        lambda: raw.orders.test_create(market=BTC, side="bid", ord_type="limit", price="90000001", volume="0.001"),
    )
    await _step(
        "create limit order with identifier",
        Order,
        lambda: raw.orders.create(
            market=BTC, side="bid", ord_type="limit", price="90000000", volume="0.001", identifier="sdk-limit-1"
        ),
    )
    await _step(
        "create market buy with identifier",
        Order,
        lambda: raw.orders.create(market=BTC, side="bid", ord_type="price", price="10000", identifier="sdk-buy-1"),
    )
    await _step(
        "create market sell with identifier",
        Order,
        lambda: raw.orders.create(market=BTC, side="ask", ord_type="market", volume="0.0001", identifier="sdk-sell-1"),
    )
    await _step("get order by identifier", Order, lambda: raw.orders.retrieve(identifier="sdk-limit-1"))
    await _step("open orders", list[Order], lambda: raw.orders.list_open(market=BTC))
    await _step("cancel by identifier", Order, lambda: raw.orders.cancel(identifier="sdk-limit-1"))
    await _step("get market buy by identifier", Order, lambda: raw.orders.retrieve(identifier="sdk-buy-1"))
    await _step(
        "closed orders", OrderListClosedResponse, lambda: raw.orders.list_closed(market=BTC, states=["done", "cancel"])
    )
    await _step("trades/ticks", TradeListResponse, lambda: raw.trades.list(market=BTC, count=5))
    await _step(
        "duplicate identifier",
        Order,
        lambda: raw.orders.create(market=BTC, side="bid", ord_type="price", price="10000", identifier="sdk-buy-1"),
    )


async def _ws_step(name: str, call: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    try:
        result = await call()
    except Exception as exc:
        _report(
            name,
            False,
            error={"type": type(exc).__name__, "message": str(exc)[:2000], "trace": traceback.format_exc()[-2000:]},
        )
        return
    _report(
        name,
        not result.get("problems"),
        detail=result,
        problems=result.get("problems", []),
        known=result.get("known", []),
    )


async def websocket_steps(client: AsyncUpbit) -> None:
    async def ticker() -> dict[str, Any]:
        async with client.ws_stream.ticker([BTC]) as stream:
            event = await asyncio.wait_for(stream.recv(), 5)  # the snapshot of the current price
            listed = await stream.list_subscriptions(timeout=5)
        problems, known = check_shape(Ticker, _dump(event))
        return {
            "type": type(event).__name__,
            "event": _dump(event),
            "subscriptions": _dump(listed),
            "problems": problems,
            "known": known,
        }

    await _ws_step("websocket public ticker + list_subscriptions", ticker)

    async def my_order() -> dict[str, Any]:
        async with client.ws_stream.my_order([BTC]) as stream:
            await asyncio.sleep(0.3)
            await client.orders.with_raw_response.create(
                market=BTC, side="bid", ord_type="limit", price="95001000", volume="0.0001", identifier="sdk-ws-1"
            )
            events: list[Any] = []
            while not events or getattr(events[-1], "state", None) not in ("done", "cancel"):
                events.append(await asyncio.wait_for(stream.recv(), 5))
        problems, known = [], []
        for event in events:
            found, tolerated = check_shape(MyOrder, _dump(event))
            problems += found
            known += tolerated
        return {
            "types": [type(e).__name__ for e in events],
            "states": [getattr(e, "state", None) for e in events],
            "identifiers": [getattr(e, "identifier", None) for e in events],
            "events": _dump(events),
            "problems": problems,
            "known": known,
        }

    await _ws_step("websocket private myOrder", my_order)

    async def announcement() -> dict[str, Any]:
        async with client.ws_stream.announcement() as stream:
            listed = await stream.list_subscriptions(timeout=5)
            print(json.dumps({"step": "announcement-ready", "ok": True}), flush=True)
            event = await asyncio.wait_for(stream.recv(), 10)
        problems, known = check_shape(Announcement, _dump(event))
        return {
            "type": type(event).__name__,
            "event": _dump(event),
            "subscriptions": _dump(listed),
            "problems": problems,
            "known": known,
        }

    await _ws_step("websocket private announcement", announcement)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rest", required=True)
    parser.add_argument("--ws", required=True)
    parser.add_argument("--access", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--only", choices=("rest", "websocket"), default=None)
    args = parser.parse_args()
    client = AsyncUpbit(
        access_key=args.access, secret_key=args.secret, base_url=args.rest, websocket_base_url=args.ws, max_retries=0
    )
    _report("sdk", True, detail={"version": upbit.__version__, "python": sys.version.split()[0]})
    async with client:
        if args.only in (None, "rest"):
            await rest_steps(client)
        if args.only in (None, "websocket"):
            await websocket_steps(client)


if __name__ == "__main__":
    asyncio.run(main())
