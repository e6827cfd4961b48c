"""Upbit's private WebSocket in the scheduler: ``myOrder`` and ``announcement`` events into ``PrivateEvents``.

On when ``UPBIT_PRIVATE_STREAM_ENABLED=true`` (the default) and the API keys are set: in live mode both types (our
orders settle as soon as Upbit reports them), in paper mode announcements only (the paper account's orders never
reach Upbit). Off without keys, when switched off, and in replay; the reason is logged, written to
``system_logs`` and shown in the heartbeat (``details.private_stream``). The stream itself (``UpbitStream``,
``src/api/upbit/websocket.py``) reconnects with backoff and never raises on network errors; the consumer works
its queue in a task of its own, so a slow database never holds the stream up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from backend.app.services.trading_engine import TradingEngine
from src.api.upbit.websocket import StreamKind, UpbitStream, private_url
from src.config.settings import Settings
from src.domain.market_stream import StreamState
from src.domain.modes import TradingMode
from src.trading.private_events import PrivateEvents, Refresh
from src.utils.logger import get_logger

log = get_logger(__name__)


class PrivateStreamClient(Protocol):
    """What the scheduler needs of the stream (``UpbitStream`` with ``kind=PRIVATE``)."""

    state: StreamState

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


StreamFactory = Callable[..., PrivateStreamClient]


def private_stream_url(settings: Settings) -> str:
    """``UPBIT_WEBSOCKET_URL`` + ``/private`` (``wss://api.upbit.com/websocket/v1/private``)."""
    return private_url(settings.upbit.websocket_url)


def off_reason(settings: Settings, mode: TradingMode) -> str | None:
    """Why the private stream stays off, or None when it runs."""
    if mode is TradingMode.REPLAY:
        return "replay has no private stream"
    if not settings.realtime.private_stream_enabled:
        return "UPBIT_PRIVATE_STREAM_ENABLED=false"
    if not settings.upbit.has_keys:
        return "no UPBIT_ACCESS_KEY/UPBIT_SECRET_KEY (the private stream needs them)"
    return None


def upbit_stream(settings: Settings, **options: Any) -> PrivateStreamClient:
    """The real stream: ``UpbitStream(url, kind=PRIVATE, keys, stale and reconnect limits, **options)`` (the
    callbacks, and ``private_types`` for announcements only)."""
    upbit = settings.upbit
    assert upbit.access_key is not None  # off_reason checked both keys
    assert upbit.secret_key is not None
    return UpbitStream(
        private_stream_url(settings),
        kind=StreamKind.PRIVATE,
        access_key=upbit.access_key.get_secret_value(),
        secret_key=upbit.secret_key.get_secret_value(),
        stale_seconds=settings.realtime.stale_seconds,
        reconnect_max_seconds=settings.realtime.reconnect_max_seconds,
        **options,
    )


class PrivateStream:
    """Starts and stops the private stream and its consumer for one engine."""

    def __init__(
        self,
        engine: TradingEngine,
        *,
        lock: asyncio.Lock,
        refresh: Refresh | None,
        factory: StreamFactory | None = None,
    ) -> None:
        self.engine = engine
        self.lock = lock
        self.refresh = refresh
        self.factory: StreamFactory = factory or upbit_stream
        self.consumer: PrivateEvents | None = None
        self.stream: PrivateStreamClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.what = "myOrder and announcement" if engine.mode is TradingMode.LIVE else "announcements only"

    async def start(self) -> None:
        settings = self.engine.settings
        reason = off_reason(settings, self.engine.mode)
        if reason is not None:
            self._set_status(f"off: {reason}")
            log.info("private_stream.off", reason=reason)
            await self._note("info", f"private stream off: {reason}")
            return
        self.consumer = self.engine.private_events(lock=self.lock, refresh=self.refresh)
        callbacks: dict[str, Any] = {"on_announcement": self.consumer.on_announcement, "on_state": self._on_state}
        if self.engine.mode is TradingMode.LIVE:
            callbacks["on_order"] = self.consumer.on_order
        else:  # a paper account's orders never reach Upbit: subscribe to the notices only
            callbacks["private_types"] = ("announcement",)
        try:
            self.stream = self.factory(settings, **callbacks)
        except Exception as exc:  # e.g. the transport is missing: trading goes on with the polling reconciliation
            self._set_status(f"off: cannot start: {type(exc).__name__}: {exc}")
            log.exception("private_stream.start_failed")
            await self._note("error", f"private stream could not start: {type(exc).__name__}: {exc}")
            return
        self._set_status(f"{StreamState.CONNECTING.value} ({self.what})")
        self._tasks = [
            asyncio.create_task(self.consumer.run(), name="private-events"),
            asyncio.create_task(self._run_stream(self.stream), name="private-stream"),
        ]
        log.info("private_stream.started", url=private_stream_url(settings), types=self.what)

    async def _run_stream(self, stream: PrivateStreamClient) -> None:
        try:
            await stream.run()
        except Exception as exc:  # the stream promises not to raise; if it does, say so and keep trading
            self._set_status(f"{StreamState.DOWN.value}: stopped by {type(exc).__name__}: {exc}")
            log.exception("private_stream.crashed")
            await self._note("error", f"private stream stopped: {type(exc).__name__}: {exc}")

    async def _on_state(self, state: StreamState) -> None:
        self._set_status(f"{StreamState(state).value} ({self.what})")
        log.info("private_stream.state", state=str(state))

    def _set_status(self, status: str) -> None:
        self.engine.private_stream_status = status

    async def _note(self, level: str, message: str) -> None:
        try:
            await self.engine.log_event(
                level, message, {"stream": "private", "status": self.engine.private_stream_status}
            )
        except Exception:
            log.exception("system_log.write_failed")

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop the stream (no new events), let the consumer finish what it was given (a settlement is not cut
        in half; one that waits too long is finished by the next start-up's reconciliation), then stop it."""
        if self.stream is not None:
            with contextlib.suppress(Exception):
                await self.stream.stop()
        if self.consumer is not None and self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.consumer.drain(), timeout=drain_seconds)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.stream is not None:
            self._set_status(f"{StreamState.OFF.value}: stopped")
