"""Research runs: stored by ``backtest.py optimize | monte-carlo | ai-value``, read through the API, and their
chosen parameters applied to the bot.

Applying a run (``POST /api/v1/research/runs/{id}/apply`` with ``{"confirm": true}``, or ``backtest.py ...
--apply`` after its confirmation) writes the run-time settings ``strategy.name`` and ``strategy.params`` exactly
as ``PUT /api/v1/bot/config`` does: each value checked by its own rule, the pair checked against the strategy's
declared parameter space as the scheduler builds it, both keys written in one transaction with one audit line
each in ``system_logs`` (who, the previous and the new value, the reason naming the run). The scheduler takes
them between jobs (``backend/app/core/runtime_settings.py``), as any run-time settings change.

``DatabaseRunStore`` is the ``src.research.cli_support.RunStore`` of the command line: a database at the newest
migration, never created or migrated by a research run.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.core.runtime_settings import strategy_problems
from backend.app.db.migrations import ensure_schema_current
from backend.app.db.recorded_decisions import display_url
from backend.app.db.repositories.bot import BotRepository, ConfigWrite
from backend.app.db.repositories.research_runs import ResearchRunRepository
from backend.app.db.session import create_engine, session_factory
from src.config.runtime import RUNTIME_KEYS, runtime_value_to_json, validate_runtime_value
from src.config.runtime_state import with_value
from src.config.settings import Settings
from src.domain.research_runs import ResearchKind, ResearchStatus
from src.exceptions import ConfigurationError, DatabaseUnavailable, InvalidInput
from src.research.cli_support import ChosenParams
from src.utils.logger import get_logger

log = get_logger(__name__)

STRATEGY_NAME, STRATEGY_PARAMS = "strategy.name", "strategy.params"
T = TypeVar("T")


class RunNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class AppliedRun:
    run_id: int
    values: dict[str, Any]  # run-time key -> the value written
    by: str
    reason: str


def runtime_values(chosen: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """The run-time settings a run's chosen parameters become, checked as the scheduler will check them;
    ``InvalidInput`` (``field: message``) when they would be refused."""
    if not chosen:
        raise InvalidInput("chosen: this run chose no parameters to apply")
    values: dict[str, Any] = {}
    candidate = settings
    for key, value in ((STRATEGY_NAME, chosen.get("strategy")), (STRATEGY_PARAMS, chosen.get("params") or {})):
        checked = validate_runtime_value(key, value)
        values[key] = runtime_value_to_json(checked)
        candidate = with_value(candidate, key, checked)
    if problems := strategy_problems(candidate):
        raise InvalidInput(f"chosen: {'; '.join(problems)}")
    return values


def _audit(key: str, value: Any, by: str, reason: str, previous: Any) -> str:
    """The audit line of ``PUT /api/v1/bot/config``'s format."""
    return f"bot config {key}: {previous!r} -> {value!r} by {by}: {reason}"


async def apply_run(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, run_id: int, *, by: str, reason: str
) -> AppliedRun:
    """Write run ``run_id``'s chosen strategy and parameters as the bot's run-time settings (audited).
    ``RunNotFound``; ``InvalidInput`` when the run chose none or the scheduler would refuse them."""
    runs = ResearchRunRepository(sessions)
    row = await runs.get(run_id)
    if row is None:
        raise RunNotFound(run_id)
    if row.status is not ResearchStatus.DONE:
        raise InvalidInput(f"status: research run {run_id} is {row.status.value}; only a finished run is applied")
    values = runtime_values(row.chosen, settings)
    context = {"reason": reason, "research_run": run_id}
    writes = [
        ConfigWrite(
            key,
            value,
            RUNTIME_KEYS[key].description,
            audit=partial(_audit, key, value, by, reason),
            audit_context=context,
        )
        for key, value in values.items()
    ]
    await BotRepository(sessions).set_configs(writes, updated_by=by)  # both keys or none
    await runs.mark_applied(run_id, by)
    log.info("research.applied", run=run_id, by=by, strategy=values[STRATEGY_NAME])
    return AppliedRun(run_id, values, by, reason)


class DatabaseRunStore:
    """The command line's run store over the database at ``url`` (``src.research.cli_support.RunStore``)."""

    def __init__(self, url: str, settings: Settings) -> None:
        self._url = url
        self._settings = settings
        self.where = display_url(url)

    def start(self, kind: ResearchKind, request: dict[str, Any]) -> int:
        async def work(sessions: async_sessionmaker[AsyncSession]) -> int:
            return await ResearchRunRepository(sessions).create(
                kind, request, created_by=f"cli:{_user()}", status=ResearchStatus.RUNNING
            )

        return self._run(work)

    def finish(self, run_id: int, result: dict[str, Any], summary: dict[str, Any], chosen: ChosenParams | None) -> None:
        async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
            await ResearchRunRepository(sessions).finish(
                run_id,
                ResearchStatus.DONE,
                result=result,
                summary=summary,
                chosen=None if chosen is None else chosen.to_dict(),
            )

        self._run(work)

    def fail(self, run_id: int, error: str) -> None:
        async def work(sessions: async_sessionmaker[AsyncSession]) -> None:
            await ResearchRunRepository(sessions).finish(run_id, ResearchStatus.FAILED, error=error)

        self._run(work)

    def apply(self, run_id: int, *, by: str, reason: str) -> dict[str, Any]:
        async def work(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
            return (await apply_run(sessions, self._settings, run_id, by=by, reason=reason)).values

        return self._run(work)

    def _run(self, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
        return asyncio.run(self._with_database(work))

    async def _with_database(self, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
        try:
            parsed = make_url(self._url)
        except ArgumentError:
            raise ConfigurationError(f"not a database URL: {self.where}") from None
        sqlite_file = Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None
        if sqlite_file is not None and not await asyncio.to_thread(sqlite_file.is_file):
            raise ConfigurationError(f"no database file {parsed.database} (create it with `make migrate`)")
        try:
            engine = create_engine(self._url)
        except (ArgumentError, ImportError) as exc:
            raise ConfigurationError(f"{self.where}: {type(exc).__name__}: {exc}") from None
        try:
            await ensure_schema_current(engine)
            return await work(session_factory(engine))
        except (OSError, SQLAlchemyError) as exc:
            raise DatabaseUnavailable(f"{self.where}: {type(exc).__name__}: {exc}") from None
        finally:
            await engine.dispose()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
