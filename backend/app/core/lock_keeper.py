"""The single-trader lock while the scheduler runs: checked on every control poll and before every order
(``LockKeeper`` is the order path's ``OrderGuard``). A lock lost with the database connection is re-taken on a
new connection when it is free; one that another scheduler took stops this one (exit code 4). Either is said
once: log, Telegram, heartbeat ``last_error``, ``scheduler_lock_lost_total``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from backend.app.core.jobs import JobRunner
from backend.app.db.lock import SchedulerLock
from backend.app.services.scheduler_metrics import SchedulerMetrics
from src.domain.events import EventKind, NotificationEvent
from src.exceptions import SchedulerLockLost
from src.utils.logger import get_logger

log = get_logger(__name__)


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
