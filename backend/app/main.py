"""The FastAPI application: ``create_app(settings)``, and ``app`` for ``uvicorn backend.app.main:app``.

Run with ``python -m backend.app.main`` (binds API_HOST:API_PORT) or any ASGI server.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from backend.app.api.deps import DatabaseBusy, busy_response
from backend.app.api.docs import add_offline_docs
from backend.app.api.gate import FairGate
from backend.app.api.hot_reads import HotReads
from backend.app.api.middleware import EdgeMiddleware
from backend.app.api.rate_limit import rate_limiter_for
from backend.app.api.system import router as system_router
from backend.app.api.v1.api import api_router
from backend.app.core.config import check_api_settings
from backend.app.core.observability import close_sentry, init_sentry
from backend.app.db.migrations import ensure_schema_current
from backend.app.db.repositories.backtests import BacktestRepository
from backend.app.db.session import engine_from_config, session_factory
from backend.app.services.backtests import BacktestPool
from backend.app.services.bot_status import BotStatusReader
from backend.app.services.event_stream import EventBroadcaster
from backend.app.services.metrics import ApiMetrics
from backend.app.services.read_cache import ReadCache
from src.config.bootstrap import EXIT_CONFIGURATION_ERROR, load_settings_or_exit
from src.config.settings import Settings, get_settings
from src.exceptions import ConfigurationError, DatabaseNotMigratedError, DatabaseUnavailable
from src.utils.logger import get_logger, redactor

log = get_logger(__name__)

DASHBOARD_DIR = Path(__file__).parent / "dashboard"

DESCRIPTION = """Trades, orders, AI decisions, portfolio, and bot status and control of the Upbit trading bot.

Authenticate with the `X-API-Key` header or a bearer token from `POST /api/v1/auth/token`.
Money is a decimal string. Lists are newest first; pass `next_cursor` back as `cursor` for the next page."""


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "invalid")), "type": error.get("type", "")}
        for error in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _database_busy(_: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After for a busy database (``deps.busy_response``); any other database error stays a 500."""
    return busy_response(exc)


# Young-generation collections every 20,000 net allocations instead of 700: a page of trades allocates
# thousands of short-lived objects, so the default ran a collection several times per request.
GC_THRESHOLDS = (20_000, 10, 10)


def _freeze_startup_objects() -> None:
    """Move what start-up allocated (routes, schemas, models, SQLAlchemy metadata) out of the garbage collector's
    reach: otherwise every full collection walks those long-lived objects again, a pause that all requests in
    flight wait for (it showed as p99 well above the median under load). Once per process: frozen objects are
    never collected, so apps built later in the same process (tests) are left to the collector."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        await ensure_schema_current(app.state.engine)
    except (DatabaseNotMigratedError, DatabaseUnavailable) as exc:
        log.error("api.refused_to_start", reason=exc.message)
        await app.state.rate_limiter.aclose()
        await app.state.engine.dispose()
        raise
    init_sentry(app.state.settings, "api")
    await app.state.backtests.fail_leftovers()
    app.state.metrics.database.start_warm_up()
    await app.state.events.start()
    log.info("api.started", database=app.state.engine.dialect.name)
    _freeze_startup_objects()
    try:
        yield
    finally:
        await app.state.events.aclose()
        await app.state.backtests.aclose()
        await app.state.metrics.database.aclose()
        await app.state.rate_limiter.aclose()
        await app.state.engine.dispose()
        close_sentry()


def _mount_dashboard(app: FastAPI) -> None:
    """The operator console (docs/DASHBOARD.md): static files, no build step; it calls the API like any client."""

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard_root() -> RedirectResponse:
        return RedirectResponse("/dashboard/", status_code=307)

    @app.get("/dashboard/config", include_in_schema=False)
    async def dashboard_config() -> dict[str, Any]:
        """What the page needs before log-in: the mode to show first (TRADING_MODE) and whether reads are public."""
        settings: Settings = app.state.settings
        return {"mode": settings.trading.mode, "public_read": settings.api.public_read}

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")


def create_app(settings: Settings | None = None, *, hot_reads: bool = True, **metrics_options: Any) -> FastAPI:
    """``hot_reads=False`` sends the hottest reads through FastAPI's routing too (``api.hot_reads``; the tests
    compare the two). Raises ``ConfigurationError`` for settings the API must not run with (see
    ``check_api_settings``)."""
    settings = settings or get_settings()
    for warning in check_api_settings(settings):
        log.warning("api.weak_configuration", problem=warning)
    app = FastAPI(
        title="AI Upbit Trader API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.settings = settings
    app.state.engine = engine_from_config(settings.database, pre_ping=False)
    app.state.sessions = session_factory(app.state.engine)
    # Reads run in autocommit: one round trip per query instead of BEGIN, query, ROLLBACK.
    app.state.read_engine = app.state.engine.execution_options(isolation_level="AUTOCOMMIT")
    app.state.db_gate = FairGate(settings.database.pool_size + settings.database.max_overflow)
    # SQLite takes one writer at a time: API writes queue here instead of failing on the file lock (deps.py)
    app.state.write_gate = FairGate(1) if settings.database.is_sqlite else None
    app.state.metrics = ApiMetrics(app.state.read_engine, settings, **metrics_options)
    # One reader of the events outbox per process, fanning out to every WebSocket client (/api/v1/ws/events)
    app.state.events = EventBroadcaster(app.state.read_engine, gate=app.state.db_gate)
    # The hottest reads are kept in memory until the next event (or a write here): services/read_cache.py
    app.state.read_cache = ReadCache(settings.api.read_cache_seconds)
    app.state.events.on_events.append(app.state.read_cache.invalidate)
    app.state.bot_status = BotStatusReader(settings, app.state.read_cache)
    app.state.backtests = BacktestPool(BacktestRepository(app.state.sessions), settings)
    app.include_router(system_router)
    app.include_router(api_router)
    _mount_dashboard(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for busy in (DatabaseBusy, PoolTimeout, OperationalError):
        app.add_exception_handler(busy, _database_busy)
    app.state.rate_limiter = rate_limiter_for(settings.api, on_fallback=app.state.metrics.rate_limit_fallbacks.inc)
    app.add_middleware(
        EdgeMiddleware,
        api=settings.api,
        metrics=app.state.metrics,
        limiter=app.state.rate_limiter,
        hot_reads=HotReads(app.state, settings.api) if hot_reads else None,
    )
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
        )
    return app


def _app_from_environment() -> tuple[FastAPI, Settings]:
    """Settings (one clear line and exit 2 when invalid), logging with secrets registered, then the app."""
    settings = load_settings_or_exit()
    try:
        return create_app(settings), settings
    except ConfigurationError as exc:
        print(f"error: {redactor.scrub_text(exc.message)}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIGURATION_ERROR) from None


def __getattr__(name: str) -> Any:
    """``app`` (for ``uvicorn backend.app.main:app``) is built on first access: importing has no side effects."""
    if name == "app":
        built, _settings = _app_from_environment()
        globals()["app"] = built
        return built
    raise AttributeError(name)


def _check_database_or_exit(settings: Settings) -> None:
    """The lifespan's database check, before uvicorn starts: a database that is down or not migrated is one
    ``error:`` line and exit 1 here, where uvicorn would log the refusal with a traceback."""

    async def check() -> None:
        engine = engine_from_config(settings.database)
        try:
            await ensure_schema_current(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except (DatabaseNotMigratedError, DatabaseUnavailable) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


def run(argv: list[str] | None = None) -> None:
    """``python -m backend.app.main`` / ``upbit-api``: the API on API_HOST:API_PORT (settings and .env)."""
    import argparse

    import uvicorn

    argparse.ArgumentParser(
        prog="upbit-api",
        description="Serve the backend API and the dashboard on API_HOST:API_PORT (see docs/API.md).",
    ).parse_args(argv)
    app, settings = _app_from_environment()
    _check_database_or_exit(settings)
    uvicorn.run(
        app,
        host=settings.api.host,
        port=settings.api.port,
        server_header=False,
        access_log=False,
        log_config=None,
        # Live events go to every WebSocket client: compressing each message per client (permessage-deflate, a
        # zlib context of ~300 kB per connection) cost 6 times the CPU of sending it (docs/API.md, "Live events")
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    run()
