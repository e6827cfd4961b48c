"""An in-process price stream with ``UpbitStream``'s API (``run``/``set_symbols``/``stop``, ``state``,
``reconnects``), scripted by the test: ``push`` a ticker, ``drop`` the connection, ``resume`` it, ``go_silent``.

For the price watch's own logic (health, fallback, symbols) without sockets; the end-to-end tests use the real
``UpbitStream`` against ``tests/fakes/upbit_websocket.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from backend.app.services.price_watch import PriceWatch
from src.domain.market_stream import PriceTick, StreamState, TickSource


class ScriptedStream:
    def __init__(self, watch: PriceWatch) -> None:
        self.on_tick = watch.on_stream_tick
        self.on_state = watch.on_stream_state
        self.state = StreamState.CONNECTING
        self.reconnects = 0
        self.symbols: list[str] = []
        self.subscriptions: list[list[str]] = []
        self._stopped = asyncio.Event()
        self.running = asyncio.Event()

    async def run(self) -> None:
        await self._set(StreamState.LIVE)
        self.running.set()
        await self._stopped.wait()

    def set_symbols(self, symbols: Iterable[str]) -> None:
        self.symbols = list(symbols)
        self.subscriptions.append(self.symbols)

    async def stop(self) -> None:
        self.state = StreamState.OFF
        self._stopped.set()

    async def push(self, symbol: str, price: Decimal | int | str) -> bool:
        """Deliver one ticker when connected and subscribed to ``symbol``; False when it would not arrive."""
        if self.state is not StreamState.LIVE or symbol not in self.symbols:
            return False
        tick = PriceTick(symbol, Decimal(str(price)), datetime.now(UTC), TickSource.STREAM, time.perf_counter())
        await self.on_tick(tick)
        return True

    async def drop(self) -> None:
        await self._set(StreamState.DOWN)

    async def resume(self) -> None:
        self.reconnects += 1
        await self._set(StreamState.LIVE)

    async def _set(self, state: StreamState) -> None:
        self.state = state
        await self.on_state(state)


class ScriptedStreams:
    """The factory the scheduler is given (``price_stream=``); ``last`` is the stream it built most recently."""

    def __init__(self) -> None:
        self.built: list[ScriptedStream] = []

    def __call__(self, watch: PriceWatch) -> ScriptedStream:
        stream = ScriptedStream(watch)
        self.built.append(stream)
        return stream

    @property
    def last(self) -> ScriptedStream:
        return self.built[-1]
