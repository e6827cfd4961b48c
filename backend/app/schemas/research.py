"""Research runs through the API: what a run reads as, and the request that applies its parameters."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from backend.app.schemas.common import ApiModel, PageInfo, Reason
from src.domain.research_runs import ResearchKind, ResearchStatus


class ResearchRunSummary(ApiModel):
    id: str
    kind: ResearchKind = Field(description="optimize, monte_carlo or ai_value")
    status: ResearchStatus
    params: dict[str, Any] = Field(description="What was asked: strategy, params, symbol(s), period, options")
    summary: dict[str, Any] | None = Field(description="The headline numbers (kind-specific)")
    chosen: dict[str, Any] | None = Field(description="{strategy, params} that apply would make the bot trade")
    created_by: str
    error: str | None
    applied_at: datetime | None = Field(description="When its parameters were last applied to the bot")
    applied_by: str | None
    created_at: datetime
    updated_at: datetime


class ResearchRunOut(ResearchRunSummary):
    result: dict[str, Any] | None = Field(description="The sub-command's JSON report (as written by --json)")


class ResearchRunPage(PageInfo):
    items: list[ResearchRunSummary]


class ResearchApplyIn(ApiModel):
    confirm: Literal[True] = Field(description="Must be true: the bot will trade these parameters")
    reason: Reason | None = Field(default=None, description="Why; recorded in the audit log (default names the run)")


class ResearchApplyOut(ApiModel):
    id: str
    values: dict[str, Any] = Field(description="The run-time settings written: strategy.name and strategy.params")
    applied_by: str
    reason: str
    message: str
