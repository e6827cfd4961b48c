"""Running the A/B instances (``scheduler_main.py --instances FILE``): every instance's scheduler in one process, or
a replay of every instance over the same candles and window, followed by a comparison table.

One process, one event loop: each instance has its own ``TradingEngine`` and ``TradingScheduler`` (its own
database, single-trader lock, heartbeat and paper account), and its own ``SchedulerMetrics``, served together on
``SCHEDULER_METRICS_PORT`` with a ``bot_instance`` label. SIGTERM/SIGINT stop every instance; an instance that stops
by itself (its lock held by another process, or lost) stops the others too, and its exit code is the process's.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.core.instances import Instance, InstancesFile, failure_reason
from backend.app.core.observability import close_sentry, init_sentry
from backend.app.core.replay import ReplayOptions, ReplaySummary, run_replay
from backend.app.core.scheduler import EXIT_OK, TradingScheduler
from backend.app.db.migrations import ensure_schema_current, upgrade_to_head
from backend.app.db.queries.portfolio import equity_curve
from backend.app.db.session import engine_from_config, session_factory
from backend.app.services.scheduler_metrics import InstanceMetrics, SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.config.settings import Settings
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError, TradingSystemError
from src.utils.logger import get_logger, redactor

log = get_logger(__name__)

EXIT_ERROR = 1
EXIT_USAGE = 2


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database)
    return None


def migrate(url: str, *, fresh: bool = False) -> None:
    """Bring an instance's database to the newest schema (``fresh``: recreate the SQLite file first). Blocking."""
    path = _sqlite_file(url)
    if path is not None:
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(url)


# --- the schedulers ---------------------------------------------------------------------------------
@dataclass(slots=True)
class _Running:
    instance: Instance
    db_engine: AsyncEngine
    metrics: SchedulerMetrics
    engine: TradingEngine | None = None
    scheduler: TradingScheduler | None = None


async def _start(instance: Instance) -> _Running:
    await asyncio.to_thread(migrate, instance.database_url)
    db_engine = engine_from_config(instance.settings.database)
    running = _Running(instance, db_engine, SchedulerMetrics())
    try:
        await ensure_schema_current(db_engine)
        async with session_factory(db_engine)() as session:
            running.metrics.seed_equity_curve(await equity_curve(session, TradingMode.PAPER))
        running.engine = await TradingEngine.create(
            instance.settings, db_engine, mode=TradingMode.PAPER, metrics=running.metrics
        )
    except BaseException:
        await db_engine.dispose()
        raise
    running.scheduler = TradingScheduler(
        running.engine, db_engine, instance.settings.scheduler, metrics=running.metrics
    )
    return running


async def run_instances(file: InstancesFile, base: Settings) -> int:
    """Every instance's scheduler until SIGTERM/SIGINT; the first non-zero exit code of an instance, else 0."""
    init_sentry(base, "scheduler")
    started: list[_Running] = []
    server = None
    try:
        for instance in file.instances:
            try:
                started.append(await _start(instance))
            except (TradingSystemError, SQLAlchemyError, OSError) as exc:  # one line naming the instance
                print(f"error: instance {instance.name!r}: {redactor.scrub_text(failure_reason(exc))}", file=sys.stderr)
                return EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_ERROR
        schedulers = [r.scheduler for r in started if r.scheduler is not None]
        server = InstanceMetrics({r.instance.name: r.metrics for r in started}).serve(
            base.scheduler.metrics_port, base.scheduler.metrics_host
        )

        def stop_all(reason: str) -> None:
            for scheduler in schedulers:
                scheduler.request_stop(reason)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_all, sig.name)
        log.info("instances.starting", instances=file.names(), file=str(file.path))
        tasks = [asyncio.create_task(_run_as(r.instance.name, r.scheduler)) for r in started if r.scheduler]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop_all("an instance stopped")
        codes = await asyncio.gather(*tasks)
        return _exit_code(started, list(codes))
    finally:
        if server is not None:
            server.shutdown()
        for running in reversed(started):
            if running.engine is not None:
                await running.engine.aclose()
            await running.db_engine.dispose()
        close_sentry()


async def _run_as(name: str, scheduler: TradingScheduler) -> int:
    """The scheduler in a task of its own whose log lines carry ``bot_instance`` (APScheduler's jobs, scheduled from
    this task, inherit its context)."""
    structlog.contextvars.bind_contextvars(bot_instance=name)
    return await scheduler.run(handle_signals=False)


def _exit_code(started: list[_Running], codes: list[int]) -> int:
    for running, code in zip(started, codes, strict=True):
        if code != EXIT_OK:
            reason = running.scheduler.exit_reason if running.scheduler is not None else None
            print(
                f"error: instance {running.instance.name!r}: {redactor.scrub_text(reason or 'see the log')} "
                f"(exit code {code})",
                file=sys.stderr,
            )
            return code
    return EXIT_OK


# --- replay -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InstanceReplay:
    instance: Instance
    summary: ReplaySummary


async def replay_instances(file: InstancesFile, options: ReplayOptions) -> list[InstanceReplay]:
    """Replay every instance over the same candles and window, each into its own fresh database
    (``Instance.replay_database_url``). Without ``--start``/``--end`` the first instance's window is used by all."""
    results: list[InstanceReplay] = []
    start, end = options.start, options.end
    for instance in file.instances:
        url = instance.replay_database_url
        await asyncio.to_thread(migrate, url, fresh=True)
        own = ReplayOptions(
            symbols=instance.symbols,
            start=start,
            end=end,
            data_file=options.data_file,
            database_url=url,
            speed=options.speed,
            duration=options.duration,
        )
        summary = await run_replay(instance.settings, own)
        start, end = summary.start, summary.end
        results.append(InstanceReplay(instance, summary))
    return results


def comparison_rows(results: list[InstanceReplay]) -> list[list[str]]:
    rows = []
    for result in results:
        s, instance = result.summary, result.instance
        params = ", ".join(f"{k}={v}" for k, v in sorted(instance.params.items())) or "defaults"
        exits = ", ".join(f"{k} {v}" for k, v in sorted(s.exits.items())) or "none"
        rows.append(
            [
                instance.name,
                instance.strategy,
                params,
                ",".join(s.symbols),
                f"{s.trades} ({s.buys}/{s.sells})",
                f"{s.final_equity:,.0f}",
                f"{s.return_pct}%",
                f"{s.max_drawdown_pct}%",
                exits,
                s.database,
            ]
        )
    return rows


COMPARISON_COLUMNS = (
    "instance",
    "strategy",
    "params",
    "symbols",
    "trades (buys/sells)",
    "equity KRW",
    "return",
    "max drawdown",
    "exits",
    "database",
)


def print_comparison(results: list[InstanceReplay]) -> int:
    first = results[0].summary
    table = Table(title=f"A/B replay {first.start:%Y-%m-%d %H:%M} -> {first.end:%Y-%m-%d %H:%M} UTC")
    for column in COMPARISON_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in comparison_rows(results):
        table.add_row(*(redactor.scrub_text(cell) for cell in row))
    Console(width=200).print(table)
    failed = [r.instance.name for r in results if r.summary.cycle_errors and r.summary.cycle_errors == r.summary.cycles]
    return EXIT_ERROR if failed else 0


__all__ = ["InstanceReplay", "comparison_rows", "migrate", "print_comparison", "replay_instances", "run_instances"]
