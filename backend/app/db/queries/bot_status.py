"""The bot as the API and Telegram show it: heartbeat, desired state, safe mode, run-time settings; and readiness
(the database reachable and migrated)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, literal, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.app.db.driver import fetch_one, fetch_rows
from backend.app.db.migrations import current_revision, head_revision
from backend.app.models import BotConfigRow, BotStateRow, RiskStateRow
from src.domain.bot import DesiredState
from src.domain.modes import TradingMode
from src.trading.bot_control import DESIRED_STATE_KEY


# --- bot status and config -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SafeMode:
    active: bool
    reason: str | None
    since: datetime | None


@dataclass(slots=True)
class BotStatusData:
    heartbeat: Any | None  # bot_state columns by attribute (``driver.fetch_one``), None if never written
    desired_state: DesiredState
    risk: SafeMode | None  # from risk_state of the trading mode, None without a row


def _build_bot_status_query() -> Select[Any]:
    heartbeat, risk = BotStateRow.__table__, RiskStateRow.__table__
    desired = select(BotConfigRow.value).where(BotConfigRow.key == DESIRED_STATE_KEY).scalar_subquery()
    anchor = select(literal(1).label("one")).subquery()
    return select(
        heartbeat,
        desired.label("desired_state"),
        risk.c.id.label("risk_id"),
        risk.c.safe_mode.label("risk_safe_mode"),
        risk.c.safe_mode_reason.label("risk_safe_mode_reason"),
        risk.c.safe_mode_since.label("risk_safe_mode_since"),
    ).select_from(
        anchor.outerjoin(heartbeat, heartbeat.c.instance_name == bindparam("instance_name")).outerjoin(
            risk, risk.c.mode == bindparam("mode")
        )
    )


# Built once: constructing the statement and its cache key cost more CPU than running it.
_BOT_STATUS_QUERY = _build_bot_status_query()


async def bot_status(connection: AsyncConnection, instance_name: str, mode: TradingMode) -> BotStatusData:
    """Heartbeat, desired state and safe mode in one round trip (left joins on a one-row anchor)."""
    row = await fetch_one(connection, _BOT_STATUS_QUERY, {"instance_name": instance_name, "mode": mode})
    safe_mode = (
        SafeMode(bool(row.risk_safe_mode), row.risk_safe_mode_reason, row.risk_safe_mode_since)
        if row.risk_id is not None
        else None
    )
    desired_state = DesiredState(row.desired_state) if row.desired_state is not None else DesiredState.RUNNING
    return BotStatusData(row if row.instance_name is not None else None, desired_state, safe_mode)


@dataclass(frozen=True, slots=True)
class ConfigValue:
    value: Any


# Every key and value of bot_config (a few dozen rows at most): no expanding IN to process per request
_CONFIG_VALUES = select(BotConfigRow.key, BotConfigRow.value)


async def config_values(connection: AsyncConnection, keys: Iterable[str]) -> dict[str, ConfigValue]:
    """The stored values of ``keys`` (``config_rows`` with the value only), on the driver where there is one."""
    wanted = set(keys)
    rows = await fetch_rows(connection, _CONFIG_VALUES, {})
    return {row[0]: ConfigValue(row[1]) for row in rows if row[0] in wanted}


async def config_rows(connection: AsyncConnection, keys: Iterable[str]) -> dict[str, Row[Any]]:
    rows = await connection.execute(select(BotConfigRow.__table__).where(BotConfigRow.key.in_(list(keys))))
    return {row.key: row for row in rows}


def applied_settings_of(details: Any) -> dict[str, Any] | None:
    """The run-time settings the scheduler reported with its heartbeat (``details.settings``), if any."""
    settings = (details or {}).get("settings") if isinstance(details, dict) else None
    return settings if isinstance(settings, dict) else None


async def applied_settings(connection: AsyncConnection, instance_name: str) -> dict[str, Any] | None:
    details = await connection.scalar(select(BotStateRow.details).where(BotStateRow.instance_name == instance_name))
    return applied_settings_of(details)


# --- readiness -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Readiness:
    database: bool
    current: str | None
    head: str
    detail: str | None

    @property
    def ready(self) -> bool:
        return self.database and self.current == self.head


async def readiness(connection: AsyncConnection) -> Readiness:
    head = head_revision()
    try:
        current = await current_revision(connection.engine)
    except Exception as exc:  # any driver error means "not reachable"; the type is enough to say why
        return Readiness(False, None, head, f"database unreachable ({type(exc).__name__})")
    detail = None if current == head else f"database at migration {current}, newest is {head}"
    return Readiness(True, current, head, detail)
