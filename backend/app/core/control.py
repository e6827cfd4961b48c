"""Control as data, as the scheduler sees it: the desired state, the operator's safe-mode reset, run-time
settings (``SettingsApplier``) and the heartbeat the scheduler writes back.

``BotControl`` keeps what the heartbeat reports (state, last run, last error, job counts); ``JobRunner``
(``jobs.py``) is a ``BotControl`` that also runs the jobs.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from backend.app.core.runtime_settings import SettingsApplier
from backend.app.db.repositories.bot import BotRepository
from backend.app.services.scheduler_metrics import SchedulerMetrics
from backend.app.services.trading_engine import TradingEngine
from src.domain.bot import BotState, DesiredState, following
from src.domain.events import EventKind, NotificationEvent
from src.utils.logger import get_logger

if TYPE_CHECKING:
    from backend.app.core.jobs import JobName

log = get_logger(__name__)


@dataclass(slots=True)
class JobStats:
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def bump(self, table: dict[str, int], job: JobName) -> None:
        table[job.value] = table.get(job.value, 0) + 1


class BotControl:
    """The desired state and run-time settings read from ``bot_config``, and the heartbeat written back."""

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
        self.settings = SettingsApplier(engine)
        self.desired = DesiredState.RUNNING
        self.handled_reset_at: datetime | None = None  # the reset request last handled (it stays in bot_config)
        self.state = BotState.STARTING
        self.started_at = datetime.now(UTC)
        self.last_run_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.stats = JobStats()
        self.work_lock = asyncio.Lock()  # held by a job; settings are applied only while it is free
        self.stopping = False
        # called (holding the work lock) after every job that touches the account and every settings read:
        # the real-time exits re-read the positions' levels
        self.account_listeners: list[Callable[[], Awaitable[object]]] = []
        self.realtime_status: Callable[[], dict[str, object]] | None = None  # the price watch, for the heartbeat
        watcher = engine.watcher
        watcher.lock = self.work_lock
        watcher.may_exit = self.exits_allowed
        self.account_listeners.append(watcher.refresh)

    def exits_allowed(self) -> bool:
        """Exits run while the bot is running or paused; not when it is stopped (as the position job)."""
        return self.desired is not DesiredState.STOPPED and not self.stopping

    async def account_changed(self) -> None:
        """Tell the listeners (the real-time exits) that positions or settings may have changed."""
        for listener in self.account_listeners:
            try:
                await listener()
            except Exception as exc:  # the database may be restarting; the next job or poll tries again
                log.warning("control.account_listener_failed", error=f"{type(exc).__name__}: {exc}")

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
        the runner's work lock (``JobRunner.run`` and ``poll`` do)."""
        desired = await self.read_desired()
        await self.settings.refresh()
        await self.account_changed()
        return desired

    async def _apply_safe_mode_reset(self) -> None:
        """An operator's reset request ends safe mode once; a request older than the safe mode is ignored."""
        try:
            request = await self.bot.safe_mode_reset_request()
            if request is None or request[2] == self.handled_reset_at:
                return
            by, reason, requested_at = request
            event = await self.engine.reset_safe_mode(by, reason, requested_at=requested_at)
        except Exception as exc:  # the database may be restarting; the next poll tries again
            log.warning("control.safe_mode_reset_failed", error=str(exc))
            return
        self.handled_reset_at = requested_at
        if event is not None:
            log.warning("risk.safe_mode_reset", by=by, reason=reason)
            self.engine.notifier.notify(event)

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
            risk_state = await self.engine.risk_state()
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
                    "private_stream": self.engine.private_stream_status,
                    "market_flags": self.engine.pipeline.markets.report(),
                    "realtime": self.realtime_status() if self.realtime_status is not None else None,
                },
            )
        except Exception as exc:
            log.warning("heartbeat.write_failed", error=str(exc))
