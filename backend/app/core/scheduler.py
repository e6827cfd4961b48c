"""The scheduler: APScheduler jobs around the trading engine, the single-trader lock, control as data,
heartbeat, SIGTERM, and replay (the same jobs on a simulated clock).

Jobs (see docs/SCHEDULER_GUIDE.md): trading cycle (``SCHEDULER_TRADING_CRON``, hourly), position
check (every ``SCHEDULER_POSITION_CHECK_MINUTES``), portfolio snapshot (every
``SCHEDULER_SNAPSHOT_MINUTES``), daily report (``SCHEDULER_DAILY_REPORT_TIME_KST``), and a control poll
(every ``SCHEDULER_CONTROL_POLL_SECONDS``: desired state, run-time settings between jobs, heartbeat, lock
check). Jobs that touch the account run one at a time (one asyncio lock), so an exit and a cycle never sell the
same coin twice.

The single-trader lock is checked on every control poll and before every order (``LockKeeper`` is the
order path's ``OrderGuard``). A lock lost with the database connection is re-taken on a new connection
when it is free; one that another scheduler took stops this one (exit code 4). Either is said once: log,
Telegram, heartbeat ``last_error``, ``scheduler_lock_lost_total``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.core.runtime_settings import SettingsApplier
from backend.app.db.lock import SchedulerLock
from backend.app.db.repositories.bot import BotRepository
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.config.settings import SchedulerConfig
from src.domain.bot import BotState, DesiredState, following
from src.domain.events import EventKind, NotificationEvent
from src.exceptions import SchedulerLockHeld, SchedulerLockLost
from src.utils.logger import get_logger

log = get_logger(__name__)

KST = ZoneInfo("Asia/Seoul")
_INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)  # interval jobs fire on round multiples of their period
EXIT_OK = 0
EXIT_LOCK_HELD = 3
EXIT_LOCK_LOST = 4


class JobName(StrEnum):
    POSITIONS = "position_check"
    TRADING = "trading_cycle"
    SNAPSHOT = "portfolio_snapshot"
    DAILY_REPORT = "daily_report"


# When several jobs are due at the same moment they run in this order (exits before new entries,
# the snapshot after both, the report last).
JOB_ORDER: tuple[JobName, ...] = (JobName.POSITIONS, JobName.TRADING, JobName.SNAPSHOT, JobName.DAILY_REPORT)
_ACCOUNT_JOBS = frozenset({JobName.TRADING, JobName.POSITIONS})


def job_id(job: JobName) -> str:
    """APScheduler hands out jobs due at the same moment ordered by id; the prefix makes that JOB_ORDER."""
    return f"{JOB_ORDER.index(job) + 1}-{job.value}"


def build_triggers(config: SchedulerConfig) -> dict[JobName, BaseTrigger]:
    """The one definition of every job's timing, used by the real scheduler and by replay."""
    hour, minute = (int(part) for part in config.daily_report_time_kst.split(":"))
    return {
        JobName.POSITIONS: IntervalTrigger(
            minutes=config.position_check_minutes, start_date=_INTERVAL_ANCHOR, timezone=UTC
        ),
        JobName.TRADING: CronTrigger.from_crontab(config.trading_cron, timezone=UTC),
        JobName.SNAPSHOT: IntervalTrigger(minutes=config.snapshot_minutes, start_date=_INTERVAL_ANCHOR, timezone=UTC),
        JobName.DAILY_REPORT: CronTrigger(hour=hour, minute=minute, timezone=KST),
    }


def lock_name(engine: TradingEngine) -> str:
    """One lock per traded account: the mode's account (live keys, or the paper account)."""
    return f"trading:{engine.mode.value}"


@dataclass(slots=True)
class JobStats:
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def bump(self, table: dict[str, int], job: JobName) -> None:
        table[job.value] = table.get(job.value, 0) + 1


class JobRunner:
    """Runs one job body under the bot's desired state, timing it and recording success or failure.

    ``running``: every job. ``paused``: the trading cycle runs without new buys (decisions are still
    recorded, held positions may be sold), exits and snapshots run. ``stopped``: no trading cycle and
    no exits; snapshots and the report still run.
    """

    def __init__(
        self,
        engine: TradingEngine,
        *,
        instance: str,
        metrics: SchedulerMetrics,
        heartbeat: bool = True,
        next_run: Callable[[], datetime | None] | None = None,
        schedule: str | None = None,
    ) -> None:
        self.engine = engine
        self.bot: BotRepository = engine.bot
        self.instance = instance
        self.metrics = metrics
        self.heartbeat_enabled = heartbeat
        self.next_run = next_run or (lambda: None)
        self.schedule = schedule
        self.work_lock = asyncio.Lock()
        self.settings = SettingsApplier(engine)
        self.desired = DesiredState.RUNNING
        self.handled_reset_at: datetime | None = None  # the reset request last handled (it stays in bot_config)
        self.state = BotState.STARTING
        self.stopping = False
        self.started_at = datetime.now(UTC)
        self.last_run_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.stats = JobStats()

    async def read_desired(self) -> DesiredState:
        try:
            desired = await self.bot.desired_state()
        except Exception as exc:  # keep the last known state; the database may be restarting
            log.warning("control.read_failed", error=str(exc))
            return self.desired
        if desired is not self.desired:
            log.info("control.desired_state_changed", previous=self.desired.value, desired=desired.value)
            self.engine.notifier.notify(
                NotificationEvent(
                    EventKind.BOT_STATE_CHANGED,
                    f"Bot {desired.value}",
                    {"previous": self.desired.value, "state": desired.value, "instance": self.instance},
                )
            )
        self.desired = desired
        self.state = following(self.state, desired)
        self.metrics.bot_running.set(1 if desired is DesiredState.RUNNING else 0)
        await self._apply_safe_mode_reset()
        return desired

    async def read_control(self) -> DesiredState:
        """Desired state and run-time settings, applied from the next job on. Call it between jobs, holding
        the work lock (``run`` and ``poll`` do)."""
        desired = await self.read_desired()
        await self.settings.refresh()
        return desired

    async def poll(self) -> None:
        """The control poll: the desired state always; settings only while no job runs (the job in flight
        keeps its settings, the next one reads them anyway)."""
        if self.work_lock.locked():
            await self.read_desired()
            return
        async with self.work_lock:
            await self.read_control()

    async def _apply_safe_mode_reset(self) -> None:
        """An operator's reset request ends safe mode once; a request older than the safe mode is ignored."""
        try:
            request = await self.bot.safe_mode_reset_request()
            if request is None or request[2] == self.handled_reset_at:
                return
            by, reason, requested_at = request
            event = await self.engine.pipeline.risk.reset_safe_mode(by, reason, requested_at=requested_at)
        except Exception as exc:  # the database may be restarting; the next poll tries again
            log.warning("control.safe_mode_reset_failed", error=str(exc))
            return
        self.handled_reset_at = requested_at
        if event is not None:
            log.warning("risk.safe_mode_reset", by=by, reason=reason)
            self.engine.notifier.notify(event)

    async def run(self, job: JobName, desired: DesiredState | None = None) -> None:
        """Run ``job`` under the desired state (read now unless the caller just read it)."""
        if self.stopping:
            return
        async with self.work_lock:  # FIFO: jobs due together keep the order they were handed out in
            if self.stopping:
                return
            desired = desired or await self.read_control()
            if job in _ACCOUNT_JOBS and desired is DesiredState.STOPPED:
                self.stats.bump(self.stats.skipped, job)
                log.info("job.skipped", job=job.value, reason="bot stopped")
            else:
                await self._timed(job, desired)
        await self.write_heartbeat()

    async def _timed(self, job: JobName, desired: DesiredState) -> None:
        started = time.perf_counter()
        try:
            await self._body(job, desired)
        except Exception as exc:
            self.stats.bump(self.stats.failures, job)
            self.metrics.job_failure.labels(job=job.value).inc()
            self.metrics.bot_errors.labels(kind=job.value).inc()
            self.last_error = f"{job.value}: {type(exc).__name__}: {exc}"[:2000]
            self.last_error_at = self.engine.clock()
            log.exception("job.failed", job=job.value)
            await self._record_failure(job, exc)
        else:
            self.stats.bump(self.stats.runs, job)
            self.metrics.job_success.labels(job=job.value).inc()
        finally:
            self.metrics.job_duration.labels(job=job.value).observe(time.perf_counter() - started)
            self.last_run_at = self.engine.clock()

    async def _body(self, job: JobName, desired: DesiredState) -> None:
        if job is JobName.TRADING:
            reports = await self.engine.trading_job(
                allow_buys=desired is DesiredState.RUNNING, stop_requested=lambda: self.stopping
            )
            errors = [r for r in reports if r.error]
            for report in errors:
                self.metrics.bot_errors.labels(kind="cycle").inc()
                self.last_error = f"cycle {report.symbol}: {report.error}"[:2000]
                self.last_error_at = self.engine.clock()
        elif job is JobName.POSITIONS:
            await self.engine.position_job()
        elif job is JobName.SNAPSHOT:
            await self.engine.snapshot_job()
        elif job is JobName.DAILY_REPORT:
            await self.engine.daily_report_job()

    async def _record_failure(self, job: JobName, exc: Exception) -> None:
        context = {"job": job.value, "error": f"{type(exc).__name__}: {exc}"}
        try:
            await self.engine.pipeline.repository.log_event("error", f"scheduler job {job.value} failed", context)
        except Exception:
            log.exception("system_log.write_failed")
        self.engine.notifier.notify(NotificationEvent(EventKind.ERROR, f"Job {job.value} failed", context))

    async def heartbeat_is_ours(self) -> bool:
        """False when another process wrote this instance's heartbeat last (it took the lock over)."""
        try:
            row = await self.bot.get_heartbeat(self.instance)
        except Exception as exc:
            log.warning("heartbeat.read_failed", error=str(exc))
            return False
        if row is None or (row.pid == os.getpid() and row.hostname == socket.gethostname()):
            return True
        log.warning("heartbeat.not_written", instance=self.instance, reason="another scheduler holds the lock now")
        return False

    async def write_heartbeat(self, state: BotState | None = None) -> None:
        if not self.heartbeat_enabled:
            return
        try:
            risk_state = await self.engine.pipeline.risk.risk_state()
            await self.bot.write_heartbeat(
                self.instance,
                state=(state or self.state).value,
                mode=self.engine.mode.value,
                symbols=self.engine.symbols,
                schedule=self.schedule,
                pid=os.getpid(),
                hostname=socket.gethostname(),
                started_at=self.started_at,
                last_run_at=self.last_run_at,
                next_run_at=self.next_run(),
                last_error=self.last_error,
                last_error_at=self.last_error_at,
                safe_mode=risk_state.safe_mode,
                safe_mode_reason=risk_state.safe_mode_reason,
                details={
                    "desired_state": self.desired.value,
                    "ai": "enabled" if self.engine.ai_available else "disabled",
                    "ai_disabled_reason": self.engine.ai_off_reason,
                    "jobs": self.stats.runs,
                    "failures": self.stats.failures,
                    "settings": self.settings.report(),
                },
            )
        except Exception as exc:
            log.warning("heartbeat.write_failed", error=str(exc))


class LockKeeper:
    """The scheduler's lock as ``TradingService``'s ``OrderGuard``: checked before every order and on every
    control poll. A loss is said once (log, Telegram, heartbeat ``last_error``, metrics) and orders are
    refused until the lock is held again; a lock another process took calls ``on_taken_over``."""

    def __init__(
        self,
        lock: SchedulerLock,
        runner: JobRunner,
        metrics: SchedulerMetrics,
        on_taken_over: Callable[[str], None],
    ) -> None:
        self.lock = lock
        self.runner = runner
        self.metrics = metrics
        self.on_taken_over = on_taken_over
        self.lost = False
        self.taken_over = False
        self.lost_since: float | None = None  # monotonic, for the log line of a re-take

    async def ensure_held(self) -> None:
        try:
            retaken = await self.lock.check()
        except SchedulerLockLost as exc:
            if not self.lock.released:
                self._lost(exc)
            raise
        if retaken:
            self._retaken()
        self.metrics.lock_held.set(1)

    def _lost(self, exc: SchedulerLockLost) -> None:
        self.metrics.lock_held.set(0)
        if not self.lost:
            self._say_lost(exc.message)
        if exc.taken_over and not self.taken_over:
            self.taken_over = True
            self.on_taken_over(exc.message)

    def _say_lost(self, message: str) -> None:
        self.lost = True
        self.lost_since = time.monotonic()
        self.metrics.lock_lost.inc()
        log.error("scheduler.lock_lost", lock=self.lock.name, error=message, orders="refused until re-taken")
        self._record(f"lost the scheduler lock: {message}")
        self.runner.engine.notifier.notify(
            NotificationEvent(
                EventKind.ERROR,
                "Scheduler lock lost: no orders until it is held again",
                {"error": message, "lock": self.lock.name, "instance": self.runner.instance},
            )
        )

    def _retaken(self) -> None:
        if not self.lost:  # lost and re-taken within this one check (the database restarted in between)
            self._say_lost(f"the lock '{self.lock.name}' was gone (database connection lost)")
        seconds = None if self.lost_since is None else round(time.monotonic() - self.lost_since, 3)
        self.lost = False
        log.warning("scheduler.lock_retaken", lock=self.lock.name, seconds_without_lock=seconds)
        self._record(f"scheduler lock '{self.lock.name}' was lost (database restarted?) and re-taken")
        self.runner.engine.notifier.notify(
            NotificationEvent(
                EventKind.BOT_STATE_CHANGED,
                "Scheduler lock re-taken: trading continues",
                {"state": "running", "lock": self.lock.name, "instance": self.runner.instance},
            )
        )

    def _record(self, message: str) -> None:
        self.runner.last_error = message[:2000]
        self.runner.last_error_at = self.runner.engine.clock()


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
        self.shutdown_timeout = shutdown_timeout_seconds
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.exit_code = EXIT_OK
        self.exit_reason: str | None = None

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
        for job, trigger in build_triggers(self.config).items():
            self.scheduler.add_job(self.runner.run, trigger, args=[job], id=job_id(job), name=job.value)
        self.scheduler.add_job(
            self._control_poll,
            IntervalTrigger(seconds=self.config.control_poll_seconds, timezone=UTC),
            id="control_poll",
            name="control_poll",
        )

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

    async def _shutdown(self) -> None:
        """No new jobs; let the job in flight finish its order handling; then stop APScheduler (whose
        shutdown cancels running job tasks, so it must come after), write the heartbeat, free the lock."""
        self.runner.stopping = True
        if self.scheduler.running:
            self.scheduler.pause()
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


def fire_times(
    triggers: dict[JobName, BaseTrigger], start: datetime, end: datetime
) -> list[tuple[datetime, list[JobName]]]:
    """Every moment in ``[start, end)`` at which a job is due, with the jobs in ``JOB_ORDER``."""
    moments: dict[datetime, set[JobName]] = {}
    tick = timedelta(microseconds=1)
    for job, trigger in triggers.items():
        previous: datetime | None = None
        moment = trigger.get_next_fire_time(None, start)
        while moment is not None and moment < end:
            moments.setdefault(moment.astimezone(UTC), set()).add(job)
            previous = moment
            moment = trigger.get_next_fire_time(previous, previous + tick)
    return [(at, [job for job in JOB_ORDER if job in jobs]) for at, jobs in sorted(moments.items())]


async def drive_replay(
    runner: JobRunner,
    advance_to: Callable[[datetime], Any],
    schedule: list[tuple[datetime, list[JobName]]],
    *,
    speed: float | None = None,
    on_tick: Callable[[datetime], None] | None = None,
) -> int:
    """Call the scheduler's own job functions at their simulated fire times; ``speed`` = simulated
    seconds per real second (``None``: as fast as possible). The desired state and the run-time settings are
    read at the start and before every trading cycle. Returns the number of moments driven."""
    previous: datetime | None = None
    desired: DesiredState | None = None
    for count, (moment, jobs) in enumerate(schedule, start=1):
        if speed is not None and previous is not None:
            await asyncio.sleep((moment - previous).total_seconds() / speed)
        advance_to(moment)
        if desired is None or JobName.TRADING in jobs:  # the control poll, in simulated time: hourly
            desired = await runner.read_control()
        for job in jobs:
            await runner.run(job, desired)
        if on_tick is not None:
            on_tick(moment)
        previous = moment
        if runner.stopping:
            return count
    return len(schedule)
