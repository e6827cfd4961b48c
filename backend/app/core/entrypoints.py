"""What ``main.py`` and ``scheduler_main.py`` run once their arguments are parsed."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from backend.app.core.observability import close_sentry, init_sentry
from backend.app.core.replay import ReplayOptions, ReplaySummary, run_replay, summary_table_rows
from backend.app.core.runtime_settings import SettingsApplier
from backend.app.core.scheduler import EXIT_LOCK_HELD, TradingScheduler, lock_name
from backend.app.db.lock import SchedulerLock
from backend.app.db.migrations import ensure_schema_current
from backend.app.db.queries.paging import checked_time
from backend.app.db.queries.positions import SqlTradeDetails
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.session import engine_from_config, session_factory
from backend.app.services.notification import NotificationService
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.telegram_commands import TelegramRuntime, start_telegram, ticker_prices
from backend.app.services.trading_engine import TradingEngine
from src.config.settings import Settings
from src.config.system_groups import DatabaseConfig
from src.config.trading_groups import TradingConfig
from src.domain.modes import TradingMode
from src.exceptions import (
    ConfigurationError,
    DatabaseNotMigratedError,
    DatabaseUnavailable,
    SchedulerLockHeld,
    SchedulerLockLost,
    TradingSystemError,
)
from src.trading.pipeline import CycleReport
from src.utils.logger import configure_logging, get_logger, redactor

log = get_logger(__name__)

EXIT_ERROR = 1
EXIT_USAGE = 2


def parse_symbols(raw: str | None, settings: Settings) -> list[str]:
    """``--symbols KRW-BTC,KRW-ETH`` validated like ``TRADING_SYMBOLS`` (default: the setting)."""
    if raw is None:
        return list(settings.trading.symbols)
    try:
        return TradingConfig(_env_file=None, TRADING_SYMBOLS=raw).symbols
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigurationError(f"--symbols {raw!r}: {message}") from None


def parse_database_url(raw: str | None, name: str = "--database-url") -> str | None:
    """A database URL given on the command line, validated like ``DATABASE_URL`` (one rule for both)."""
    if raw is None:
        return None
    try:
        return DatabaseConfig(_env_file=None, DATABASE_URL=raw).url
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigurationError(f"{name}: {message}") from None


def parse_time(raw: str, name: str) -> datetime:
    """ISO date or date-time; naive values are UTC. Within the window of times the API serves
    (``queries.paging.checked_time``): year 1 or 9999 is a typo, and date arithmetic near them overflows."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name} {raw!r}: expected an ISO date such as 2023-10-01 or 2023-10-01T09:00"
        ) from None
    try:
        return checked_time(moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment)
    except ValueError as exc:
        raise ConfigurationError(f"{name} {raw!r}: {exc}") from None


def quiet_logging(settings: Settings) -> None:
    """Replay's default: warnings and errors only, so the summary is what the screen shows."""
    configure_logging(
        level="WARNING",
        log_format=settings.observability.log_format.value,
        secrets=settings.secret_values(),
    )


def fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"error: {redactor.scrub_text(message)}", file=sys.stderr)
    return code


# --- one cycle (main.py) ---------------------------------------------------------------------------
async def run_one_cycle(settings: Settings, mode: TradingMode, symbols: list[str], dry_run: bool) -> int:
    if mode is TradingMode.REPLAY:
        if dry_run:
            raise ConfigurationError("--dry-run applies to paper and live; a replay writes to its own database")
        # "now" in replay is the end of the bundled data: one hour of scheduler time, one cycle
        options = ReplayOptions(symbols=symbols, duration=timedelta(hours=1))
        return print_replay(await run_replay(settings, options))
    db_engine = engine_from_config(settings.database)
    sessions = session_factory(db_engine)
    notifier = NotificationService(settings.telegram, BotRepository(sessions), trade_details=SqlTradeDetails(sessions))
    try:
        await ensure_schema_current(db_engine)
        await notifier.start()
        engine = await TradingEngine.create(settings, db_engine, mode=mode, symbols=symbols, notifier=notifier)
        try:
            if dry_run:  # sends nothing, so it needs no lock and runs beside a scheduler; no order can leave
                engine.guard_orders(NoOrders())
                await SettingsApplier(engine).refresh()
                reports = await engine.trading_job(dry_run=True)
            else:
                async with SchedulerLock(db_engine, lock_name(engine)) as lock:  # the single-trader lock
                    engine.guard_orders(lock)
                    await SettingsApplier(engine).refresh()  # the run-time settings of bot_config, as the scheduler
                    await engine.start_up()
                    reports = await engine.trading_job(dry_run=False)  # ends with a portfolio snapshot
        finally:
            await engine.aclose()
    finally:
        await notifier.aclose()
        await db_engine.dispose()
    print_cycles(reports, dry_run)
    return EXIT_ERROR if any(r.error for r in reports) else 0


class NoOrders:
    """The order guard of a dry run: any order attempt is refused before it is written."""

    async def ensure_held(self) -> None:
        raise SchedulerLockLost("a dry run sends no order")


def print_cycles(reports: list[CycleReport], dry_run: bool) -> None:
    table = Table(title="Trading cycle" + (" (dry run: nothing sent)" if dry_run else ""))
    for column in ("symbol", "decision", "final", "source", "outcome", "orders", "error"):
        table.add_column(column)
    for r in reports:
        orders = ", ".join(f"{o.side.value} {o.status.value}" for o in r.orders) or "-"
        error = redactor.scrub_text(r.error or "")
        table.add_row(r.symbol, r.decision, r.final_decision, r.source, r.outcome, orders, error)
    Console().print(table)


# --- the scheduler (scheduler_main.py) ---------------------------------------------------------------
async def run_scheduler(settings: Settings, symbols: list[str]) -> int:
    db_engine = engine_from_config(settings.database)
    init_sentry(settings, "scheduler")
    metrics = SchedulerMetrics()
    telegram: TelegramRuntime | None = None
    engine: TradingEngine | None = None
    try:
        await ensure_schema_current(db_engine)
        metrics.serve(
            settings.scheduler.metrics_port,
            settings.scheduler.metrics_host,
            instance=settings.scheduler.instance_name,
        )
        telegram = await start_telegram(settings, session_factory(db_engine))
        engine = await TradingEngine.create(
            settings, db_engine, symbols=symbols, notifier=telegram.notifier, metrics=metrics
        )
        if telegram.commands is not None:  # /positions: live prices from the exchange the engine trades on
            telegram.commands.prices = ticker_prices(engine.pipeline.exchange)
        scheduler = TradingScheduler(engine, db_engine, settings.scheduler, metrics=metrics)
        code = await scheduler.run()
        if code:
            fail(f"{scheduler.exit_reason or 'see the log'} (exit code {code})")
        return code
    finally:
        if engine is not None:
            await engine.aclose()
        if telegram is not None:
            await telegram.aclose()
        await db_engine.dispose()
        close_sentry()


# --- replay (scheduler_main.py --replay) -------------------------------------------------------------
def print_replay(summary: ReplaySummary) -> int:
    table = Table(title="Replay summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, value in summary_table_rows(summary):
        table.add_row(name, redactor.scrub_text(value))
    Console().print(table)
    return EXIT_ERROR if summary.cycle_errors and summary.cycle_errors == summary.cycles else 0


def run(coro_factory: object) -> int:
    """Run an entry point coroutine; typed errors become one clear line."""
    try:
        return asyncio.run(coro_factory)  # type: ignore[arg-type]
    except (DatabaseNotMigratedError, DatabaseUnavailable) as exc:
        return fail(exc.message)
    except SchedulerLockHeld as exc:  # another process trades this account: the scheduler's own exit code
        return fail(exc.message, EXIT_LOCK_HELD)
    except ConfigurationError as exc:
        return fail(exc.message, EXIT_USAGE)
    except TradingSystemError as exc:
        return fail(f"{type(exc).__name__}: {exc.message}")
    except (SQLAlchemyError, OSError) as exc:  # the database or the system failed past start-up: one line
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [""])[0]
        return fail(f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__)
    except KeyboardInterrupt:
        return 130
