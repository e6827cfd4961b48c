"""The bot status as the API serves it (``GET /api/v1/bot/status``), read through the read cache.

The rows behind it change only when the scheduler writes (heartbeat, state, safe mode, applied settings: each with
its event) or an operator does (desired state, run-time settings), so they are kept in ``services.read_cache``
until the next event or write. What depends on the clock (``heartbeat_age_seconds``, ``stale`` and its message)
is computed per request, so a cached status still ages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.app.db.queries import bot_status as status_queries
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.types import utcnow
from backend.app.schemas.bot import BotStatusOut, RealtimeStatus, SettingState
from backend.app.services.read_cache import ReadCache
from src.config.runtime import RUNTIME_KEYS, runtime_default, runtime_value_to_json
from src.config.runtime_state import SettingStatus, requested_value, setting_status
from src.config.settings import Settings
from src.utils.logger import get_logger

log = get_logger(__name__)

__all__ = ["BotStatusReader", "read_status", "setting_fields"]

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


def setting_fields(rows: dict[str, Any], settings: Settings, applied: dict[str, Any] | None) -> list[dict[str, Any]]:
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


def _age_fields(heartbeat_at: datetime, stale_after: int, now: datetime) -> dict[str, Any]:
    age = (now - heartbeat_at).total_seconds()
    stale = age > stale_after
    return {
        "stale": stale,
        "message": f"scheduler not seen for {_age_text(age)}" if stale else None,
        "heartbeat_age_seconds": round(age, 3),
    }


@dataclass(frozen=True, slots=True)
class _Read:
    status: BotStatusOut  # as read; the age fields are recomputed per request when there is a heartbeat
    body: bytes | None  # the whole body, when nothing in it depends on the clock (no heartbeat yet)


async def read_status(connection: AsyncConnection, settings: Settings) -> BotStatusOut:
    """The status from the database, as of now."""
    data = await status_queries.bot_status(connection, settings.scheduler.instance_name, settings.trading.mode)
    rows = await status_queries.config_values(connection, RUNTIME_KEYS)
    applied = status_queries.applied_settings_of(data.heartbeat.details if data.heartbeat is not None else None)
    runtime = [SettingState(**fields) for fields in setting_fields(rows, settings, applied)]
    return _status(data, settings, runtime)


class BotStatusReader:
    """``body(connect)`` gives the status as JSON bytes (``BotStatusOut``'s, as FastAPI would serialise it);
    ``connect`` opens a read connection and is called only when ``cache`` has no current read."""

    def __init__(self, settings: Settings, cache: ReadCache[Any]) -> None:
        self._settings = settings
        self._cache = cache
        self._stale_after = settings.scheduler.heartbeat_stale_seconds

    async def body(self, connect: Callable[[], Any]) -> bytes:
        read: _Read = await self._cache.get("bot_status", partial(self._read, connect))
        if read.body is not None:
            return read.body
        status = read.status
        assert status.heartbeat_at is not None  # a read without a heartbeat has its body
        update = _age_fields(status.heartbeat_at, self._stale_after, utcnow())
        return status.model_copy(update=update).model_dump_json(by_alias=True).encode()

    async def _read(self, connect: Callable[[], Any]) -> _Read:
        async with connect() as connection:
            status = await read_status(connection, self._settings)
        fixed = status.heartbeat_at is None  # nothing in the body depends on the clock
        return _Read(status, status.model_dump_json(by_alias=True).encode() if fixed else None)
