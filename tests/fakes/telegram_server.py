"""A loopback fake of the Telegram Bot API (docs/external-apis.md §2), speaking the real wire format.

python-telegram-bot's ``Bot(token, base_url=fake.base_url)`` (and an ``Application`` built on that base URL)
talks to it. Served methods, under ``/bot<TOKEN>/<method>``: ``getMe``, ``sendMessage`` (form or JSON body;
an inline keyboard in ``reply_markup`` is checked: at most 64 bytes of ``callback_data`` a button),
``getUpdates`` (scripted messages and callback queries, acknowledged by ``offset`` like the real server,
filtered by ``allowed_updates``), ``deleteWebhook``, ``setMyCommands`` (checked like Telegram: 1-32
characters of ``a-z0-9_`` a command, a 1-256 character description, at most 100; kept per
``language_code``), ``answerCallbackQuery`` (a query id the fake issued, answered once) and
``editMessageText`` (a message the bot sent, in that chat; an unchanged text is the real 400 ``message is
not modified``). A wrong token is a 401 ``Unauthorized``. Faults are scripted per call of ``sendMessage``:
``flood`` (HTTP 429 with ``parameters.retry_after``), ``server_error`` (HTTP 502), ``bad_request`` (400 with a
description). With ``parse_mode=HTML`` a text whose markup Telegram could not parse gets the real 400
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
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"


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
    query_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    bot_messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # (chat, id) -> message
    open_queries: set[str] = field(default_factory=set)  # callback queries not answered yet
    my_commands: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # language_code -> menu


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


def _json_param(params: dict[str, Any], name: str) -> Any:
    """A parameter that is an object or a list: a JSON string in a form body, already decoded in a JSON one."""
    value = params.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def _chat_id(params: dict[str, Any]) -> int:
    raw = str(params.get("chat_id", ""))
    return int(raw) if raw.lstrip("-").isdigit() else 0


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

    def push_callback_query(
        self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None, username: str = "operator"
    ) -> str:
        """Queue a button press on the bot's message ``message_id`` in ``chat_id``; returns the query id."""
        with self._lock:
            message = self._state.bot_messages.get((chat_id, message_id))
            if message is None:
                raise AssertionError(f"the bot sent no message {message_id} to chat {chat_id}")
            query_id = f"cq-{next(self._state.query_ids)}"
            self._state.open_queries.add(query_id)
            self._state.updates.append(
                {
                    "update_id": next(self._state.update_ids),
                    "callback_query": {
                        "id": query_id,
                        "from": {
                            "id": user_id or chat_id, "is_bot": False, "first_name": "Op", "username": username,
                        },
                        "message": dict(message),
                        "chat_instance": f"ci-{chat_id}",
                        "data": data,
                    },
                }
            )  # fmt: skip
            return query_id

    def press_button(self, chat_id: int, label: str) -> str:
        """Press the button whose text contains ``label`` on the newest bot message in ``chat_id`` that has it."""
        with self._lock:
            messages = sorted(self._state.bot_messages.items(), key=lambda item: -item[0][1])
        for (chat, message_id), message in messages:
            if chat != chat_id:
                continue
            for row in (message.get("reply_markup") or {}).get("inline_keyboard", []):
                for button in row:
                    if label in button.get("text", ""):
                        return self.push_callback_query(chat_id, message_id, button["callback_data"])
        raise AssertionError(f"no button {label!r} in chat {chat_id}")

    # --- inspection ---------------------------------------------------------------------------------
    def my_commands(self, language_code: str = "") -> list[dict[str, str]]:
        """The command menu last registered with setMyCommands (for ``language_code``, default all)."""
        with self._lock:
            return list(self._state.my_commands.get(language_code, []))

    def bot_message(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """The bot's message as it stands now (after any editMessageText)."""
        with self._lock:
            return dict(self._state.bot_messages[(chat_id, message_id)])

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        with self._lock:
            return [call for call in self._state.calls if method is None or call.method == method]

    def sent_messages(self) -> list[dict[str, Any]]:
        """Parameters of every ``sendMessage`` the fake accepted (answered 200), with ``_message_id``."""
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
        if method == "setMyCommands":
            return self._set_my_commands(params)
        if method == "answerCallbackQuery":
            return self._answer_callback_query(params)
        if method == "editMessageText":
            return self._edit_message_text(params)
        if method == "deleteWebhook":
            return _ok(True)
        return _error(404, "Not Found: method not found")

    def _set_my_commands(self, params: dict[str, Any]) -> HttpResponse:
        commands = _json_param(params, "commands")
        if not isinstance(commands, list) or len(commands) > 100:
            return _error(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            name, description = str(command.get("command", "")), str(command.get("description", ""))
            if not _COMMAND.match(name):
                return _error(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                return _error(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        params["_ok"] = True
        with self._lock:
            self._state.my_commands[str(params.get("language_code") or "")] = [
                {"command": str(c["command"]), "description": str(c["description"])} for c in commands
            ]
        return _ok(True)

    def _answer_callback_query(self, params: dict[str, Any]) -> HttpResponse:
        query_id = str(params.get("callback_query_id", ""))
        with self._lock:
            if query_id not in self._state.open_queries:
                return _error(400, _QUERY_TOO_OLD)
            self._state.open_queries.discard(query_id)
        if len(str(params.get("text") or "")) > 200:
            return _error(400, "Bad Request: MESSAGE_TOO_LONG")
        params["_ok"] = True
        return _ok(True)

    def _edit_message_text(self, params: dict[str, Any]) -> HttpResponse:
        key = (_chat_id(params), int(params.get("message_id") or 0))
        text = str(params.get("text", ""))
        with self._lock:
            message = self._state.bot_messages.get(key)
        if message is None:
            return _error(400, "Bad Request: message to edit not found")
        if not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if str(params.get("parse_mode", "")).upper() == "HTML":
            problem = html_parse_error(text)
            if problem is not None:
                return _error(400, f"Bad Request: can't parse entities: {problem}")
        markup = _json_param(params, "reply_markup")
        if text == message["text"] and markup == message.get("reply_markup"):
            return _error(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are exactly "
                "the same as a current content and reply markup of the message",
            )
        edited = {**message, "text": text, "edit_date": int(time.time())}
        edited.pop("reply_markup", None)
        if markup:
            edited["reply_markup"] = markup
        params["_ok"] = True
        with self._lock:
            self._state.bot_messages[key] = edited
        return _ok(edited)

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
        markup = _json_param(params, "reply_markup")
        if params.get("reply_markup") is not None:
            problem = _keyboard_problem(markup)
            if problem is not None:
                return _error(400, f"Bad Request: {problem}")
        params["_ok"] = True
        chat_id = _chat_id(params)
        with self._lock:
            message_id = next(self._state.message_ids)
            message: dict[str, Any] = {
                "message_id": message_id,
                "from": BOT_USER,
                "chat": {"id": chat_id, "type": "private", "first_name": "Op"},
                "date": int(time.time()),
                "text": text,
            }
            if markup:
                message["reply_markup"] = markup
            self._state.bot_messages[(chat_id, message_id)] = message
            params["_message_id"] = message_id
        return _ok(message)

    def _get_updates(self, params: dict[str, Any]) -> HttpResponse:
        offset = int(params.get("offset") or 0)
        allowed = _json_param(params, "allowed_updates")
        with self._lock:
            if offset:
                self._state.updates = [u for u in self._state.updates if u["update_id"] >= offset]
            if allowed:  # like Telegram: updates of other types are dropped, not kept for later
                self._state.updates = [u for u in self._state.updates if set(u) & set(allowed)]
            updates = list(self._state.updates)
        response = _ok(updates)
        if not updates:  # a long poll: hold the empty answer briefly so pollers do not spin
            response.delay_seconds = min(float(params.get("timeout") or 0), _LONG_POLL_CAP_SECONDS)
        return response


def _keyboard_problem(markup: Any) -> str | None:
    """Why Telegram would refuse ``reply_markup`` (inline keyboards only here), or None."""
    if not isinstance(markup, dict):
        return "can't parse reply keyboard markup JSON object"
    rows = markup.get("inline_keyboard")
    if rows is None:
        return None  # another keyboard type: not used by the bot, accepted as is
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        return 'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
    for row in rows:
        for button in row:
            if not str(button.get("text", "")).strip():
                return "BUTTON_TEXT_INVALID"
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                return "BUTTON_DATA_INVALID"
    return None


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
