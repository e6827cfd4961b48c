"""The times and row ids a request may name, and keyset / offset paging on ``(created_at, id)``: newest first,
so a deep page costs what the first does."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from backend.app.db.types import UTCDateTime
from src.exceptions import InvalidInput

# --- the times and row ids a request may name -------------------------------------------------------
# Both databases store far wider ranges, but a time outside this window is a typo, not a question: year 1 or
# 9999 with an offset does not even have a UTC form (Python raises OverflowError), and date arithmetic near
# the ends (week buckets, the driver's own conversions) fails. Row ids are INTEGER primary keys on both
# databases, so a cursor id above 2**31 - 1 can name no row (and PostgreSQL refuses it as a parameter).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive
MAX_ROW_ID = 2**31 - 1
TIME_RANGE_RULE = "expected a time from 1970-01-01T00:00:00Z up to (not including) 2200-01-01T00:00:00Z"


def checked_time(moment: datetime) -> datetime:
    """``moment`` in UTC, or ``ValueError`` (with ``TIME_RANGE_RULE``) when it lies outside the window the API
    serves; the one rule for query times (``from_date``, ``to_date``) and cursor times."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise ValueError(TIME_RANGE_RULE) from None
    if not EARLIEST_TIME <= utc < LATEST_TIME:
        raise ValueError(TIME_RANGE_RULE)
    return utc


# --- paging ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: int

    def encode(self) -> str:
        raw = f'["{self.created_at.isoformat()}",{self.id}]'.encode()  # the JSON ``decode`` reads; nothing to escape
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            created, row_id = json.loads(raw)
            created_at = datetime.fromisoformat(created)
            if created_at.tzinfo is None or not isinstance(row_id, int) or isinstance(row_id, bool):
                raise ValueError("bad cursor fields")
            if not 0 <= row_id <= MAX_ROW_ID:
                raise ValueError("row id out of range")
            created_at = checked_time(created_at)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput("cursor: expected a next_cursor value returned by this endpoint", cursor=token) from exc
        return cls(created_at, row_id)


@dataclass(slots=True)
class Page:
    rows: Sequence[Any]  # Core rows, or driver records for ``trade_page``: cheaper than ORM objects to serialise
    limit: int
    next_cursor: str | None
    total: int | None = None
    page: int | None = None
    page_size: int | None = None


@dataclass(frozen=True, slots=True)
class Paging:
    """``skip`` set: offset paging with a total; otherwise keyset paging from ``cursor`` (or the newest)."""

    limit: int
    cursor: str | None = None
    skip: int | None = None


async def paged(
    connection: AsyncConnection,
    query: Select[Any],
    created: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[int],
    paging: Paging,
) -> Page:
    if paging.cursor is not None and paging.skip is not None:
        raise InvalidInput("cursor: use either cursor or skip, not both")
    ordered = query.order_by(created.desc(), row_id.desc())
    total = None
    if paging.skip is not None:
        total = await connection.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        ordered = ordered.offset(paging.skip)
    elif paging.cursor is not None:
        cursor = Cursor.decode(paging.cursor)
        ordered = ordered.where(
            tuple_(created, row_id) < tuple_(literal(cursor.created_at, UTCDateTime()), literal(cursor.id))
        )
    rows = list(await connection.execute(ordered.limit(paging.limit + 1)))
    return page_of(rows, paging, lambda row: Cursor(getattr(row, created.key), getattr(row, row_id.key)), total)


def page_of(rows: Sequence[Any], paging: Paging, cursor_of: Callable[[Any], Cursor], total: int | None = None) -> Page:
    """The page from up to ``limit + 1`` rows (one more than asked tells whether a next page exists)."""
    next_cursor = None
    if len(rows) > paging.limit:
        rows = rows[: paging.limit]
        next_cursor = cursor_of(rows[-1]).encode()
    if paging.skip is None:
        return Page(rows, paging.limit, next_cursor)
    return Page(rows, paging.limit, next_cursor, total, paging.skip // paging.limit + 1, paging.limit)


def check_range(from_date: datetime | None, to_date: datetime | None) -> None:
    for name, moment in (("from_date", from_date), ("to_date", to_date)):
        if moment is not None:
            try:
                checked_time(moment)
            except ValueError as exc:
                raise InvalidInput(f"{name}: {exc}") from None
    if from_date is not None and to_date is not None and from_date >= to_date:
        raise InvalidInput("from_date: expected a time before to_date")


def in_range(
    column: InstrumentedAttribute[datetime], from_date: datetime | None, to_date: datetime | None
) -> list[ColumnElement[bool]]:
    check_range(from_date, to_date)
    conditions: list[ColumnElement[bool]] = []
    if from_date is not None:
        conditions.append(column >= from_date)
    if to_date is not None:
        conditions.append(column < to_date)
    return conditions
