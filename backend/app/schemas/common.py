"""Pieces shared by several response models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class PageInfo(ApiModel):
    """Keyset paging: pass ``next_cursor`` back as ``cursor`` for the next page (``null`` on the last)."""

    limit: int = Field(description="Most items on this page")
    next_cursor: str | None = Field(description="Opaque cursor of the next page; null when this is the last")
    total: int | None = Field(default=None, description="Matching items in all pages (only with `skip`)")
    page: int | None = Field(default=None, description="1-based page number (only with `skip`)")
    page_size: int | None = Field(default=None, description="Page size (only with `skip`)")


class ErrorResponse(ApiModel):
    detail: str
