"""Query parameters shared by the list endpoints."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Query, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator

from backend.app.api.deps import invalid
from backend.app.db.queries.paging import Page, Paging, checked_time
from src.exceptions import InvalidInput

MAX_LIMIT = 500
SYMBOL_PATTERN = r"^[A-Z]{2,5}-[A-Z0-9]{1,15}$"

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (1..{MAX_LIMIT})")]
Cursor = Annotated[
    str | None,
    Query(min_length=1, max_length=200, description="`next_cursor` of the previous page (keyset paging)"),
]
Skip = Annotated[
    int | None,
    Query(ge=0, le=1_000_000, description="Offset paging (compatibility): also returns total, page, page_size"),
]
Symbol = Annotated[str | None, Query(pattern=SYMBOL_PATTERN, description="Market, e.g. KRW-BTC")]
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    """Only RFC 3339 text with a time zone; pydantic alone would also take numbers as Unix times."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("expected an RFC 3339 time with a time zone, e.g. 2026-01-05T00:00:00Z")
    return value


# RFC 3339 text first, then the window of times the API serves (``queries.paging.checked_time``), as UTC
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(checked_time)]
FromDate = Annotated[Rfc3339 | None, Query(description="Inclusive start, with a time zone (RFC 3339)")]
ToDate = Annotated[Rfc3339 | None, Query(description="Exclusive end, with a time zone (RFC 3339)")]

M = TypeVar("M", bound=BaseModel)


def paging(limit: int, cursor: str | None, skip: int | None) -> Paging:
    if cursor is not None and skip is not None:
        raise invalid(("query", "cursor"), "use either cursor or skip, not both")
    return Paging(limit=limit, cursor=cursor, skip=skip)


def query_error(exc: InvalidInput) -> Exception:
    field = exc.message.split(":", 1)[0] if ":" in exc.message else "query"
    return invalid(("query", field), exc.message.split(": ", 1)[-1])


def page_model(model: type[M], page: Page) -> M:
    """One validation call for the whole page (items are read from the rows' attributes)."""
    fields: dict[str, Any] = {
        "items": page.rows,
        "limit": page.limit,
        "next_cursor": page.next_cursor,
        "total": page.total,
        "page": page.page,
        "page_size": page.page_size,
    }
    return model.model_validate(fields, from_attributes=True)


def row_id(text: str, what: str) -> int:
    """A path's numeric row id (an integer column: at most 2**31 - 1); anything else is a 404 naming ``what``."""
    if not text.isdigit() or len(text) > 10 or int(text) > 2**31 - 1:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {what} {text!r}")
    return int(text)
