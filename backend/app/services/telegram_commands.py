"""Telegram commands through python-telegram-bot's ``Application``: the allowed chats only, every reply in
``NOTIFY_LANGUAGE``.

At start the bot registers its command menu (``setMyCommands``), then long-polls ``getUpdates`` for
messages and callback queries. A gate (handler group -1) drops every update from a chat not in
``TELEGRAM_CHAT_IDS``: no answer, a warning in the log and a row in ``system_logs``.

Read commands (``/status``, ``/balance``, ``/positions``, ``/trades``, ``/profit``, ``/report``) read the
database through the same queries as the API; ``/positions`` adds the current price (the exchange's
ticker, else the latest portfolio snapshot) and the unrealised P&L. Control commands (``/pause``,
``/resume``, ``/stop``, ``/start``, ``/reset_safe_mode``) first ask for a confirmation (inline buttons);
only the confirm button acts, through the API's own service functions (``BotRepository.request_state`` and
``request_safe_mode_reset``: ``bot_config`` plus an audit row in ``system_logs``). The scheduler obeys
them under its own lock, so nothing here touches trading directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from backend.app.db.queries.bot_status import bot_status
from backend.app.db.queries.paging import Paging
from backend.app.db.queries.portfolio import latest_snapshot
from backend.app.db.queries.positions import SqlTradeDetails
from backend.app.db.queries.statistics import trade_statistics
from backend.app.db.queries.trades import TradeFilter, list_trades
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.services.notification import NotificationService, format_event
from backend.app.services.reporting import build_daily_report
from backend.app.services.telegram_messages import (
    as_decimal,
    coin_amount,
    duration,
    free_text,
    krw,
    kst,
    percent,
    phrase,
    price,
)
from src.api.interfaces import IExchangeClient
from src.config.settings import Settings
from src.config.system_groups import NotifyLanguage
from src.domain.bot import BotAction, DesiredState
from src.domain.modes import TradingMode
from src.exceptions import NotificationFailed
from src.utils.logger import get_logger

log = get_logger(__name__)

RECENT_TRADES = 10
CONFIRM_TTL_SECONDS = 300
ALLOWED_UPDATES = ("message", "callback_query")
PriceSource = Callable[[list[str]], Awaitable[dict[str, Decimal]]]


class Control(StrEnum):
    """The operator commands that change what the bot does; each needs a confirmation."""

    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    START = "start"
    RESET_SAFE_MODE = "reset_safe_mode"

    @property
    def bot_action(self) -> BotAction | None:
        return None if self is Control.RESET_SAFE_MODE else BotAction(self.value)


READ_COMMANDS = ("status", "balance", "positions", "trades", "profit", "report")
MENU = (*READ_COMMANDS, *(control.value for control in Control), "help")


@dataclass(frozen=True, slots=True)
class CommandContext:
    mode: TradingMode
    instance_name: str
    heartbeat_stale_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CommandContext:
        return cls(settings.trading.mode, settings.scheduler.instance_name, settings.scheduler.heartbeat_stale_seconds)


@dataclass(frozen=True, slots=True)
class PendingControl:
    """A control command waiting for its confirm or cancel button."""

    control: Control
    reason: str
    chat_id: str
    expires_at: float  # time.monotonic()


def _line(label: str, value: object) -> str:
    return f"<b>{html.escape(label)}</b>: {html.escape(str(value))}"


def menu_commands(language: NotifyLanguage) -> list[BotCommand]:
    """The command menu as ``setMyCommands`` registers it."""
    return [BotCommand(name, phrase(f"menu.{name}", language)) for name in MENU]


def help_text(language: NotifyLanguage) -> str:
    lines = [f"<b>{html.escape(phrase('help.title', language))}</b>"]
    lines += [f"/{name}: {html.escape(phrase(f'menu.{name}', language))}" for name in MENU]
    lines.append(html.escape(phrase("help.reason", language)))
    return "\n".join(lines)


class TelegramCommands:
    """Answer commands from ``allowed_chat_ids`` through a PTB ``Application``.

    ``start()`` initialises it (getMe), registers the menu and starts polling in the background;
    ``aclose()`` stops it. Tests may ``initialize()`` and drive ``poll_once()`` instead of polling.
    """

    def __init__(
        self,
        sender: NotificationService,
        sessions: async_sessionmaker[AsyncSession],
        context: CommandContext,
        allowed_chat_ids: Sequence[str],
        *,
        prices: PriceSource | None = None,
        poll_timeout_seconds: int = 20,
        error_backoff_seconds: float = 5.0,
        confirm_ttl_seconds: float = CONFIRM_TTL_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sender = sender
        self._sessions = sessions
        self._context = context
        self._allowed = {str(chat_id) for chat_id in allowed_chat_ids}
        self.prices = prices
        self._poll_timeout = poll_timeout_seconds
        self._backoff = error_backoff_seconds
        self._confirm_ttl = confirm_ttl_seconds
        self._clock = clock
        self._sleep = sleep
        self._bot_repository = BotRepository(sessions, context.mode)
        self._pending: dict[str, PendingControl] = {}
        self._offset: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._initialized = False
        self._polling = False
        self.app = self._build_application()
        self.handled = 0
        self.ignored = 0

    @property
    def language(self) -> NotifyLanguage:
        return self._sender.language

    def _build_application(self) -> Application[Any, Any, Any, Any, Any, Any]:
        config = self._sender.config
        if not config.bot_token:
            raise RuntimeError("Telegram is not configured: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_IDS")
        app = (
            ApplicationBuilder()
            .token(config.bot_token.get_secret_value())
            .base_url(config.base_url)
            .request(HTTPXRequest(connection_pool_size=4, read_timeout=15.0, connect_timeout=5.0))
            .get_updates_request(
                HTTPXRequest(connection_pool_size=1, read_timeout=self._poll_timeout + 10.0, connect_timeout=5.0)
            )
            .job_queue(None)
            .build()
        )
        app.add_handler(TypeHandler(Update, self._gate), group=-1)
        app.add_handler(CommandHandler(list(READ_COMMANDS), self._on_read))
        app.add_handler(CommandHandler([control.value for control in Control], self._on_control))
        app.add_handler(CallbackQueryHandler(self._on_button, pattern=r"^(ok|no):"))
        app.add_handler(MessageHandler(filters.ALL, self._on_other))
        app.add_error_handler(self._on_error)
        return app

    # --- lifecycle --------------------------------------------------------------------------------------
    async def initialize(self) -> None:
        """getMe (PTB needs the bot's name to match ``/cmd@bot``), then the command menu (setMyCommands).
        A menu Telegram refuses is logged; the commands still work when typed."""
        if not self._initialized:
            await self.app.initialize()
            self._initialized = True
        try:
            await self.app.bot.set_my_commands(menu_commands(self.language))
        except InvalidToken:
            raise
        except TelegramError as exc:
            log.warning("telegram.menu_not_registered", error=f"{type(exc).__name__}: {exc}")

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="telegram-commands")

    async def _run(self) -> None:
        """Initialise (retrying while Telegram is unreachable), then poll in PTB's Updater until ``aclose``."""
        while True:
            try:
                await self.initialize()
                break
            except InvalidToken:  # PTB's message holds the token: say it without the message
                log.error("telegram.commands_stopped", reason="the bot token was rejected")
                return
            except (TelegramError, OSError) as exc:
                log.warning("telegram.commands_init_failed", error=f"{type(exc).__name__}: {exc}")
                await self._sleep(self._backoff)
        try:
            await self.app.start()
            assert self.app.updater is not None
            await self.app.updater.start_polling(
                timeout=self._poll_timeout, allowed_updates=list(ALLOWED_UPDATES), error_callback=self._poll_error
            )
        except InvalidToken:
            log.error("telegram.commands_stopped", reason="the bot token was rejected")
            return
        except (TelegramError, OSError) as exc:  # alerts keep going; the commands are off until a restart
            log.error("telegram.commands_stopped", error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._polling = bool(self.app.running)
        log.info("telegram.commands_started", allowed_chats=len(self._allowed), language=self.language.value)

    @staticmethod
    def _poll_error(exc: TelegramError) -> None:
        log.warning("telegram.poll_failed", error=f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        if self._task is not None:
            if not self._task.done():
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._polling:
            assert self.app.updater is not None
            with contextlib.suppress(Exception):
                await self.app.updater.stop()
            with contextlib.suppress(Exception):
                await self.app.stop()
            self._polling = False
        if self._initialized:
            with contextlib.suppress(Exception):
                await self.app.shutdown()
            self._initialized = False

    async def poll_once(self) -> int:
        """One ``getUpdates`` (no wait) and each update through the Application; returns how many arrived."""
        updates = await self.app.bot.get_updates(offset=self._offset, timeout=0, allowed_updates=list(ALLOWED_UPDATES))
        for update in updates:
            self._offset = update.update_id + 1
            await self.app.process_update(update)
        return len(updates)

    # --- the allowlist -------------------------------------------------------------------------------------
    async def _gate(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        chat_id = None if chat is None else str(chat.id)
        if chat_id in self._allowed:
            return
        self.ignored += 1
        message = update.effective_message
        what = (
            f"button {update.callback_query.data}"[:32]
            if update.callback_query is not None
            else ((message.text or "").split(maxsplit=1) or [""])[0][:32]
            if message is not None
            else ""
        )
        log.warning("telegram.command_ignored", chat_id=chat_id, command=what)
        try:
            await self._bot_repository.log(
                "warning",
                "telegram message from a chat that is not allowed was ignored",
                source="telegram",
                context={"chat_id": chat_id, "command": what},
            )
        except Exception as exc:  # the database may be restarting; the log line above stays
            log.error("telegram.ignored_not_recorded", error=str(exc))
        raise ApplicationHandlerStop

    # --- handlers ------------------------------------------------------------------------------------------
    async def _reply(self, update: Update, text: str) -> None:
        chat = update.effective_chat
        if chat is None:
            return
        self.handled += 1
        try:
            await self._sender.send(chat.id, text)
        except NotificationFailed as exc:
            log.error("telegram.reply_failed", chat_id=str(chat.id), error=str(exc))

    async def _on_read(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        command = message.text.split(maxsplit=1)[0].split("@", 1)[0].lstrip("/").lower()
        await self._reply(update, await self.answer(command))

    async def _on_other(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is not None and update.effective_message.text:
            await self._reply(update, help_text(self.language))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        log.error("telegram.handler_failed", error=f"{type(error).__name__}: {error}")

    async def answer(self, command: str) -> str:
        """The HTML reply to one read command (``status``, ``balance``...) from an allowed chat."""
        handlers: dict[str, Callable[[], Awaitable[str]]] = {
            "status": self._status,
            "balance": self._balance,
            "positions": self._positions,
            "trades": self._trades,
            "profit": self._profit,
            "report": self._report,
        }
        handler = handlers.get(command)
        if handler is None:
            return help_text(self.language)
        try:
            return await handler()
        except Exception as exc:  # the database may be restarting; say so instead of staying silent
            log.error("telegram.command_failed", command=command, error=f"{type(exc).__name__}: {exc}")
            return "⚠️ " + html.escape(phrase("failed", self.language, command=f"/{command}", error=type(exc).__name__))

    # --- control: ask, then act on the confirm button ---------------------------------------------------------
    async def _on_control(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, chat = update.effective_message, update.effective_chat
        if message is None or chat is None or not message.text:
            return
        command = message.text.split(maxsplit=1)[0].split("@", 1)[0].lstrip("/").lower()
        control = Control(command)
        reason = " ".join(context.args or []).strip()
        self._forget_expired()
        token = secrets.token_hex(6)
        self._pending[token] = PendingControl(control, reason, str(chat.id), time.monotonic() + self._confirm_ttl)
        lang = self.language
        lines = [f"❓ <b>{html.escape(phrase(f'confirm.{control.value}', lang))}</b>"]
        if reason:
            lines.append(_line(phrase("reason", lang), reason[:300]))
        keyboard = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(phrase("button.confirm", lang), callback_data=f"ok:{token}"),
                    InlineKeyboardButton(phrase("button.cancel", lang), callback_data=f"no:{token}"),
                ]
            ]
        )
        self.handled += 1
        try:
            await self.app.bot.send_message(
                chat_id=chat.id, text="\n".join(lines), parse_mode=ParseMode.HTML, reply_markup=keyboard
            )
        except TelegramError as exc:
            self._pending.pop(token, None)
            log.error("telegram.reply_failed", chat_id=str(chat.id), command=command, error=str(exc))
        log.info("telegram.control_asked", control=control.value, chat_id=str(chat.id))

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for token in [token for token, pending in self._pending.items() if pending.expires_at < now]:
            del self._pending[token]

    async def _on_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        query, chat = update.callback_query, update.effective_chat
        if query is None or chat is None or not query.data:
            return
        lang = self.language
        verb, _sep, token = query.data.partition(":")
        self._forget_expired()
        pending = self._pending.get(token)
        if pending is None or pending.chat_id != str(chat.id):
            await query.answer(phrase("toast.expired", lang))
            await self._edit(query, f"⌛ {html.escape(phrase('expired', lang))}")
            return
        del self._pending[token]
        if verb == "no":
            log.info("telegram.control_cancelled", control=pending.control.value, chat_id=pending.chat_id)
            await query.answer(phrase("toast.cancelled", lang))
            await self._edit(query, f"✖ {html.escape(phrase('cancelled', lang))}")
            return
        try:
            text = await self._apply(pending)
        except Exception as exc:  # the database may be restarting: say so; the operator can ask again
            log.error("telegram.control_failed", control=pending.control.value, error=f"{type(exc).__name__}: {exc}")
            failed = phrase("failed", lang, command=f"/{pending.control.value}", error=type(exc).__name__)
            await query.answer(failed[:200])
            await self._edit(query, "⚠️ " + html.escape(failed))
            return
        await query.answer(phrase("toast.confirmed", lang))
        await self._edit(query, text)

    async def _edit(self, query: Any, text: str) -> None:
        """Replace the question (and its buttons) with the outcome."""
        try:
            await query.edit_message_text(text, parse_mode=ParseMode.HTML)
        except TelegramError as exc:
            log.warning("telegram.edit_failed", error=str(exc))

    async def _apply(self, pending: PendingControl) -> str:
        """The confirmed control, through the same service functions as ``/api/v1/bot/control`` and
        ``/api/v1/bot/safe-mode/reset`` (each writes ``bot_config`` and its audit row)."""
        lang = self.language
        who = f"telegram:{pending.chat_id}"
        reason = pending.reason or "no reason given"
        action = pending.control.bot_action
        if action is None:
            await self._bot_repository.request_safe_mode_reset(by=who, reason=reason)
            log.warning("bot.safe_mode_reset_requested", by=who)
            head = phrase("done.reset_safe_mode", lang)
        else:
            desired = await self._bot_repository.request_state(action, by=who, reason=reason)
            log.info("bot.control", action=str(action), desired_state=str(desired), by=who)
            head = phrase("done.state", lang, state=_state(desired, lang))
        lines = [f"✅ <b>{html.escape(head)}</b>", _line(phrase("done.by", lang), who)]
        if pending.reason:
            lines.append(_line(phrase("reason", lang), pending.reason[:300]))
        lines.append(html.escape(phrase("done.applied", lang)))
        return "\n".join(lines)

    # --- reads ------------------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A read connection for the API's query functions (``backend/app/db/queries/``)."""
        async with self._sessions() as session:
            yield await session.connection()

    async def _status(self) -> str:
        ctx, lang = self._context, self.language
        async with self._read() as connection:
            status = await bot_status(connection, ctx.instance_name, ctx.mode)
        lines = [
            f"🤖 <b>{html.escape(phrase('status.title', lang))}</b>",
            _line(phrase("status.desired", lang), _state(status.desired_state, lang)),
            _line(phrase("status.mode", lang), phrase(f"mode.{ctx.mode.value}", lang)),
        ]
        heartbeat = status.heartbeat
        if heartbeat is None:
            lines.append(_line(phrase("status.scheduler", lang), phrase("status.never_seen", lang)))
        else:
            age_seconds = (self._clock() - heartbeat.heartbeat_at).total_seconds()
            age = _age(age_seconds, lang)
            stale = age_seconds > ctx.heartbeat_stale_seconds
            lines += [
                _line(phrase("status.scheduler", lang), _state(heartbeat.state, lang)),
                _line(
                    phrase("status.heartbeat", lang), phrase("status.stale" if stale else "status.ago", lang, age=age)
                ),
                _line(phrase("status.last_run", lang), kst(heartbeat.last_run_at)),
                _line(phrase("status.next_run", lang), kst(heartbeat.next_run_at)),
            ]
            if heartbeat.last_error:
                lines.append(_line(phrase("status.last_error", lang), free_text(heartbeat.last_error, 300)))
        risk = status.risk
        safe_mode = (
            phrase("status.safe_mode_on", lang, reason=free_text(risk.reason, 300))
            if risk is not None and risk.active
            else phrase("status.safe_mode_off", lang)
        )
        lines.append(_line(phrase("status.safe_mode", lang), safe_mode))
        return "\n".join(lines)

    async def _balance(self) -> str:
        lang = self.language
        async with self._read() as connection:
            snapshot = await latest_snapshot(connection, self._context.mode)
        if snapshot is None:
            return "💰 " + html.escape(phrase("balance.none", lang))
        mode = phrase(f"mode.{self._context.mode.value}", lang)
        return "\n".join(
            [
                f"💰 <b>{html.escape(phrase('balance.title', lang))}</b> [{html.escape(mode)}]",
                _line(phrase("equity", lang), krw(snapshot.total_value_krw, lang)),
                _line(phrase("balance.cash", lang), krw(snapshot.cash_krw, lang)),
                _line(phrase("profit_rate", lang), percent(snapshot.profit_rate, signed=True, fraction=True)),
                _line(phrase("as_of", lang), kst(snapshot.created_at)),
            ]
        )

    async def _current_prices(self, symbols: list[str]) -> tuple[dict[str, Decimal], datetime | None]:
        """Live prices from the exchange's ticker; else the latest snapshot's (with the time it was taken)."""
        if self.prices is not None:
            try:
                live = await self.prices(symbols)
                if all(symbol in live for symbol in symbols):
                    return live, None
            except Exception as exc:  # fall back to the snapshot
                log.warning("telegram.prices_failed", error=f"{type(exc).__name__}: {exc}")
        async with self._read() as connection:
            snapshot = await latest_snapshot(connection, self._context.mode)
        if snapshot is None or not snapshot.positions:
            return {}, None
        found: dict[str, Decimal] = {}
        for symbol, holding in dict(snapshot.positions).items():
            value = as_decimal(holding.get("price")) if isinstance(holding, dict) else None
            if value is not None:
                found[symbol] = value
        return found, snapshot.created_at

    async def _positions(self) -> str:
        lang = self.language
        positions = await SqlRiskStore(self._sessions).list_open_positions(self._context.mode)
        if not positions:
            return "📭 " + html.escape(phrase("positions.none", lang))
        prices, snapshot_at = await self._current_prices([position.symbol for position in positions])
        now = self._clock()
        lines = [f"📈 <b>{html.escape(phrase('positions.title', lang, count=len(positions)))}</b>"]
        for position in positions:
            lines.append("")
            lines.append(
                f"<b>{html.escape(position.symbol)}</b> {html.escape(coin_amount(position.amount, position.symbol))}"
            )
            lines.append(_line(phrase("entry_price", lang), price(position.avg_entry_price, lang)))
            current = prices.get(position.symbol)
            if current is None:
                lines.append(_line(phrase("positions.current", lang), phrase("positions.unknown", lang)))
            else:
                shown = price(current, lang)
                if snapshot_at is not None:
                    shown = phrase("positions.current_at", lang, price=shown, at=kst(snapshot_at))
                lines.append(_line(phrase("positions.current", lang), shown))
                cost = position.avg_entry_price * position.amount + position.entry_fee
                pnl = current * position.amount - cost
                pct = "" if cost <= 0 else f" ({percent(pnl / cost * 100, signed=True)})"
                lines.append(_line(phrase("positions.unrealised", lang), krw(pnl, lang, signed=True) + pct))
            if position.stop_price is not None:
                lines.append(_line(phrase("positions.stop", lang), price(position.stop_price, lang)))
            if position.take_profit_price is not None:
                lines.append(_line(phrase("positions.target", lang), price(position.take_profit_price, lang)))
            held = (now - position.entry_at).total_seconds()
            lines.append(_line(phrase("held", lang), duration(held, lang)))
        return "\n".join(lines)

    async def _trades(self) -> str:
        lang = self.language
        filters_ = TradeFilter(mode=self._context.mode)
        async with self._read() as connection:
            page = await list_trades(connection, filters_, Paging(limit=RECENT_TRADES))
        if not page.rows:
            return "🧾 " + html.escape(phrase("trades.none", lang))
        lines = [f"🧾 <b>{html.escape(phrase('trades.title', lang, count=len(page.rows)))}</b>"]
        for trade in page.rows:
            head = phrase(
                "trades.line",
                lang,
                at=kst(trade.created_at),
                side=phrase(f"trades.{trade.side.value}", lang),
                symbol=trade.symbol,
                amount=coin_amount(trade.amount, trade.symbol),
                price=price(trade.price, lang, trade.created_at),
            )
            fee = krw(trade.fee, lang)
            tail = (
                phrase("trades.fee", lang, fee=fee)
                if trade.realized_pnl is None
                else phrase("trades.fee_pnl", lang, fee=fee, pnl=krw(trade.realized_pnl, lang, signed=True))
            )
            lines.append(html.escape(f"{head} ({tail})"))
        return "\n".join(lines)

    async def _profit(self) -> str:
        lang = self.language
        now = self._clock()
        mode = self._context.mode
        periods = {"profit.24h": now - timedelta(days=1), "profit.7d": now - timedelta(days=7), "profit.all": None}
        title = f"{phrase('profit.title', lang)} [{phrase(f'mode.{mode.value}', lang)}]"
        lines = [f"📊 <b>{html.escape(title)}</b>"]
        async with self._read() as connection:
            for key, since in periods.items():
                stats = await trade_statistics(connection, TradeFilter(mode=mode, from_date=since), "day")
                tally = stats.overall
                win = "-" if tally.win_rate_pct is None else percent(tally.win_rate_pct)
                text = phrase(
                    "profit.line",
                    lang,
                    pnl=krw(tally.realized_pnl_krw, lang, signed=True),
                    fee=krw(tally.fee_krw, lang),
                    count=tally.trade_count,
                    win=win,
                )
                lines.append(_line(phrase(key, lang), text))
            snapshot = await latest_snapshot(connection, mode)
        if snapshot is not None:
            equity = (
                f"{krw(snapshot.total_value_krw, lang)} ({percent(snapshot.profit_rate, signed=True, fraction=True)})"
            )
            lines.append(_line(phrase("equity", lang), equity))
        return "\n".join(lines)

    async def _report(self) -> str:
        report = await build_daily_report(self._sessions, self._context.mode, self._clock())
        return format_event(report.to_event(), self.language)


def _state(state: DesiredState | str, language: NotifyLanguage) -> str:
    key = f"state.{getattr(state, 'value', state)}"
    return phrase(key, language) if key in _STATE_KEYS else str(state)


_STATE_KEYS = frozenset({"state.running", "state.paused", "state.stopped", "state.starting"})


def _age(seconds: float, language: NotifyLanguage) -> str:
    """A heartbeat's age: seconds under two minutes, then minutes and hours."""
    whole = max(0, int(seconds))
    if whole < 120:
        return f"{whole}초" if language is NotifyLanguage.KO else f"{whole} s"
    return duration(whole, language)


def ticker_prices(exchange: IExchangeClient) -> PriceSource:
    """``/positions``' live prices: the exchange's ticker (Upbit's, or the paper exchange's market data)."""

    async def prices(symbols: list[str]) -> dict[str, Decimal]:
        return {ticker.symbol: ticker.trade_price for ticker in await exchange.get_tickers(symbols)}

    return prices


@dataclass(slots=True)
class TelegramRuntime:
    """What a process holds while Telegram runs: the notifier to pass to the engine, and the commands."""

    notifier: NotificationService
    commands: TelegramCommands | None

    async def aclose(self) -> None:
        if self.commands is not None:
            await self.commands.aclose()
        await self.notifier.aclose()


async def start_telegram(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], *, prices: PriceSource | None = None
) -> TelegramRuntime:
    """Start the sender (and the commands when TELEGRAM_COMMANDS_ENABLED); a no-op without a token.

    Failed deliveries are recorded in ``system_logs``. Run the commands in one process only (the scheduler):
    Telegram allows a single getUpdates consumer per token. ``prices`` gives ``/positions`` live prices
    (``runtime.commands.prices`` may also be set once the exchange exists).
    """
    notifier = NotificationService(settings.telegram, BotRepository(sessions), trade_details=SqlTradeDetails(sessions))
    await notifier.start()
    commands = None
    if settings.telegram.enabled and settings.telegram.commands_enabled:
        commands = TelegramCommands(
            notifier,
            sessions,
            CommandContext.from_settings(settings),
            list(settings.telegram.chat_ids),
            prices=prices,
        )
        await commands.start()
    return TelegramRuntime(notifier, commands)
