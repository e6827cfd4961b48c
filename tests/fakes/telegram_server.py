"""A loopback fake of the Telegram Bot API (docs/external-apis.md §2), speaking the real wire format.

python-telegram-bot's ``Bot(token, base_url=fake.base_url)`` talks to it. Served methods, under
``/bot<TOKEN>/<method>``: ``getMe``, ``sendMessage`` (form or JSON body), ``getUpdates`` (scripted updates,
acknowledged by ``offset`` like the real server), ``deleteWebhook``, ``setMyCommands``. A wrong token is a
401 ``Unauthorized``. Faults are scripted per call of ``sendMessage``: ``flood`` (HTTP 429 with
``parameters.retry_after``), ``server_error`` (HTTP 502), ``bad_request`` (400 with a description). With
``parse_mode=HTML`` a text whose markup Telegram could not parse gets the real 400
``Bad Request: can't parse entities: ...``. Every request is recorded (method, parameters, monotonic time).

As a process: ``python -m tests.fakes.telegram_server --port 8766``; the first line on stdout is
``listening on <base_url>`` (the value for ``TELEGRAM_BASE_URL``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes.loopback_http import HttpRequest, HttpResponse, LoopbackHttpServer

DEFAULT_TOKEN = "123456789:AAFakeTelegramTokenForTests_0123456789"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "TradeBot", "username": "trade_bot"}
_ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "span",
    "blockquote", "tg-emoji",
}  # fmt: skip
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^<>]*)>")
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|lt|gt|amp|quot);")
_LONG_POLL_CAP_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class RecordedCall:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when the fake received it


@dataclass(slots=True)
class SendFault:
    kind: str  # flood | server_error | bad_request
    retry_after: int = 1
    description: str = "Bad Request: chat not found"


@dataclass(slots=True)
class _State:
    calls: list[RecordedCall] = field(default_factory=list)
    faults: list[SendFault] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    update_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    message_ids: itertools.count = field(default_factory=lambda: itertools.count(1))


def html_parse_error(text: str) -> str | None:
    """Why Telegram would reject ``text`` as HTML, or None when it parses."""
    stack: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "<":
            tag = _TAG.match(text, position)
            if tag is None:
                return f"Unsupported start tag at byte offset {position}"
            closing, name = tag.group(1) == "/", tag.group(2).lower()
            if name not in _ALLOWED_TAGS:
                return f'Unsupported start tag "{name}" at byte offset {position}'
            if closing:
                if not stack or stack.pop() != name:
                    return f"Unexpected end tag at byte offset {position}"
            else:
                stack.append(name)
            position = tag.end()
        elif char == "&":
            entity = _ENTITY.match(text, position)
            if entity is None:
                return f"Character entity expected at byte offset {position}"
            position = entity.end()
        else:
            position += 1
    if stack:
        return f'Can\'t find end tag corresponding to start tag "{stack[-1]}"'
    return None


def _params(request: HttpRequest) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    content_type = request.headers.get("content-type", "")
    if request.body and "json" in content_type:
        params.update(json.loads(request.body))
    elif request.body:
        params.update(parse_qsl(request.body.decode(), keep_blank_values=True))
    return params


def _json(status: int, payload: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status=status, body=json.dumps(payload).encode(), headers={"content-type": "application/json"})


def _ok(result: Any) -> HttpResponse:
    return _json(200, {"ok": True, "result": result})


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> HttpResponse:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return _json(status, body)


class FakeTelegram:
    """A started fake is a context manager (sync or async); ``base_url`` goes to ``TELEGRAM_BASE_URL``."""

    def __init__(self, token: str = DEFAULT_TOKEN, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._state = _State()
        self._server = LoopbackHttpServer(self._handle, port=port, host=host)

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{self._server.base_url}/bot"

    def start(self) -> FakeTelegram:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeTelegram:
        return self.start()

    async def __aexit__(self, *_exc: object) -> None:
        self.stop()

    # --- scripting ----------------------------------------------------------------------------------
    def fail_next_sends(self, *faults: SendFault) -> None:
        with self._lock:
            self._state.faults.extend(faults)

    def push_message(self, chat_id: int, text: str, *, username: str = "operator") -> int:
        """Queue an incoming message (e.g. a command) for ``getUpdates``; returns its update_id."""
        with self._lock:
            update_id = next(self._state.update_ids)
            message_id = next(self._state.message_ids)
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text[:1] == "/" else []
            self._state.updates.append(
                {
                    "update_id": update_id,
                    "message": {
                        "message_id": message_id,
                        "from": {"id": chat_id, "is_bot": False, "first_name": "Op", "username": username},
                        "chat": {"id": chat_id, "type": "private", "first_name": "Op"},
                        "date": int(time.time()),
                        "text": text,
                        "entities": entities,
                    },
                }
            )
            return update_id

    # --- inspection ---------------------------------------------------------------------------------
    def calls(self, method: str | None = None) -> list[RecordedCall]:
        with self._lock:
            return [call for call in self._state.calls if method is None or call.method == method]

    def sent_messages(self) -> list[dict[str, Any]]:
        """Parameters of every ``sendMessage`` the fake accepted (answered 200)."""
        with self._lock:
            return [
                call.params for call in self._state.calls if call.method == "sendMessage" and call.params.get("_ok")
            ]

    def pending_updates(self) -> int:
        with self._lock:
            return len(self._state.updates)

    # --- the wire -------------------------------------------------------------------------------------
    def _handle(self, request: HttpRequest) -> HttpResponse:
        prefix, _, method = request.path.rpartition("/")
        if not prefix.startswith("/bot"):
            return _error(404, "Not Found")
        params = _params(request)
        call = RecordedCall(method=method, params=params, at=time.monotonic())
        with self._lock:
            self._state.calls.append(call)
        if prefix != f"/bot{self.token}":
            return _error(401, "Unauthorized")
        if method == "getMe":
            return _ok(BOT_USER)
        if method == "sendMessage":
            return self._send_message(params)
        if method == "getUpdates":
            return self._get_updates(params)
        if method in ("deleteWebhook", "setMyCommands"):
            return _ok(True)
        return _error(404, "Not Found: method not found")

    def _send_message(self, params: dict[str, Any]) -> HttpResponse:
        with self._lock:
            fault = self._state.faults.pop(0) if self._state.faults else None
        if fault is not None and fault.kind == "flood":
            return _error(
                429, f"Too Many Requests: retry after {fault.retry_after}", {"retry_after": fault.retry_after}
            )
        if fault is not None and fault.kind == "server_error":
            return _error(502, "Bad Gateway")
        if fault is not None:
            return _error(400, fault.description)
        text = str(params.get("text", ""))
        if not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return _error(400, "Bad Request: message is too long")
        if str(params.get("parse_mode", "")).upper() == "HTML":
            problem = html_parse_error(text)
            if problem is not None:
                return _error(400, f"Bad Request: can't parse entities: {problem}")
        params["_ok"] = True
        with self._lock:
            message_id = next(self._state.message_ids)
        chat_id = int(params["chat_id"]) if str(params.get("chat_id", "")).lstrip("-").isdigit() else 0
        return _ok(
            {
                "message_id": message_id,
                "from": BOT_USER,
                "chat": {"id": chat_id, "type": "private", "first_name": "Op"},
                "date": int(time.time()),
                "text": text,
            }
        )

    def _get_updates(self, params: dict[str, Any]) -> HttpResponse:
        offset = int(params.get("offset") or 0)
        with self._lock:
            if offset:
                self._state.updates = [u for u in self._state.updates if u["update_id"] >= offset]
            updates = list(self._state.updates)
        response = _ok(updates)
        if not updates:  # a long poll: hold the empty answer briefly so pollers do not spin
            response.delay_seconds = min(float(params.get("timeout") or 0), _LONG_POLL_CAP_SECONDS)
        return response


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Telegram Bot API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with FakeTelegram(token=args.token, host=args.host, port=args.port) as fake:
        print(f"listening on {fake.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()


if __name__ == "__main__":
    main()
