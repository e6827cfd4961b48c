"""The version 1 router: every resource under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from backend.app.api.deps import AUTH_RESPONSES
from backend.app.api.v1.endpoints import (
    ai_decisions,
    auth,
    backtests,
    bot_control,
    events,
    instances,
    market,
    orders,
    portfolio,
    research,
    trades,
)

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(auth.router)
for module in (trades, orders, ai_decisions, portfolio, bot_control, instances, market, backtests, research):
    api_router.include_router(module.router, responses=AUTH_RESPONSES)
api_router.include_router(events.router)
