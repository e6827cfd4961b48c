"""The backtest runs of ``POST /api/v1/backtests``: create, move through their statuses, read, list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.queries.paging import Page, Paging, paged
from backend.app.db.types import utcnow
from backend.app.models import BacktestRunRow
from src.domain.backtest_runs import BacktestStatus, sources_of

ACTIVE = (BacktestStatus.QUEUED, BacktestStatus.RUNNING)
# What a list shows of a run: everything but the result's arrays.
SUMMARY_COLUMNS = (
    BacktestRunRow.id,
    BacktestRunRow.status,
    BacktestRunRow.progress,
    BacktestRunRow.request,
    BacktestRunRow.requested_by,
    BacktestRunRow.metrics,
    BacktestRunRow.error,
    BacktestRunRow.created_at,
    BacktestRunRow.updated_at,
    BacktestRunRow.started_at,
    BacktestRunRow.finished_at,
)


class BacktestRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, request: dict[str, Any], requested_by: str, owner: str) -> int:
        async with self._sessions.begin() as session:
            row = BacktestRunRow(
                status=BacktestStatus.QUEUED, progress=0.0, request=request, requested_by=requested_by, owner=owner
            )
            session.add(row)
            await session.flush()
            return row.id

    async def get(self, run_id: int) -> BacktestRunRow | None:
        async with self._sessions() as session:
            return await session.get(BacktestRunRow, run_id)

    async def status_of(self, run_id: int) -> BacktestStatus | None:
        async with self._sessions() as session:
            return await session.scalar(select(BacktestRunRow.status).where(BacktestRunRow.id == run_id))

    async def page(self, paging: Paging) -> Page:
        async with self._sessions() as session:
            connection = await session.connection()
            return await paged(
                connection, select(*SUMMARY_COLUMNS), BacktestRunRow.created_at, BacktestRunRow.id, paging
            )

    async def count_active(self) -> int:
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(BacktestRunRow).where(BacktestRunRow.status.in_(ACTIVE))
            )
            return int(count or 0)

    async def move(self, run_id: int, target: BacktestStatus, **fields: Any) -> bool:
        """``target`` with ``fields`` when the run's status allows the move (``TRANSITIONS``); False otherwise,
        and nothing is written."""
        now = utcnow()
        values: dict[str, Any] = {"status": target, "updated_at": now, **fields}
        if target is BacktestStatus.RUNNING:
            values.setdefault("started_at", now)
        if target.finished:
            values.setdefault("finished_at", now)
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(BacktestRunRow)
                .where(BacktestRunRow.id == run_id, BacktestRunRow.status.in_(sources_of(target)))
                .values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_progress(self, run_id: int, progress: float) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(BacktestRunRow)
                .where(BacktestRunRow.id == run_id, BacktestRunRow.status == BacktestStatus.RUNNING)
                .values(progress=progress, updated_at=utcnow())
            )

    async def unfinished(self) -> list[Unfinished]:
        """The queued and running runs: who runs them (``host:pid`` of an API process) and their last update."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(BacktestRunRow.id, BacktestRunRow.owner, BacktestRunRow.status, BacktestRunRow.updated_at).where(
                    BacktestRunRow.status.in_(ACTIVE)
                )
            )
            return [Unfinished(*row) for row in rows]

    async def fail_unfinished(self, run_ids: list[int], status: BacktestStatus, reason: str) -> list[int]:
        """Those of ``run_ids`` still in ``status`` (queued or running) marked failed with ``reason``."""
        async with self._sessions.begin() as session:
            ids = list(
                await session.scalars(
                    select(BacktestRunRow.id).where(BacktestRunRow.id.in_(run_ids), BacktestRunRow.status == status)
                )
            )
            if ids:
                now = utcnow()
                await session.execute(
                    update(BacktestRunRow)
                    .where(BacktestRunRow.id.in_(ids), BacktestRunRow.status == status)
                    .values(status=BacktestStatus.FAILED, error=reason, updated_at=now, finished_at=now)
                )
            return ids


@dataclass(frozen=True, slots=True)
class Unfinished:
    id: int
    owner: str
    status: BacktestStatus
    updated_at: datetime


def summary(row: BacktestRunRow | Row[Any]) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in SUMMARY_COLUMNS}
