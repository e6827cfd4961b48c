"""The research runs of ``backtest.py optimize | monte-carlo | ai-value``: store, read, list, mark applied."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.queries.paging import Page, Paging, paged
from backend.app.db.types import utcnow
from backend.app.models import ResearchRunRow
from src.domain.research_runs import ResearchKind, ResearchStatus
from src.utils.logger import redactor

# What a list shows of a run: everything but the full result.
SUMMARY_COLUMNS = (
    ResearchRunRow.id,
    ResearchRunRow.kind,
    ResearchRunRow.status,
    ResearchRunRow.params,
    ResearchRunRow.summary,
    ResearchRunRow.chosen,
    ResearchRunRow.created_by,
    ResearchRunRow.error,
    ResearchRunRow.applied_at,
    ResearchRunRow.applied_by,
    ResearchRunRow.created_at,
    ResearchRunRow.updated_at,
)


class ResearchRunRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(
        self,
        kind: ResearchKind,
        params: dict[str, Any],
        *,
        created_by: str,
        status: ResearchStatus = ResearchStatus.DONE,
        result: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        chosen: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> int:
        async with self._sessions.begin() as session:
            row = ResearchRunRow(
                kind=kind,
                status=status,
                params=params,
                result=result,
                summary=summary,
                chosen=chosen,
                created_by=created_by,
                error=error,
            )
            session.add(row)
            await session.flush()
            return row.id

    async def get(self, run_id: int) -> ResearchRunRow | None:
        async with self._sessions() as session:
            return await session.get(ResearchRunRow, run_id)

    async def page(self, paging: Paging, kind: ResearchKind | None = None) -> Page:
        query = select(*SUMMARY_COLUMNS)
        if kind is not None:
            query = query.where(ResearchRunRow.kind == kind)
        async with self._sessions() as session:
            connection = await session.connection()
            return await paged(connection, query, ResearchRunRow.created_at, ResearchRunRow.id, paging)

    async def finish(self, run_id: int, status: ResearchStatus, **fields: Any) -> None:
        """A running run ends ``status`` (done or failed) with ``fields`` (result, summary, chosen, error; the error
        text without secrets, as the model's validator does for rows it writes)."""
        if fields.get("error") is not None:
            fields["error"] = redactor.scrub(fields["error"])
        async with self._sessions.begin() as session:
            await session.execute(
                update(ResearchRunRow)
                .where(ResearchRunRow.id == run_id, ResearchRunRow.status == ResearchStatus.RUNNING)
                .values(status=status, updated_at=utcnow(), **fields)
            )

    async def mark_applied(self, run_id: int, by: str) -> None:
        now = utcnow()
        async with self._sessions.begin() as session:
            await session.execute(
                update(ResearchRunRow)
                .where(ResearchRunRow.id == run_id)
                .values(applied_at=now, applied_by=by, updated_at=now)
            )


def summary(row: ResearchRunRow | Row[Any]) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in SUMMARY_COLUMNS}
