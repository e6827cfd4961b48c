"""What a replay shows while it runs: the simulated date, trading cycles per second and the time left.

On a terminal a live bar on stderr (it disappears when the summary is printed); elsewhere (CI logs, a pipe) one
line at every tenth of the way, so a long replay is never silent until its summary.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from backend.app.core.jobs import JobName

ScheduleMoments = list[tuple[datetime, list[JobName]]]
PLAIN_STEPS = 10


class ReplayProgress:
    """``with ReplayProgress(schedule) as progress: drive_replay(..., on_tick=progress.on_tick)``."""

    def __init__(self, schedule: ScheduleMoments, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.total = len(schedule)
        self._cycle_moments = {moment for moment, jobs in schedule if JobName.TRADING in jobs}
        self._done = 0
        self._cycles = 0
        self._started = time.perf_counter()
        self._next_plain = 1
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ReplayProgress:
        self._started = time.perf_counter()
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("replay {task.fields[date]}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[rate]} cycles/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("replay", total=self.total, date="", rate="-")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def cycles_per_second(self) -> float:
        elapsed = time.perf_counter() - self._started
        return self._cycles / elapsed if elapsed > 0 else 0.0

    def on_tick(self, moment: datetime) -> None:
        """One scheduler moment driven (called by ``drive_replay`` after the moment's jobs)."""
        self._done += 1
        self._cycles += moment in self._cycle_moments
        date = moment.strftime("%Y-%m-%d %H:%M")
        rate = f"{self.cycles_per_second:,.1f}"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self._done, date=date, rate=rate)
        elif self.total and self._done * PLAIN_STEPS >= self._next_plain * self.total:
            self._next_plain = self._done * PLAIN_STEPS // self.total + 1
            left = (time.perf_counter() - self._started) * (self.total - self._done) / self._done
            self.console.print(
                f"replay {100 * self._done // self.total:>3}%  {date}  {rate} cycles/s  ETA {left:,.0f} s",
                highlight=False,
            )
