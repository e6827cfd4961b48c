"""Dependencies of the routes: settings, database session, and who is calling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from starlette.datastructures import State

from backend.app.core.security import InvalidToken, constant_time_equals, decode_access_token
from backend.app.db.driver import Readable, driver_connection
from src.config.settings import Settings
from src.exceptions import InvalidInput
from src.utils.logger import get_logger

log = get_logger(__name__)

TOKEN_URL = "/api/v1/auth/token"

api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
bearer_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False, scheme_name="OAuth2Password")


# Dependencies are ``async def`` even when they do not await: FastAPI runs plain ``def`` ones in a thread pool.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


# How long a write waits for its turn on SQLite before the API answers 503 with Retry-After.
WRITE_WAIT_SECONDS = 10.0
RETRY_AFTER_SECONDS = 1


class DatabaseBusy(Exception):
    """The database could not take this request now (writes queued too long, pool exhausted, SQLite locked):
    the API answers 503 with ``Retry-After`` instead of a 500."""


_SQLITE_BUSY = ("database is locked", "database table is locked")


def busy_response(exc: Exception) -> JSONResponse:
    """503 with Retry-After, never a 500, when the database cannot take the request now: API writes queued
    too long on SQLite (``DatabaseBusy``), the connection pool timed out, or SQLite's file lock is held (by the
    scheduler writing, for example) past the busy timeout. Any other error is raised again (a 500)."""
    if not isinstance(exc, DatabaseBusy | PoolTimeout | OperationalError) or (
        isinstance(exc, OperationalError) and not any(text in str(exc.orig) for text in _SQLITE_BUSY)
    ):
        raise exc
    log.warning("api.database_busy", error=type(exc).__name__)
    return JSONResponse(
        {"detail": "database busy; retry shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def get_sessions(request: Request) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The sessions for a write. On SQLite (one writer at a time per file) API writes take turns through
    ``write_gate``, so 40 concurrent writers queue instead of competing for the file lock and the pool; a write
    that cannot get its turn within ``WRITE_WAIT_SECONDS`` is answered 503."""
    gate = request.app.state.write_gate
    if gate is None:
        yield request.app.state.sessions
        return
    try:
        async with asyncio.timeout(WRITE_WAIT_SECONDS):
            await gate.__aenter__()
    except TimeoutError:
        raise DatabaseBusy("writes are queued; retry shortly") from None
    try:
        yield request.app.state.sessions
    finally:
        await gate.__aexit__(None, None, None)


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A read connection in autocommit, taken in arrival order (``FairGate``); writes go through repositories
    on ``get_sessions``."""
    async with request.app.state.db_gate, request.app.state.read_engine.connect() as connection:
        yield connection


@asynccontextmanager
async def read_connection_of(state: State) -> AsyncIterator[AsyncConnection]:
    """A read connection of the app with this ``state``, taken in arrival order (``FairGate``)."""
    async with state.db_gate, state.read_engine.connect() as connection:
        yield connection


@asynccontextmanager
async def page_connection_of(state: State) -> AsyncIterator[Readable]:
    """``read_connection_of`` for keyset pages (``driver.fetch_rows``): on PostgreSQL the pooled asyncpg
    connection itself (``driver.driver_connection``), without SQLAlchemy's ``Connection`` around it."""
    if state.read_engine.dialect.driver != "asyncpg":
        async with read_connection_of(state) as connection:
            yield connection
        return
    async with state.db_gate, driver_connection(state.read_engine) as driver:
        yield driver


def read_connection(request: Request) -> AbstractAsyncContextManager[AsyncConnection]:
    """``get_connection`` for use inside an endpoint (``async with read_connection(request) as connection``):
    the hottest reads skip FastAPI's machinery for a yield dependency, and take their connection only after
    authentication and parameter validation passed."""
    return read_connection_of(request.app.state)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ReadConnection = Annotated[AsyncConnection, Depends(get_connection)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``api-key``, ``user:<name>``, or ``anonymous`` (public reads only)."""

    name: str

    @property
    def authenticated(self) -> bool:
        return self.name != "anonymous"


ANONYMOUS = Principal("anonymous")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def identify(settings: Settings, api_key: str | None, token: str | None) -> Principal | None:
    """The caller, ``None`` without credentials; raises 401 (``HTTPException``) for credentials that are wrong.
    The one credential check of the API, its routes and its WebSocket alike."""
    api = settings.api
    if api_key is not None:
        expected = api.api_key.get_secret_value() if api.api_key else ""
        if expected and constant_time_equals(api_key, expected):
            return Principal("api-key")
        raise _unauthorized("invalid API key")
    if token is not None:
        secret = api.jwt_secret.get_secret_value() if api.jwt_secret else ""
        if not secret:
            raise _unauthorized("bearer tokens are not enabled (API_JWT_SECRET is not set)")
        try:
            return Principal("user:" + decode_access_token(token, secret))
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from None
    return None


async def require_reader(
    settings: SettingsDep,
    api_key: Annotated[str | None, Security(api_key_scheme)],
    token: Annotated[str | None, Security(bearer_scheme)],
) -> Principal:
    principal = identify(settings, api_key, token)
    if principal is not None:
        return principal
    if settings.api.public_read:
        return ANONYMOUS
    raise _unauthorized("authentication required: send X-API-Key or Authorization: Bearer <token>")


async def require_writer(
    settings: SettingsDep,
    api_key: Annotated[str | None, Security(api_key_scheme)],
    token: Annotated[str | None, Security(bearer_scheme)],
) -> Principal:
    principal = identify(settings, api_key, token)
    if principal is None:
        raise _unauthorized("authentication required: send X-API-Key or Authorization: Bearer <token>")
    return principal


Reader = Annotated[Principal, Depends(require_reader)]
Writer = Annotated[Principal, Depends(require_writer)]


def invalid(location: tuple[str, ...], error: InvalidInput | str) -> RequestValidationError:
    """A 422 in FastAPI's own shape, for input that only the query layer can judge (cursor, ranges)."""
    message = error.message if isinstance(error, InvalidInput) else error
    detail: dict[str, Any] = {"loc": location, "msg": message, "type": "value_error"}
    return RequestValidationError([detail])


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or expired credentials"},
    429: {"description": "Rate limit exceeded; see Retry-After"},
}

BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request body (not parseable as the declared content type)"},
    413: {"description": "Request body larger than API_MAX_BODY_BYTES"},
}

WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"description": "The database is busy (writes queued, SQLite locked); retry after Retry-After seconds"},
}
