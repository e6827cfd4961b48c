"""Bot status and control. Control is data (DESIGN.md): the API writes the desired state and run-time
settings in ``bot_config`` with an audit line in ``system_logs``; the scheduler obeys and reports back in
``bot_state`` (its heartbeat), which the status reads."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from backend.app.api.deps import (
    AUTH_RESPONSES,
    BODY_RESPONSES,
    WRITE_RESPONSES,
    ReadConnection,
    Reader,
    SessionsDep,
    SettingsDep,
    Writer,
    read_connection,
)
from backend.app.core.runtime_settings import strategy_problems
from backend.app.db.queries import bot_status as status_queries
from backend.app.db.repositories.bot import BotRepository, ConfigWrite
from backend.app.schemas.bot import (
    BotConfigEntry,
    BotConfigOut,
    BotConfigUpdate,
    BotControlIn,
    BotControlOut,
    BotStatusOut,
    SafeModeResetIn,
    SafeModeResetOut,
)
from backend.app.services.bot_status import setting_fields
from src.config.runtime import (
    RUNTIME_KEYS,
    runtime_default,
    runtime_value_to_json,
    validate_runtime_value,
)
from src.config.runtime_state import requested_value, with_value
from src.config.settings import Settings
from src.exceptions import InvalidInput
from src.utils.logger import get_logger

log = get_logger(__name__)
router = APIRouter(prefix="/bot", tags=["bot"])


@router.get("/status", response_model=BotStatusOut, summary="The scheduler's real state, from its heartbeat")
async def bot_status(request: Request, _: Reader) -> Response:
    # Read through the per-process cache (services.bot_status); the body is BotStatusOut's JSON, as documented.
    body = await request.app.state.bot_status.body(partial(read_connection, request))
    return Response(body, media_type="application/json")


@router.post(
    "/control",
    response_model=BotControlOut,
    responses=AUTH_RESPONSES | BODY_RESPONSES | WRITE_RESPONSES,
    summary="Start, stop, pause, resume",
)
async def bot_control(
    request: Request, body: BotControlIn, sessions: SessionsDep, settings: SettingsDep, who: Writer
) -> BotControlOut:
    desired = await BotRepository(sessions, settings.trading.mode).request_state(
        body.action, by=who.name, reason=body.reason
    )
    request.app.state.read_cache.invalidate()
    log.info("bot.control", action=str(body.action), desired_state=str(desired), by=who.name)
    return BotControlOut(
        action=body.action,
        desired_state=desired,
        requested_by=who.name,
        reason=body.reason,
        message=f"desired state set to {desired}; the scheduler applies it on its next poll",
    )


@router.post(
    "/safe-mode/reset",
    response_model=SafeModeResetOut,
    responses=AUTH_RESPONSES | BODY_RESPONSES | WRITE_RESPONSES,
    summary="End the risk manager's safe mode (circuit breaker) before its time",
)
async def reset_safe_mode(body: SafeModeResetIn, sessions: SessionsDep, who: Writer) -> SafeModeResetOut:
    await BotRepository(sessions).request_safe_mode_reset(by=who.name, reason=body.reason)
    log.warning("bot.safe_mode_reset_requested", by=who.name)
    return SafeModeResetOut(
        requested_by=who.name,
        reason=body.reason,
        message="reset requested; the scheduler ends safe mode on its next poll (a request older than the "
        "current safe mode is ignored)",
    )


async def _config(connection: AsyncConnection, settings: Settings) -> BotConfigOut:
    rows = await status_queries.config_rows(connection, RUNTIME_KEYS)
    applied = await status_queries.applied_settings(connection, settings.scheduler.instance_name)
    entries = []
    for fields in setting_fields(rows, settings, applied):
        key = fields["key"]
        row = rows.get(key)
        entries.append(
            BotConfigEntry(
                **fields,
                description=RUNTIME_KEYS[key].description,
                rule=RUNTIME_KEYS[key].rule,
                value=row.value if row is not None else None,
                default=requested_value(key, None, runtime_value_to_json(runtime_default(settings, key)), applied),
                updated_by=row.updated_by if row is not None else None,
                updated_at=row.updated_at if row is not None else None,
            )
        )
    return BotConfigOut(entries=entries)


@router.get("/config", response_model=BotConfigOut, summary="Run-time settings the scheduler takes")
async def get_bot_config(connection: ReadConnection, settings: SettingsDep, _: Reader) -> BotConfigOut:
    return await _config(connection, settings)


_STRATEGY_KEYS = ("strategy.name", "strategy.params")


async def _check_strategy(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, validated: dict[str, Any]
) -> None:
    """A strategy and its parameters are checked together, against the strategy's declared parameter space, as the
    scheduler will build it: the requested key, else the stored request, else the environment's value. The API
    builds the strategy from its own ``STRATEGY_PATH``, so user strategies must be where the scheduler has them."""
    keys = _STRATEGY_KEYS
    asked = [key for key in keys if key in validated]
    if not asked:
        return
    stored = await BotRepository(sessions).get_configs(keys)
    candidate = settings
    for key in keys:
        value = validated[key] if key in validated else stored.get(key)
        try:
            if value is not None:
                candidate = with_value(candidate, key, validate_runtime_value(key, value))
        except InvalidInput:  # a stored row an older version wrote: the scheduler refuses it too
            continue
    if problems := strategy_problems(candidate):
        raise RequestValidationError(
            [{"loc": ("body", "values", key), "msg": "; ".join(problems), "type": "value_error"} for key in asked]
        )


def _config_audit(key: str, value: Any, by: str, reason: str, previous: Any) -> str:
    return f"bot config {key}: {previous!r} -> {value!r} by {by}: {reason}"


@router.put(
    "/config",
    response_model=BotConfigOut,
    responses=AUTH_RESPONSES | BODY_RESPONSES | WRITE_RESPONSES,
    summary="Change run-time settings",
)
async def put_bot_config(
    request: Request, body: BotConfigUpdate, sessions: SessionsDep, settings: SettingsDep, who: Writer
) -> BotConfigOut:
    validated: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for key, value in body.values.items():
        try:
            validated[key] = runtime_value_to_json(validate_runtime_value(key, value))
        except InvalidInput as exc:
            errors.append({"loc": ("body", "values", key), "msg": exc.message, "type": "value_error"})
    if errors:
        raise RequestValidationError(errors)
    await _check_strategy(sessions, settings, validated)
    writes = [
        ConfigWrite(
            key,
            value,
            RUNTIME_KEYS[key].description,
            audit=partial(_config_audit, key, value, who.name, body.reason),
            audit_context={"reason": body.reason},
        )
        for key, value in validated.items()
    ]
    await BotRepository(sessions).set_configs(writes, updated_by=who.name)  # all keys or none
    request.app.state.read_cache.invalidate()
    for key in validated:
        log.info("bot.config_changed", key=key, by=who.name)
    # The read connection is taken only after the write: holding one while waiting for a write connection let
    # concurrent writers take the whole pool and wait on each other until the pool timed out.
    async with read_connection(request) as connection:
        return await _config(connection, settings)
