"""Bot status and control. Control is data (DESIGN.md): the API writes the desired state and run-time
settings in ``bot_config`` with an audit line in ``system_logs``; the scheduler obeys and reports back in
``bot_state`` (its heartbeat), which the status reads."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
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
    RealtimeStatus,
    SafeModeResetIn,
    SafeModeResetOut,
    SettingState,
)
from src.config.runtime import (
    RUNTIME_KEYS,
    runtime_default,
    runtime_value_to_json,
    validate_runtime_value,
)
from src.config.runtime_state import SettingStatus, requested_value, setting_status, with_value
from src.config.settings import Settings
from src.exceptions import InvalidInput
from src.utils.logger import get_logger

log = get_logger(__name__)
router = APIRouter(prefix="/bot", tags=["bot"])


_NEVER_SEEN: dict[str, Any] = {
    "state": "unknown",
    "stale": True,
    "message": "scheduler never seen",
    "mode": None,
    "symbols": [],
    "schedule": None,
    "started_at": None,
    "heartbeat_at": None,
    "heartbeat_age_seconds": None,
    "last_run": None,
    "next_run": None,
    "last_error": None,
    "last_error_at": None,
}


def _age_text(seconds: float) -> str:
    """``41 seconds``, ``35 minutes``, ``3 hours 5 minutes``: the unit a person reads at that age."""
    whole = int(seconds)
    if whole < 120:
        return f"{whole} seconds"
    if whole < 7200:
        return f"{whole // 60} minutes"
    return f"{whole // 3600} hours {whole % 3600 // 60} minutes"


def _heartbeat_fields(heartbeat: Any, stale_after: int) -> dict[str, Any]:
    age = BotRepository.heartbeat_age_seconds(heartbeat)
    stale = age > stale_after
    return {
        "state": heartbeat.state,
        "stale": stale,
        "message": f"scheduler not seen for {_age_text(age)}" if stale else None,
        "mode": heartbeat.mode,
        "symbols": list(heartbeat.symbols or []),
        "schedule": heartbeat.schedule,
        "started_at": heartbeat.started_at,
        "heartbeat_at": heartbeat.heartbeat_at,
        "heartbeat_age_seconds": round(age, 3),
        "last_run": heartbeat.last_run_at,
        "next_run": heartbeat.next_run_at,
        "last_error": heartbeat.last_error,
        "last_error_at": heartbeat.last_error_at,
    }


def _safe_mode_fields(data: status_queries.BotStatusData) -> dict[str, Any]:
    """Safe mode from risk_state of the trading mode; from the heartbeat while that row does not exist."""
    if data.risk is not None:
        return {"safe_mode": data.risk.active, "safe_mode_reason": data.risk.reason, "safe_mode_since": data.risk.since}
    heartbeat = data.heartbeat
    return {
        "safe_mode": bool(heartbeat and heartbeat.safe_mode),
        "safe_mode_reason": heartbeat.safe_mode_reason if heartbeat else None,
        "safe_mode_since": None,
    }


def _status(data: status_queries.BotStatusData, settings: Settings, runtime: list[SettingState]) -> BotStatusOut:
    scheduler = settings.scheduler
    heartbeat = (
        _NEVER_SEEN if data.heartbeat is None else _heartbeat_fields(data.heartbeat, scheduler.heartbeat_stale_seconds)
    )
    return BotStatusOut(
        instance=scheduler.instance_name,
        desired_state=data.desired_state,
        **heartbeat,
        **_safe_mode_fields(data),
        settings=runtime,
        realtime=_realtime(data.heartbeat),
    )


def _realtime(heartbeat: Any) -> RealtimeStatus | None:
    """``details.realtime`` of the heartbeat (the price watch's status), if it has a readable one."""
    details = heartbeat.details if heartbeat is not None else None
    value = details.get("realtime") if isinstance(details, dict) else None
    if not isinstance(value, dict):
        return None
    try:
        return RealtimeStatus.model_validate(value)
    except ValidationError:
        log.warning("bot.realtime_status_unreadable", value=str(value)[:200])
        return None


@router.get("/status", response_model=BotStatusOut, summary="The scheduler's real state, from its heartbeat")
async def bot_status(request: Request, settings: SettingsDep, _: Reader) -> BotStatusOut:
    async with read_connection(request) as connection:
        data = await status_queries.bot_status(connection, settings.scheduler.instance_name, settings.trading.mode)
        rows = await status_queries.config_rows(connection, RUNTIME_KEYS)
    applied = status_queries.applied_settings_of(data.heartbeat.details if data.heartbeat is not None else None)
    runtime = [SettingState(**fields) for fields in _setting_fields(rows, settings, applied)]
    return _status(data, settings, runtime)


@router.post(
    "/control",
    response_model=BotControlOut,
    responses=AUTH_RESPONSES | BODY_RESPONSES | WRITE_RESPONSES,
    summary="Start, stop, pause, resume",
)
async def bot_control(body: BotControlIn, sessions: SessionsDep, settings: SettingsDep, who: Writer) -> BotControlOut:
    desired = await BotRepository(sessions, settings.trading.mode).request_state(
        body.action, by=who.name, reason=body.reason
    )
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


def _setting_fields(rows: dict[str, Any], settings: Settings, applied: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per key: requested (stored, else the default) next to what the scheduler reported it applies."""
    fields = []
    for key in RUNTIME_KEYS:
        row = rows.get(key)
        stored = row.value if row is not None else None
        requested = requested_value(key, stored, runtime_value_to_json(runtime_default(settings, key)), applied)
        status, message = setting_status(key, requested, applied)
        since = (applied or {}).get("since", {}).get(key) if status is not SettingStatus.UNKNOWN else None
        fields.append(
            {
                "key": key,
                "requested": requested,
                "applied": (applied or {}).get("values", {}).get(key),
                "applied_since": since,
                "status": status,
                "message": message,
            }
        )
    return fields


async def _config(connection: AsyncConnection, settings: Settings) -> BotConfigOut:
    rows = await status_queries.config_rows(connection, RUNTIME_KEYS)
    applied = await status_queries.applied_settings(connection, settings.scheduler.instance_name)
    entries = []
    for fields in _setting_fields(rows, settings, applied):
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
    for key in validated:
        log.info("bot.config_changed", key=key, by=who.name)
    # The read connection is taken only after the write: holding one while waiting for a write connection let
    # concurrent writers take the whole pool and wait on each other until the pool timed out.
    async with read_connection(request) as connection:
        return await _config(connection, settings)
