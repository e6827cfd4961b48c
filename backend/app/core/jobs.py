"""The scheduler's jobs: their names and order, their timing (one definition for the real scheduler and for
replay), and ``JobRunner``, which runs one job body under the bot's desired state.

Jobs (see docs/SCHEDULER_GUIDE.md): trading cycle (``SCHEDULER_TRADING_CRON``, hourly), position
check (every ``SCHEDULER_POSITION_CHECK_MINUTES``), portfolio snapshot (every
``SCHEDULER_SNAPSHOT_MINUTES``), daily report (``SCHEDULER_DAILY_REPORT_TIME_KST``), and in live and paper mode
the market-status job (every ``MARKET_STATUS_REFRESH_MINUTES``: Upbit's warning/caution flags; replay has no
flags, so no such job). Jobs that touch the
account run one at a time (one asyncio lock), so an exit and a cycle never sell the same coin twice.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from backend.app.core.control import BotControl
from src.config.system_groups import SchedulerConfig
from src.config.trading_groups import RealtimeConfig
from src.domain.bot import DesiredState
from src.domain.events import EventKind, NotificationEvent
from src.utils.logger import get_logger

log = get_logger(__name__)

KST = ZoneInfo("Asia/Seoul")
_INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)  # interval jobs fire on round multiples of their period


class JobName(StrEnum):
    POSITIONS = "position_check"
    TRADING = "trading_cycle"
    SNAPSHOT = "portfolio_snapshot"
    DAILY_REPORT = "daily_report"
    MARKET_STATUS = "market_status"


# When several jobs are due at the same moment they run in this order (exits before new entries, the market
# flags before the entries they gate, the snapshot after both, the report last).
JOB_ORDER: tuple[JobName, ...] = (
    JobName.POSITIONS,
    JobName.MARKET_STATUS,
    JobName.TRADING,
    JobName.SNAPSHOT,
    JobName.DAILY_REPORT,
)
_ACCOUNT_JOBS = frozenset({JobName.TRADING, JobName.POSITIONS})


def job_id(job: JobName) -> str:
    """APScheduler hands out jobs due at the same moment ordered by id; the prefix makes that JOB_ORDER."""
    return f"{JOB_ORDER.index(job) + 1}-{job.value}"


def build_triggers(config: SchedulerConfig, realtime: RealtimeConfig | None = None) -> dict[JobName, BaseTrigger]:
    """The one definition of every job's timing, used by the real scheduler and by replay. ``realtime``: the
    market-status job too (live and paper, which read Upbit's market flags; replay has none and passes nothing)."""
    hour, minute = (int(part) for part in config.daily_report_time_kst.split(":"))
    triggers: dict[JobName, BaseTrigger] = {
        JobName.POSITIONS: IntervalTrigger(
            minutes=config.position_check_minutes, start_date=_INTERVAL_ANCHOR, timezone=UTC
        ),
        JobName.TRADING: CronTrigger.from_crontab(config.trading_cron, timezone=UTC),
        JobName.SNAPSHOT: IntervalTrigger(minutes=config.snapshot_minutes, start_date=_INTERVAL_ANCHOR, timezone=UTC),
        JobName.DAILY_REPORT: CronTrigger(hour=hour, minute=minute, timezone=KST),
    }
    if realtime is not None:
        triggers[JobName.MARKET_STATUS] = IntervalTrigger(
            minutes=realtime.market_status_refresh_minutes, start_date=_INTERVAL_ANCHOR, timezone=UTC
        )
    return triggers


class JobRunner(BotControl):
    """Runs one job body under the bot's desired state, timing it and recording success or failure.

    ``running``: every job. ``paused``: the trading cycle runs without new buys (decisions are still
    recorded, held positions may be sold), exits and snapshots run. ``stopped``: no trading cycle and
    no exits; snapshots and the report still run.
    """

    async def poll(self) -> None:
        """The control poll: the desired state always; settings only while no job runs (the job in flight
        keeps its settings, the next one reads them anyway)."""
        if self.work_lock.locked():
            await self.read_desired()
            return
        async with self.work_lock:
            await self.read_control()

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
                if job in _ACCOUNT_JOBS:
                    await self.account_changed()
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
        elif job is JobName.MARKET_STATUS:  # flags are read while stopped too; held coins are acted on otherwise
            await self.engine.market_status_job(act=desired is not DesiredState.STOPPED)

    async def _record_failure(self, job: JobName, exc: Exception) -> None:
        context = {"job": job.value, "error": f"{type(exc).__name__}: {exc}"}
        try:
            await self.engine.log_event("error", f"scheduler job {job.value} failed", context)
        except Exception:
            log.exception("system_log.write_failed")
        self.engine.notifier.notify(NotificationEvent(EventKind.ERROR, f"Job {job.value} failed", context))
