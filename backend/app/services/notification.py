"""Telegram delivery of the pipeline's notification events (the ``Notifier`` port of ``src.domain.events``).

``notify`` only enqueues: it returns at once and never raises, so a slow or broken
Telegram can never hold up a trading cycle. A background task sends each event to every configured chat
as HTML in ``NOTIFY_LANGUAGE`` (the catalogue of ``telegram_messages``; values escaped), split under
Telegram's 4,096-character limit, retrying flood control after ``retry_after`` and network errors with
backoff. A message Telegram cannot parse as HTML is sent again as
plain text. A message that finally fails is written to ``system_logs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

from telegram import Bot
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from backend.app.services.telegram_messages import render_event
from src.config.system_groups import NotifyLanguage, TelegramConfig
from src.domain.events import EventKind, NotificationEvent
from src.exceptions import NotificationFailed
from src.utils.logger import get_logger, redactor

log = get_logger(__name__)

MAX_MESSAGE_CHARS = 4096

_TAG = re.compile(r"<[^<>]*>")
_PARSE_ERROR = "can't parse entities"


TradeDetails = Callable[[str], Awaitable[dict[str, Any]]]  # order identifier -> extra fields of its sell


class SystemLogWriter(Protocol):
    """Where a message that could not be delivered is recorded (``BotRepository`` fits)."""

    async def log(self, level: str, message: str, *, source: str, context: dict[str, Any] | None = None) -> None: ...


# --- formatting ---------------------------------------------------------------------------------------
def format_event(event: NotificationEvent, language: NotifyLanguage = NotifyLanguage.KO) -> str:
    """The event as Telegram HTML in ``language``, from the message catalogue (``telegram_messages``)."""
    return render_event(event, language)


def html_to_plain(text: str) -> str:
    return html.unescape(_TAG.sub("", text))


def _safe_cut(text: str, limit: int) -> int:
    """The largest cut point <= limit outside any HTML tag, entity or element (so both halves still parse)."""
    cut = limit
    open_tag, close_tag = text.rfind("<", 0, cut), text.rfind(">", 0, cut)
    if open_tag > close_tag:
        cut = open_tag
    amp, semi = text.rfind("&", 0, cut), text.rfind(";", 0, cut)
    if amp > semi and cut - amp <= 10:
        cut = amp
    unclosed: list[int] = []
    for tag in _TAG.finditer(text, 0, cut):
        if tag.group().startswith("</"):
            if unclosed:
                unclosed.pop()
        else:
            unclosed.append(tag.start())
    if unclosed and unclosed[0] > 0:
        cut = unclosed[0]
    return cut if cut > 0 else limit


def split_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Split at line breaks into chunks of at most ``limit`` characters; overlong lines are cut safely."""
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            cut = _safe_cut(line, limit)
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:cut])
            line = line[cut:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current:
        chunks.append(current)
    return [chunk for chunk in chunks if chunk.strip()]


def _retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# --- delivery -----------------------------------------------------------------------------------------
class _TelegramClient:
    """A PTB ``Bot`` on ``TELEGRAM_BASE_URL`` and the two HTTP clients it uses (messages, long polling).

    The bot is never ``initialize()``d: that calls getMe and puts the token into the error message of a
    rejected token. So the HTTP clients are closed here, not by ``Bot.shutdown()``.
    """

    def __init__(self, config: TelegramConfig) -> None:
        if not config.bot_token:
            raise RuntimeError("Telegram is not configured: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_IDS")
        self.requests = (
            HTTPXRequest(connection_pool_size=4, read_timeout=15.0, connect_timeout=5.0),
            HTTPXRequest(connection_pool_size=1, read_timeout=30.0, connect_timeout=5.0),
        )
        self.bot = Bot(
            config.bot_token.get_secret_value(),
            base_url=config.base_url,
            request=self.requests[0],
            get_updates_request=self.requests[1],
        )

    async def aclose(self) -> None:
        for request in self.requests:
            with contextlib.suppress(Exception):
                await request.shutdown()


class NotificationService:
    """The Telegram ``Notifier``: ``start()`` once, ``notify()`` from anywhere, ``aclose()`` at shutdown."""

    def __init__(
        self,
        config: TelegramConfig,
        system_logs: SystemLogWriter | None = None,
        *,
        max_queue: int = 1000,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_retry_after_seconds: float = 120.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        trade_details: TradeDetails | None = None,
    ) -> None:
        self._config = config
        self._trade_details = trade_details
        self._system_logs = system_logs
        self._queue: asyncio.Queue[NotificationEvent] = asyncio.Queue(maxsize=max_queue)
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._max_retry_after = max_retry_after_seconds
        self._sleep = sleep
        self._client: _TelegramClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0
        self.delivered = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    @property
    def bot(self) -> Bot:
        if self._client is None:
            self._client = _TelegramClient(self._config)
        return self._client.bot

    # --- the Notifier port ---
    def notify(self, event: NotificationEvent) -> None:
        if not self.enabled:
            return
        try:
            if self._loop is not None and _running_loop() is not self._loop:  # called from another thread
                self._loop.call_soon_threadsafe(self._enqueue, event)
            else:
                self._enqueue(event)
        except Exception as exc:  # never let a notification break the caller (e.g. a closed loop)
            log.warning("telegram.enqueue_failed", kind=str(event.kind), error=str(exc))

    def _enqueue(self, event: NotificationEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("telegram.queue_full", kind=str(event.kind), dropped=self.dropped)

    # --- lifecycle ---
    async def start(self) -> None:
        if not self.enabled or self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="telegram-sender")
        log.info("telegram.started", chats=len(self._config.chat_ids))

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Deliver what is queued (within ``drain_seconds``), then stop the sender and close the HTTP client."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=drain_seconds)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def drain(self) -> None:
        """Wait until every queued event has been delivered or recorded as failed."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver_event(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the sender must outlive any single bad event
                log.error("telegram.sender_error", kind=str(event.kind), error=str(exc))
            finally:
                self._queue.task_done()

    @property
    def config(self) -> TelegramConfig:
        return self._config

    @property
    def language(self) -> NotifyLanguage:
        return self._config.language

    async def _deliver_event(self, event: NotificationEvent) -> None:
        text = format_event(await self._with_details(event), self.language)
        for chat_id in self._config.chat_ids:
            try:
                await self.send(chat_id, text)
            except NotificationFailed as exc:
                await self._record_failure(event, chat_id, exc)

    async def _with_details(self, event: NotificationEvent) -> NotificationEvent:
        """A sell with the entry time and price of the position it sold (for the holding time), when the
        event does not carry them and ``trade_details`` finds them; else the event as it is."""
        fields = event.fields
        identifier = fields.get("identifier")
        if (
            self._trade_details is None
            or event.kind is not EventKind.TRADE_EXECUTED
            or str(fields.get("side")) != "sell"
            or not identifier
            or "entry_at" in fields
        ):
            return event
        try:
            details = await self._trade_details(str(identifier))
        except Exception as exc:  # the message goes out without the holding time
            log.warning("telegram.trade_details_failed", error=f"{type(exc).__name__}: {exc}")
            return event
        return replace(event, fields={**fields, **details}) if details else event

    # --- sending (also used by the command handler for replies) ---
    async def send(self, chat_id: str | int, html_text: str) -> None:
        """Send ``html_text`` in chunks; raises NotificationFailed when a chunk could not be delivered."""
        for chunk in split_message(html_text):
            await self._send_chunk(chat_id, chunk)

    async def _send_chunk(self, chat_id: str | int, chunk: str) -> None:
        parse_mode: str | None = "HTML"
        text = chunk
        last_error = "no attempt made"
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self.bot.send_message(chat_id=chat_id, text=text, parse_mode=parse_mode)
                self.delivered += 1
                return
            except RetryAfter as exc:
                wait = min(_retry_after_seconds(exc), self._max_retry_after)
                last_error = f"flood control: retry after {wait:g}s"
                log.warning("telegram.retry_after", chat_id=str(chat_id), seconds=wait, attempt=attempt)
                await self._sleep(wait)
            except BadRequest as exc:
                if parse_mode is not None and _PARSE_ERROR in str(exc).lower():
                    log.warning("telegram.html_rejected", chat_id=str(chat_id), error=str(exc))
                    parse_mode, text = None, html_to_plain(chunk)
                    last_error = str(exc)
                    continue
                raise NotificationFailed(str(exc), chat_id=str(chat_id)) from exc
            except NetworkError as exc:  # includes TimedOut and 5xx answers
                last_error = f"{type(exc).__name__}: {exc}"
                log.warning("telegram.network_error", chat_id=str(chat_id), error=last_error, attempt=attempt)
                if attempt < self._max_attempts:
                    await self._sleep(self._backoff * 2 ** (attempt - 1))
            except TelegramError as exc:  # Forbidden, InvalidToken, ChatMigrated...: retrying will not help
                raise NotificationFailed(f"{type(exc).__name__}: {exc}", chat_id=str(chat_id)) from exc
        raise NotificationFailed(f"gave up after {self._max_attempts} attempts: {last_error}", chat_id=str(chat_id))

    async def _record_failure(self, event: NotificationEvent, chat_id: str, exc: NotificationFailed) -> None:
        self.failed += 1
        error = redactor.scrub_text(str(exc))
        log.error("telegram.delivery_failed", kind=str(event.kind), chat_id=chat_id, error=error)
        if self._system_logs is None:
            return
        context = {"kind": str(event.kind), "title": event.title, "chat_id": chat_id, "error": error}
        try:
            await self._system_logs.log("error", "telegram delivery failed", source="notification", context=context)
        except Exception as log_exc:
            log.error("telegram.failure_not_recorded", error=str(log_exc))
