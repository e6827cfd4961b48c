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

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect, Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util.concurrency import greenlet_spawn

# id(statement) -> (statement, its compiled form); the statement is held so its id stays unique. Callers pass
# statements they build once and keep (one per query shape), so this stays small.
_COMPILED: dict[int, tuple[ClauseElement, SQLCompiler]] = {}


@dataclass(frozen=True, slots=True)
class DriverConnection:
    """A pooled connection's asyncpg connection, used directly (``driver_connection``)."""

    dialect: Dialect
    driver: Any  # asyncpg.Connection


Readable = AsyncConnection | DriverConnection


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[DriverConnection]:
    """A connection of ``engine``'s pool (PostgreSQL on asyncpg), without SQLAlchemy's ``Connection`` around it:
    one checkout and one check-in, 25 µs of CPU against 70 µs for ``engine.connect()`` with autocommit and
    ``get_raw_connection()``. Statements run outside a transaction (autocommit), as ``fetch_rows`` runs them; a
    connection that closed under the request is invalidated, so the pool replaces it."""
    fairy = await greenlet_spawn(engine.sync_engine.raw_connection)
    try:
        yield DriverConnection(engine.dialect, fairy.driver_connection)
    finally:
        await greenlet_spawn(_check_in, fairy)


def _check_in(fairy: Any) -> None:
    driver = fairy.driver_connection
    if driver is not None and driver.is_closed():
        fairy.invalidate()  # the pool opens a new one for the next checkout
    fairy.close()


def _compiled(statement: ClauseElement, dialect: Dialect) -> SQLCompiler:
    entry = _COMPILED.get(id(statement))
    if entry is None or entry[0] is not statement:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
            raise TypeError("the driver path needs a statement compiled to positional parameters")
        entry = (statement, compiled)
        _COMPILED[id(statement)] = entry
    return entry[1]


async def _driver_fetch(connection: Readable, statement: ClauseElement, parameters: Mapping[str, Any]) -> list[Any]:
    compiled = _compiled(statement, connection.dialect)
    positions = compiled.positiontup
    assert positions is not None  # _compiled refuses a statement without positional parameters
    values = compiled.construct_params(parameters)  # with the statement's own literals; a missing value raises
    if isinstance(connection, DriverConnection):
        driver = connection.driver
    else:
        # driver_connection is Optional only for a pool entry that was closed; this one was just checked out.
        driver = (await connection.get_raw_connection()).driver_connection
    return await driver.fetch(compiled.string, *(values[name] for name in positions))


async def fetch_rows(connection: Readable, statement: ClauseElement, parameters: Mapping[str, Any]) -> Sequence[Any]:
    """The rows of ``statement``, each indexable by position and iterable as its values. A ``DriverConnection``
    is always asyncpg; an ``AsyncConnection`` on another driver runs the statement through SQLAlchemy."""
    if isinstance(connection, AsyncConnection) and connection.dialect.driver != "asyncpg":
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


async def fetch_one(connection: Readable, statement: ClauseElement, parameters: Mapping[str, Any]) -> Any:
    """The one row of ``statement``, its columns read by attribute (``row.state``); ``LookupError`` unless there is
    exactly one."""
    rows = await fetch_rows(connection, statement, parameters)
    if len(rows) != 1:
        raise LookupError(f"expected one row, got {len(rows)}")
    return rows[0] if isinstance(rows[0], Row) else _Named(rows[0])
