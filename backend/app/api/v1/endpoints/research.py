"""Research runs (``backtest.py optimize | monte-carlo | ai-value``): list, read, and apply a run's chosen
strategy and parameters to the bot as run-time settings (with ``{"confirm": true}``; audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from backend.app.api.deps import (
    AUTH_RESPONSES,
    BODY_RESPONSES,
    WRITE_RESPONSES,
    Reader,
    SessionsDep,
    SettingsDep,
    Writer,
    invalid,
)
from backend.app.api.v1.endpoints._params import Cursor, Limit, Skip, paging, row_id
from backend.app.db.repositories.research_runs import ResearchRunRepository, summary
from backend.app.schemas.research import (
    ResearchApplyIn,
    ResearchApplyOut,
    ResearchRunOut,
    ResearchRunPage,
    ResearchRunSummary,
)
from backend.app.services.research_runs import RunNotFound, apply_run
from src.domain.research_runs import ResearchKind
from src.exceptions import InvalidInput

router = APIRouter(prefix="/research", tags=["research"])

NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"description": "No research run with this id"}}
Kind = Annotated[ResearchKind | None, Query(description="Only runs of this kind")]


@router.get("/runs", response_model=ResearchRunPage, summary="Research runs, newest first (without their result)")
async def list_research_runs(
    sessions: SessionsDep, _: Reader, limit: Limit = 50, cursor: Cursor = None, skip: Skip = None, kind: Kind = None
) -> ResearchRunPage:
    try:
        page = await ResearchRunRepository(sessions).page(paging(limit, cursor, skip), kind)
    except InvalidInput as exc:
        raise invalid(("query", "cursor"), exc.message.split(": ", 1)[-1]) from None
    items = [ResearchRunSummary.model_validate({**summary(row), "id": str(row.id)}) for row in page.rows]
    return ResearchRunPage(
        items=items,
        limit=page.limit,
        next_cursor=page.next_cursor,
        total=page.total,
        page=page.page,
        page_size=page.page_size,
    )


@router.get(
    "/runs/{run_id}",
    response_model=ResearchRunOut,
    responses=NOT_FOUND,
    summary="A research run: what was asked, its headline numbers, its full JSON result and what it chose",
)
async def get_research_run(run_id: str, sessions: SessionsDep, _: Reader) -> ResearchRunOut:
    row = await ResearchRunRepository(sessions).get(row_id(run_id, "research run"))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no research run {run_id!r}")
    return ResearchRunOut.model_validate({**summary(row), "id": str(row.id), "result": row.result})


@router.post(
    "/runs/{run_id}/apply",
    response_model=ResearchApplyOut,
    responses=AUTH_RESPONSES | BODY_RESPONSES | WRITE_RESPONSES | NOT_FOUND,
    summary="Apply the run's chosen strategy and parameters to the bot as run-time settings (needs confirm: true)",
)
async def apply_research_run(
    run_id: str, body: ResearchApplyIn, sessions: SessionsDep, settings: SettingsDep, who: Writer
) -> ResearchApplyOut:
    number = row_id(run_id, "research run")
    reason = body.reason or f"research run {number}"
    try:
        applied = await apply_run(sessions, settings, number, by=who.name, reason=reason)
    except RunNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no research run {run_id!r}") from None
    except InvalidInput as exc:
        field, _, message = exc.message.partition(": ")
        raise invalid(("body", field) if message else ("body",), message or exc.message) from None
    return ResearchApplyOut(
        id=str(number),
        values=applied.values,
        applied_by=applied.by,
        reason=applied.reason,
        message="run-time settings strategy.name and strategy.params written; the scheduler applies them before "
        "its next job (GET /api/v1/bot/config shows requested and applied)",
    )
