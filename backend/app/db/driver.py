"""Read-only statements run on the database driver itself, for the API's hottest reads.

SQLAlchemy's async execution path (a greenlet hop, the cursor adapter, a ``Row`` per row) costs more CPU than
PostgreSQL spends answering a page of 50 trades: 567 µs against 184 µs per page on asyncpg directly
(``benchmarks/README.md``). On PostgreSQL a Core statement is therefore compiled once and its SQL run with
asyncpg (which prepares it once per connection); on SQLite it runs through SQLAlchemy as usual.

The driver path skips SQLAlchemy's type processing both ways, so a statement run here must select columns whose
driver values are what the caller serves (see ``queries.trades.served_columns``; JSON is decoded by the codec SQLAlchemy
installs on each connection, ``timestamptz`` comes UTC-aware, enum columns come as their stored strings), and its
parameters must be values the driver takes as they are (aware datetimes, ints, strings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

# id(statement) -> (statement, its compiled form); the statement is held so its id stays unique. Callers pass
# statements they build once and keep (one per query shape), so this stays small.
_COMPILED: dict[int, tuple[ClauseElement, SQLCompiler]] = {}


def _compiled(statement: ClauseElement, connection: AsyncConnection) -> SQLCompiler:
    entry = _COMPILED.get(id(statement))
    if entry is None or entry[0] is not statement:
        compiled = statement.compile(dialect=connection.dialect)
        if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
            raise TypeError("the driver path needs a statement compiled to positional parameters")
        entry = (statement, compiled)
        _COMPILED[id(statement)] = entry
    return entry[1]


async def _driver_fetch(
    connection: AsyncConnection, statement: ClauseElement, parameters: Mapping[str, Any]
) -> list[Any]:
    compiled = _compiled(statement, connection)
    positions = compiled.positiontup
    assert positions is not None  # _compiled refuses a statement without positional parameters
    values = compiled.construct_params(parameters)  # with the statement's own literals; a missing value raises
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    # driver_connection is Optional only for a pool entry that was closed; this one was just checked out.
    return await driver.fetch(compiled.string, *(values[name] for name in positions))  # type: ignore[union-attr]


async def fetch_rows(
    connection: AsyncConnection, statement: ClauseElement, parameters: Mapping[str, Any]
) -> Sequence[Any]:
    """The rows of ``statement``, each indexable by position and iterable as its values."""
    if connection.dialect.driver != "asyncpg":
        return list(await connection.execute(statement, parameters))  # type: ignore[call-overload]
    return await _driver_fetch(connection, statement, parameters)


class _Named:
    """A driver record read by attribute, like SQLAlchemy's ``Row``."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None


async def fetch_one(connection: AsyncConnection, statement: ClauseElement, parameters: Mapping[str, Any]) -> Any:
    """The one row of ``statement``, its columns read by attribute (``row.state``); ``LookupError`` unless there is
    exactly one."""
    rows = await fetch_rows(connection, statement, parameters)
    if len(rows) != 1:
        raise LookupError(f"expected one row, got {len(rows)}")
    return rows[0] if isinstance(rows[0], Row) else _Named(rows[0])
