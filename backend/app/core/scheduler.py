"""The scheduler: APScheduler jobs around the trading engine, the single-trader lock, control as data,
heartbeat, SIGTERM. Replay runs the same jobs on a simulated clock (``replay_driver.py``).

The parts live beside it: ``jobs.py`` (job names, triggers, ``JobRunner``), ``control.py`` (desired state,
safe-mode reset, run-time settings, heartbeat), ``lock_keeper.py`` (the lock as the order path's guard).
``TradingScheduler`` wires them to APScheduler: the jobs on their triggers plus a control poll (every
``SCHEDULER_CONTROL_POLL_SECONDS``: lock check, desired state, run-time settings between jobs, heartbeat), and
runs Upbit's private stream beside them (``backend/app/services/private_stream.py``): its order settlements take
the jobs' lock, and each announcement runs the market-status job at once.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.core.jobs import JobName, JobRunner, build_triggers, job_id
from backend.app.core.lock_keeper import LockKeeper
from backend.app.db.lock import SchedulerLock
from backend.app.services.price_watch import PriceWatch, StreamFactory, disabled_status, upbit_stream
from backend.app.services.private_stream import PrivateStream
from backend.app.services.private_stream import StreamFactory as PrivateStreamFactory
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.config.system_groups import SchedulerConfig
from src.domain.bot import BotState
from src.domain.modes import TradingMode
from src.exceptions import SchedulerLockHeld, SchedulerLockLost
from src.utils.logger import get_logger

log = get_logger(__name__)

EXIT_OK = 0
EXIT_LOCK_HELD = 3
EXIT_LOCK_LOST = 4


def lock_name(engine: TradingEngine) -> str:
    """One lock per traded account: the mode's account (live keys, or the paper account)."""
    return f"trading:{engine.mode.value}"


class TradingScheduler:
    """The long-running process: lock, start-up reconciliation, APScheduler, control poll, clean stop."""

    def __init__(
        self,
        engine: TradingEngine,
        db_engine: AsyncEngine,
        config: SchedulerConfig,
        *,
        metrics: SchedulerMetrics | None = None,
        lock_lease_seconds: int = 120,
        shutdown_timeout_seconds: float = 120.0,
        private_stream: PrivateStreamFactory | None = None,
        price_stream: StreamFactory = upbit_stream,
    ) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics or engine.metrics
        self.lock = SchedulerLock(db_engine, lock_name(engine), lease_seconds=lock_lease_seconds)
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": config.misfire_grace_seconds,
            },
        )
        self.runner = JobRunner(
            engine,
            instance=config.instance_name,
            metrics=self.metrics,
            next_run=self._next_trading_run,
            schedule=config.trading_cron,
        )
        self.keeper = LockKeeper(self.lock, self.runner, self.metrics, self._lock_taken_over)
        self.private = PrivateStream(
            engine, lock=self.runner.work_lock, refresh=self._refresh_market_flags, factory=private_stream
        )
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.price_watch = self._price_watch(price_stream)
        self._price_watch_task: asyncio.Task[None] | None = None
        self.shutdown_timeout = shutdown_timeout_seconds
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.exit_code = EXIT_OK
        self.exit_reason: str | None = None

    def _price_watch(self, stream: StreamFactory) -> PriceWatch | None:
        """The real-time exits' prices (live and paper; ``REALTIME_EXITS_ENABLED=false``: none, the position job
        alone exits). Replay feeds the same watcher from its candles instead (``replay_driver.CandleTicks``)."""
        settings = self.engine.settings
        if self.engine.mode is TradingMode.REPLAY or not settings.realtime.exits_enabled:
            self.runner.realtime_status = disabled_status
            return None
        watch = PriceWatch(
            self.engine.watcher,
            self.engine.pipeline.exchange,
            settings.realtime,
            settings.upbit.websocket_url,
            self.metrics,
            repository=self.engine.pipeline.repository,
            stream_factory=stream,
        )
        self.runner.realtime_status = watch.status
        return watch

    def _next_trading_run(self) -> datetime | None:
        job = self.scheduler.get_job(job_id(JobName.TRADING))
        return None if job is None else job.next_run_time

    def request_stop(self, reason: str = "signal") -> None:
        if not self._stop.is_set():
            log.info("scheduler.stop_requested", reason=reason)
            self.runner.stopping = True
            self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)

    async def run(self, *, handle_signals: bool = True) -> int:
        """Until SIGTERM/SIGINT (or a lost lock, or ``request_stop``). Returns the process exit code."""
        try:
            await self.lock.acquire()
        except SchedulerLockHeld as exc:
            log.error("scheduler.lock_held", lock=self.lock.name, error=exc.message)
            self.exit_code, self.exit_reason = EXIT_LOCK_HELD, exc.message
            return EXIT_LOCK_HELD
        self.metrics.lock_held.set(1)
        self.engine.guard_orders(self.keeper)  # from now on every order checks the lock first
        try:
            if handle_signals:
                self.install_signal_handlers()
            await self.runner.write_heartbeat(BotState.STARTING)
            async with self.runner.work_lock:
                await self.runner.read_control()
                await self.engine.start_up()
            self._add_jobs()
            self.scheduler.start()
            await self.private.start()
            if self.price_watch is not None:
                self._price_watch_task = asyncio.create_task(self.price_watch.run(), name="price-watch")
            await self.runner.write_heartbeat()
            self.started.set()
            log.info(
                "scheduler.started",
                mode=self.engine.mode.value,
                symbols=self.engine.symbols,
                lock=self.lock.name,
                next_trading_run=str(self._next_trading_run()),
            )
            await self._stop.wait()
        finally:
            await self._shutdown()
        return self.exit_code

    def _add_jobs(self) -> None:
        realtime = self.engine.settings.realtime if self.engine.has_market_flags else None
        for job, trigger in build_triggers(self.config, realtime).items():
            self.scheduler.add_job(self.runner.run, trigger, args=[job], id=job_id(job), name=job.value)
        self.scheduler.add_job(
            self._control_poll,
            IntervalTrigger(seconds=self.config.control_poll_seconds, timezone=UTC),
            id="control_poll",
            name="control_poll",
        )

    async def _refresh_market_flags(self) -> None:
        """An announcement arrived: run the market-status job now (in its own task, under the jobs' lock)."""
        if self.runner.stopping or not self.engine.has_market_flags:
            return
        task = asyncio.create_task(self.runner.run(JobName.MARKET_STATUS), name="market-status-now")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _control_poll(self) -> None:
        """Check the lock (re-taking it when it was lost and is free), then the desired state and the heartbeat."""
        try:
            await self.keeper.ensure_held()
        except SchedulerLockLost:
            return  # said by the keeper; taken over: stopping; database unreachable: the next poll tries again
        await self.runner.poll()
        await self.runner.write_heartbeat()

    def _lock_taken_over(self, message: str) -> None:
        self.exit_code = EXIT_LOCK_LOST
        self.exit_reason = f"lost the scheduler lock: {message}"
        self.request_stop("lock lost")

    async def _stop_price_watch(self) -> None:
        """No new real-time exits (``stopping``); the stream closes and an exit in flight finishes."""
        if self.price_watch is None or self._price_watch_task is None:
            return
        await self.price_watch.stop()
        try:
            await asyncio.wait_for(self._price_watch_task, timeout=self.shutdown_timeout)
        except TimeoutError:
            log.error("scheduler.price_watch_stop_timeout", seconds=self.shutdown_timeout)
            self._price_watch_task.cancel()
        except Exception:
            log.exception("scheduler.price_watch_failed")

    async def _shutdown(self) -> None:
        """No new jobs; let the job in flight finish its order handling; then stop APScheduler (whose
        shutdown cancels running job tasks, so it must come after), write the heartbeat, free the lock."""
        self.runner.stopping = True
        await self.private.stop()
        if self.scheduler.running:
            self.scheduler.pause()
        await self._stop_price_watch()
        try:
            await asyncio.wait_for(self.runner.work_lock.acquire(), timeout=self.shutdown_timeout)
            self.runner.work_lock.release()
        except TimeoutError:
            log.error("scheduler.shutdown_timeout", seconds=self.shutdown_timeout)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if not self.keeper.taken_over or await self.runner.heartbeat_is_ours():
            await self.runner.write_heartbeat(BotState.STOPPED)
        self.metrics.bot_running.set(0)
        await self.lock.release()
        self.metrics.lock_held.set(0)
        log.info("scheduler.stopped", exit_code=self.exit_code, reason=self.exit_reason)
