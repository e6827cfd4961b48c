"""A tiny HTTP/1.1 server on 127.0.0.1 for fakes of external services.

It runs its own asyncio loop in a daemon thread, so the same fake works from sync tests, async tests
(on any event loop) and from a child process that only knows the base URL. Handlers run on the
server thread; fakes guard their state with a lock. Keep-alive is supported (HTTP/1.1 default) and
``Connection: close`` is honoured. A response can be delayed (timeouts) or replaced by dropping the
connection without answering (crash-recovery tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    raw_query: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(slots=True)
class HttpResponse:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    drop_connection: bool = False  # close the socket instead of answering


Handler = Callable[[HttpRequest], HttpResponse]


class BackgroundLoop:
    """A server's own asyncio loop in a daemon thread: ``start()`` returns once ``_open()`` ran on it (or raises
    what it raised), ``stop()`` ends the loop after ``_close()``. Subclasses implement both."""

    thread_name = "loopback-server"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _start_loop(self) -> None:
        if self.running:
            return
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError(f"{self.thread_name} did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError(f"{self.thread_name} failed to start: {self._startup_error}")

    def _stop_loop(self) -> None:
        if not self.running or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError


class LoopbackHttpServer(BackgroundLoop):
    """Serve ``handler`` on 127.0.0.1:``port`` (0 picks a free port) from a background thread."""

    thread_name = "loopback HTTP server"

    def __init__(self, handler: Handler, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__()
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the server is not started; call start() first")
        return f"http://{self._host}:{self._port}"

    def start(self) -> None:
        self._start_loop()

    def stop(self) -> None:
        self._stop_loop()

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve_connection, self._host, self._requested_port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                response = self._handler(request)
                if response.delay_seconds > 0:
                    await asyncio.sleep(response.delay_seconds)
                if response.drop_connection:
                    break
                keep_alive = request.headers.get("connection", "").lower() != "close"
                writer.write(_encode_response(response, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    if len(head) > _MAX_HEADER_BYTES:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or "0")
    body = await reader.readexactly(length) if length else b""
    parts = urlsplit(target)
    return HttpRequest(
        method=method.upper(),
        path=parts.path,
        raw_query=parts.query,
        query=parse_qsl(parts.query, keep_blank_values=True),
        headers=headers,
        body=body,
    )


def _encode_response(response: HttpResponse, keep_alive: bool) -> bytes:
    reason = HTTPStatus(response.status).phrase if response.status in HTTPStatus._value2member_map_ else "Unknown"
    headers = {"content-length": str(len(response.body)), **{k.lower(): v for k, v in response.headers.items()}}
    headers["connection"] = "keep-alive" if keep_alive else "close"
    head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + response.body
