"""What the AI adviser decided, what the validator made of it, and what it cost."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from backend.app.api.deps import ReadConnection, Reader, SettingsDep, invalid
from backend.app.api.v1.endpoints._params import (
    Cursor,
    FromDate,
    Limit,
    Skip,
    Symbol,
    ToDate,
    page_model,
    paging,
    query_error,
)
from backend.app.db.queries.decisions import ai_spend_usd, list_ai_decisions
from backend.app.schemas.ai_decisions import AIDecisionPage
from backend.app.schemas.market import AIUsageOut
from src.ai.models import AIPurpose
from src.domain.decisions import Decision
from src.exceptions import InvalidInput

router = APIRouter(prefix="/ai", tags=["ai"])


@router.get("/decisions", response_model=AIDecisionPage, summary="List AI decisions, newest first")
async def list_decisions(
    connection: ReadConnection,
    _: Reader,
    symbol: Symbol = None,
    decision: Decision | None = None,
    final_decision: Decision | None = None,
    overridden: bool | None = None,
    purpose: AIPurpose = AIPurpose.DECISION,
    from_date: FromDate = None,
    to_date: ToDate = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    skip: Skip = None,
) -> AIDecisionPage:
    try:
        page = await list_ai_decisions(
            connection,
            paging(limit, cursor, skip),
            symbol=symbol,
            decision=decision,
            final_decision=final_decision,
            overridden=overridden,
            purpose=purpose.value,
            from_date=from_date,
            to_date=to_date,
        )
    except InvalidInput as exc:
        raise query_error(exc) from None
    return page_model(AIDecisionPage, page)


@router.get("/usage", response_model=AIUsageOut, summary="Model calls and their cost against the AI budgets")
async def ai_usage(
    connection: ReadConnection,
    settings: SettingsDep,
    _: Reader,
    day: Annotated[
        str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="UTC day YYYY-MM-DD; today by default")
    ] = None,
) -> AIUsageOut:
    """``day`` (UTC) and its month; today by default (the dashboard passes a replay's last simulated day)."""
    try:
        which = date.fromisoformat(day) if day is not None else datetime.now(UTC).date()
    except ValueError:
        raise invalid(("query", "day"), f"not a calendar day: {day}") from None
    start = datetime.combine(which, time(), UTC)
    month_start = start.replace(day=1)
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    day_calls, day_cost = await ai_spend_usd(connection, start, start + timedelta(days=1))
    month_calls, month_cost = await ai_spend_usd(connection, month_start, month_end)
    return AIUsageOut(
        day=which,
        day_calls=day_calls,
        day_cost_usd=day_cost,
        daily_budget_usd=settings.ai.daily_budget_usd,
        month_calls=month_calls,
        month_cost_usd=month_cost,
        monthly_budget_usd=settings.ai.monthly_budget_usd,
    )
