"""Pieces shared by several response models."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

# PostgreSQL text cannot hold NUL characters; such input is a 422, not a database error.
NO_NUL_PATTERN = r"^[^\x00]*$"
Reason = Annotated[
    str, Field(min_length=3, max_length=500, pattern=NO_NUL_PATTERN, description="Why; recorded in the audit log")
]


def _fixed_point(value: Decimal) -> str:
    """``0.00000000``, never ``0E-8``: a quantized zero must not reach a client in scientific notation."""
    return format(value, "f")


# Money and other exact decimals: Decimal in Python, a fixed-point string in JSON.
Money = Annotated[Decimal, PlainSerializer(_fixed_point, return_type=str, when_used="json")]


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
