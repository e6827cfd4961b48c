"""A replay says how far it is while it runs: a live bar on a terminal, a line per tenth elsewhere."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console

from backend.app.core.jobs import JobName
from backend.app.core.replay_progress import ReplayProgress

START = datetime(2023, 12, 1, tzinfo=UTC)


def _schedule(hours: int) -> list[tuple[datetime, list[JobName]]]:
    """Every 15 minutes a position check, on the hour also a trading cycle."""
    moments = [START + timedelta(minutes=15 * i) for i in range(hours * 4)]
    return [(m, [JobName.POSITIONS, JobName.TRADING] if m.minute == 0 else [JobName.POSITIONS]) for m in moments]


def test_without_a_terminal_a_replay_prints_a_line_per_tenth_with_date_rate_and_eta() -> None:
    # Given a replay of 40 hours (160 scheduler moments) writing to a log, not a terminal
    out = io.StringIO()
    schedule = _schedule(40)
    # When every moment is driven
    with ReplayProgress(schedule, Console(file=out, force_terminal=False, width=200)) as progress:
        for moment, _jobs in schedule:
            progress.on_tick(moment)
    # Then ten lines say how far it is, with the simulated date, cycles per second and the time left
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("replay  10%  2023-12-01 03:45")
    assert lines[-1].startswith("replay 100%  2023-12-02 15:45")
    assert all("cycles/s" in line and "ETA" in line for line in lines)
    assert progress.cycles_per_second > 0


def test_on_a_terminal_the_bar_is_live_and_leaves_the_screen_to_the_summary() -> None:
    # Given a terminal
    out = io.StringIO()
    schedule = _schedule(4)
    # When the replay runs
    with ReplayProgress(schedule, Console(file=out, force_terminal=True, width=120)) as progress:
        for moment, _jobs in schedule:
            progress.on_tick(moment)
    # Then the bar showed the simulated date while it ran and is gone (transient) at the end
    assert "2023-12-01" in out.getvalue()
    assert progress.total == len(schedule)
