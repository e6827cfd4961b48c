"""What the AI adviser decided, what the validator made of it, and what it cost."""

from __future__ import annotations

from fastapi import APIRouter

from backend.app.api.deps import ReadConnection, Reader
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
from backend.app.db.queries.decisions import list_ai_decisions
from backend.app.schemas.ai_decisions import AIDecisionPage
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
