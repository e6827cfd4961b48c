"""Telegram commands: a getUpdates polling loop that answers the allowed chats only.

Read commands (``/status``, ``/balance``, ``/positions``, ``/trades``, ``/profit``, ``/report``) read the
database through the same queries as the API. Control commands (``/pause``, ``/resume``, ``/stop``,
``/start``) write the desired state exactly as ``POST /api/v1/bot/control`` does (``bot_config`` plus an
audit row); the scheduler obeys it under its own lock, so nothing here touches trading directly. Messages
from any other chat are ignored (no answer) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from telegram import Update
from telegram.error import Conflict, InvalidToken, NetworkError, TelegramError

from backend.app.db.queries.bot_status import bot_status
from backend.app.db.queries.paging import Paging
from backend.app.db.queries.portfolio import latest_snapshot
from backend.app.db.queries.statistics import trade_statistics
from backend.app.db.queries.trades import TradeFilter, list_trades
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.services.notification import NotificationService, format_event
from backend.app.services.reporting import build_daily_report
from src.config.settings import Settings
from src.domain.bot import BotAction
from src.domain.modes import TradingMode
from src.domain.money import format_krw
from src.exceptions import NotificationFailed
from src.utils.logger import get_logger

log = get_logger(__name__)

KST = timedelta(hours=9)
RECENT_TRADES = 10
HELP = (
    "<b>Commands</b>\n"
    "/status: bot state, heartbeat, safe mode\n"
    "/balance: equity and cash\n"
    "/positions: open positions\n"
    "/trades: the last 10 trades\n"
    "/profit: realised P&amp;L and fees\n"
    "/report: the daily report now\n"
    "/pause, /resume, /stop, /start: control the bot"
)
_CONTROL = {"/pause": BotAction.PAUSE, "/resume": BotAction.RESUME, "/stop": BotAction.STOP, "/start": BotAction.START}


@dataclass(frozen=True, slots=True)
class CommandContext:
    mode: TradingMode
    instance_name: str
    heartbeat_stale_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CommandContext:
        return cls(settings.trading.mode, settings.scheduler.instance_name, settings.scheduler.heartbeat_stale_seconds)


def _kst(moment: datetime | None) -> str:
    return "-" if moment is None else (moment.astimezone(UTC) + KST).strftime("%Y-%m-%d %H:%M KST")


def _line(label: str, value: object) -> str:
    return f"<b>{html.escape(label)}</b>: {html.escape(str(value))}"


def _qty(amount: Decimal) -> str:
    return format(amount.normalize(), "f")


def _pct(fraction: Decimal | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.2f} %"


class TelegramCommands:
    """Answer commands from ``config.chat_ids``; ``start()`` runs the poller, ``aclose()`` stops it."""

    def __init__(
        self,
        sender: NotificationService,
        sessions: async_sessionmaker[AsyncSession],
        context: CommandContext,
        allowed_chat_ids: list[str],
        *,
        poll_timeout_seconds: int = 20,
        error_backoff_seconds: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sender = sender
        self._sessions = sessions
        self._context = context
        self._allowed = {str(chat_id) for chat_id in allowed_chat_ids}
        self._poll_timeout = poll_timeout_seconds
        self._backoff = error_backoff_seconds
        self._clock = clock
        self._sleep = sleep
        self._bot_repository = BotRepository(sessions)
        self._offset: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.handled = 0
        self.ignored = 0

    # --- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="telegram-commands")
            log.info("telegram.commands_started", allowed_chats=len(self._allowed))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except InvalidToken:
                log.error("telegram.commands_stopped", reason="the bot token was rejected")
                return
            except Conflict as exc:  # another process polls with the same token
                log.warning("telegram.poll_conflict", error=str(exc))
                await self._sleep(self._backoff)
            except (NetworkError, TelegramError) as exc:
                log.warning("telegram.poll_failed", error=f"{type(exc).__name__}: {exc}")
                await self._sleep(self._backoff)
            except Exception as exc:  # one bad update must not end the poller
                log.error("telegram.command_loop_error", error=f"{type(exc).__name__}: {exc}")
                await self._sleep(self._backoff)

    async def poll_once(self) -> int:
        """Fetch one batch of updates (long poll) and handle each; returns how many arrived."""
        updates = await self._sender.bot.get_updates(
            offset=self._offset, timeout=self._poll_timeout, allowed_updates=["message"]
        )
        for update in updates:
            self._offset = update.update_id + 1
            await self.handle(update)
        return len(updates)

    # --- dispatch ---------------------------------------------------------------------------------------
    async def handle(self, update: Update) -> None:
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None or not message.text:
            return
        chat_id = str(chat.id)
        command, *args = message.text.split()
        command = command.split("@", 1)[0].lower()
        if chat_id not in self._allowed:
            self.ignored += 1
            log.warning("telegram.command_ignored", chat_id=chat_id, command=command[:32])
            await self._bot_repository.log(
                "warning",
                "telegram message from a chat that is not allowed was ignored",
                source="telegram",
                context={"chat_id": chat_id, "command": command[:32]},
            )
            return
        reply = await self.answer(chat_id, command, args)
        self.handled += 1
        try:
            await self._sender.send(chat_id, reply)
        except NotificationFailed as exc:
            log.error("telegram.reply_failed", chat_id=chat_id, command=command, error=str(exc))

    async def answer(self, chat_id: str, command: str, args: list[str]) -> str:
        """The HTML reply to one command from an allowed chat."""
        if command in _CONTROL:
            return await self._control(chat_id, _CONTROL[command], " ".join(args))
        handlers: dict[str, Callable[[], Awaitable[str]]] = {
            "/status": self._status,
            "/balance": self._balance,
            "/positions": self._positions,
            "/trades": self._trades,
            "/profit": self._profit,
            "/report": self._report,
        }
        handler = handlers.get(command)
        if handler is None:
            return HELP
        try:
            return await handler()
        except Exception as exc:  # the database may be restarting; say so instead of staying silent
            log.error("telegram.command_failed", command=command, error=f"{type(exc).__name__}: {exc}")
            return f"⚠️ {html.escape(command)} failed: {html.escape(type(exc).__name__)}"

    # --- control ----------------------------------------------------------------------------------------
    async def _control(self, chat_id: str, action: BotAction, reason: str) -> str:
        who = f"telegram:{chat_id}"
        desired = await self._bot_repository.request_state(action, by=who, reason=reason or "no reason given")
        log.info("bot.control", action=str(action), desired_state=str(desired), by=who)
        return "\n".join(
            [
                f"✅ <b>{html.escape(action.value.capitalize())}</b> requested",
                _line("Desired state", desired.value),
                "The scheduler applies it before its next job (within SCHEDULER_CONTROL_POLL_SECONDS).",
            ]
        )

    # --- reads ----------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A read connection for the API's query functions (``backend/app/db/queries/``)."""
        async with self._sessions() as session:
            yield await session.connection()

    # --- reads (commands) ------------------------------------------------------------------------------------------
    async def _status(self) -> str:
        ctx = self._context
        async with self._read() as connection:
            status = await bot_status(connection, ctx.instance_name, ctx.mode)
        lines = ["🤖 <b>Bot status</b>", _line("Desired state", status.desired_state.value), _line("Mode", ctx.mode)]
        heartbeat = status.heartbeat
        if heartbeat is None:
            lines.append(_line("Scheduler", "never seen"))
        else:
            age = (self._clock() - heartbeat.heartbeat_at).total_seconds()
            stale = " (stale)" if age > ctx.heartbeat_stale_seconds else ""
            lines += [
                _line("Scheduler state", heartbeat.state),
                _line("Heartbeat", f"{int(age)} s ago{stale}"),
                _line("Last run", _kst(heartbeat.last_run_at)),
                _line("Next run", _kst(heartbeat.next_run_at)),
            ]
            if heartbeat.last_error:
                lines.append(_line("Last error", heartbeat.last_error[:300]))
        safe_mode = status.risk
        active = safe_mode is not None and safe_mode.active
        lines.append(_line("Safe mode", f"ON: {safe_mode.reason}" if active and safe_mode else "off"))
        return "\n".join(lines)

    async def _balance(self) -> str:
        async with self._read() as connection:
            snapshot = await latest_snapshot(connection, self._context.mode)
        if snapshot is None:
            return "💰 No portfolio snapshot yet."
        return "\n".join(
            [
                f"💰 <b>Balance</b> ({html.escape(str(self._context.mode))})",
                _line("Equity", f"{format_krw(snapshot.total_value_krw)} KRW"),
                _line("Cash", f"{format_krw(snapshot.cash_krw)} KRW"),
                _line("Profit rate", _pct(snapshot.profit_rate)),
                _line("As of", _kst(snapshot.created_at)),
            ]
        )

    async def _positions(self) -> str:
        positions = await SqlRiskStore(self._sessions).list_open_positions(self._context.mode)
        if not positions:
            return "📭 No open positions."
        lines = [f"📈 <b>Open positions</b> ({len(positions)})"]
        for position in positions:
            stop = "-" if position.stop_price is None else format_krw(position.stop_price)
            target = "-" if position.take_profit_price is None else format_krw(position.take_profit_price)
            lines.append(
                html.escape(
                    f"{position.symbol}: {_qty(position.amount)} @ {format_krw(position.avg_entry_price)} "
                    f"(stop {stop}, target {target}, since {_kst(position.entry_at)})"
                )
            )
        return "\n".join(lines)

    async def _trades(self) -> str:
        filters = TradeFilter(mode=self._context.mode)
        async with self._read() as connection:
            page = await list_trades(connection, filters, Paging(limit=RECENT_TRADES))
        if not page.rows:
            return "🧾 No trades yet."
        lines = [f"🧾 <b>Last {len(page.rows)} trades</b>"]
        for trade in page.rows:
            pnl = "" if trade.realized_pnl is None else f", P&L {format_krw(trade.realized_pnl)}"
            lines.append(
                html.escape(
                    f"{_kst(trade.created_at)} {trade.side.value.upper()} {trade.symbol} {_qty(trade.amount)} "
                    f"@ {format_krw(trade.price)} (fee {format_krw(trade.fee)}{pnl})"
                )
            )
        return "\n".join(lines)

    async def _profit(self) -> str:
        now = self._clock()
        mode = self._context.mode
        periods = {"24 h": now - timedelta(days=1), "7 days": now - timedelta(days=7), "all time": None}
        lines = [f"📊 <b>Profit</b> ({html.escape(str(mode))})"]
        async with self._read() as connection:
            for label, since in periods.items():
                stats = await trade_statistics(connection, TradeFilter(mode=mode, from_date=since), "day")
                tally = stats.overall
                win = "-" if tally.win_rate_pct is None else f"{tally.win_rate_pct} %"
                lines.append(
                    _line(
                        label,
                        f"P&L {format_krw(tally.realized_pnl_krw)} KRW, fees {format_krw(tally.fee_krw)} KRW, "
                        f"{tally.trade_count} trades, win rate {win}",
                    )
                )
            snapshot = await latest_snapshot(connection, mode)
        if snapshot is not None:
            lines.append(_line("Equity", f"{format_krw(snapshot.total_value_krw)} KRW ({_pct(snapshot.profit_rate)})"))
        return "\n".join(lines)

    async def _report(self) -> str:
        report = await build_daily_report(self._sessions, self._context.mode, self._clock())
        return format_event(report.to_event())


@dataclass(slots=True)
class TelegramRuntime:
    """What a process holds while Telegram runs: the notifier to pass to the engine, and the command poller."""

    notifier: NotificationService
    commands: TelegramCommands | None

    async def aclose(self) -> None:
        if self.commands is not None:
            await self.commands.aclose()
        await self.notifier.aclose()


async def start_telegram(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> TelegramRuntime:
    """Start the sender (and the command poller when TELEGRAM_COMMANDS_ENABLED); a no-op without a token.

    Failed deliveries are recorded in ``system_logs``. Run the poller in one process only (the scheduler):
    Telegram allows a single getUpdates consumer per token.
    """
    notifier = NotificationService(settings.telegram, BotRepository(sessions))
    await notifier.start()
    commands = None
    if settings.telegram.enabled and settings.telegram.commands_enabled:
        commands = TelegramCommands(
            notifier, sessions, CommandContext.from_settings(settings), list(settings.telegram.chat_ids)
        )
        await commands.start()
    return TelegramRuntime(notifier, commands)
