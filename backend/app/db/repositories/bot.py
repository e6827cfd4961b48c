"""Bot control as data: desired state and run-time settings (bot_config), heartbeat (bot_state), audit."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.outbox import add_event
from backend.app.db.types import utcnow
from backend.app.models import BotConfigRow, BotStateRow, EventRow, SystemLogRow
from src.domain.bot import BotAction, DesiredState, desired_state_for
from src.domain.events import EventType
from src.domain.modes import TradingMode
from src.trading.bot_control import DESIRED_STATE_KEY, SAFE_MODE_RESET_KEY

DESIRED_STATE_DESCRIPTION = "Desired bot state (running | paused | stopped), obeyed by the scheduler"


@dataclass(frozen=True, slots=True)
class ConfigWrite:
    """One key for ``BotRepository.set_configs``. ``audit`` is the audit message, or makes it from the previous
    value as read under the row lock."""

    key: str
    value: Any
    description: str | None = None
    audit: str | Callable[[Any], str] | None = None
    audit_context: dict[str, Any] | None = None


_ERROR_LEVELS = ("error", "critical")
# What a heartbeat event carries: enough for a console's status line, nothing that grows.
_HEARTBEAT_FIELDS = ("state", "last_run_at", "next_run_at", "safe_mode", "last_error_at")


class BotRepository:
    """``mode`` is the trading mode the events this repository writes are recorded under (the scheduler's
    engine mode; the API's configured mode for an operator's request)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: TradingMode | None = None) -> None:
        self._sessions = sessions
        self.mode = mode

    async def get_config(self, key: str) -> Any | None:
        async with self._sessions() as session:
            row = await session.scalar(select(BotConfigRow).where(BotConfigRow.key == key))
            return None if row is None else row.value

    async def get_configs(self, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of ``keys`` that have a row (one query)."""
        async with self._sessions() as session:
            rows = await session.scalars(select(BotConfigRow).where(BotConfigRow.key.in_(list(keys))))
            return {row.key: row.value for row in rows}

    async def all_config(self) -> dict[str, BotConfigRow]:
        async with self._sessions() as session:
            return {row.key: row for row in await session.scalars(select(BotConfigRow).order_by(BotConfigRow.key))}

    async def set_config(
        self,
        key: str,
        value: Any,
        *,
        updated_by: str,
        description: str | None = None,
        audit: str | None = None,
        audit_context: dict[str, Any] | None = None,
    ) -> None:
        """Upsert one key; see ``set_configs``."""
        await self.set_configs([ConfigWrite(key, value, description, audit, audit_context)], updated_by=updated_by)

    async def set_configs(self, writes: Sequence[ConfigWrite], *, updated_by: str) -> None:
        """Upsert several keys in one transaction: all are written or none. A write with ``audit`` adds an audit
        row to ``system_logs`` in the same transaction, with who, the previous and the new value, and its
        ``audit_context`` (for example the reason). Rows are locked in key order, so two writers of the same
        keys cannot deadlock."""
        ordered = sorted(writes, key=lambda write: write.key)
        for attempt in range(2):
            try:
                async with self._sessions.begin() as session:
                    changes = [await self._upsert(session, write, updated_by) for write in ordered]
                    for write, previous in zip(ordered, changes, strict=True):
                        if write.key == DESIRED_STATE_KEY and previous != write.value:
                            data = {"desired": write.value, "previous": previous, "by": updated_by}
                            await add_event(session, EventType.BOT_STATE, mode=self.mode, data=data)
                return
            except IntegrityError:
                if attempt:  # a concurrent writer inserted a key first; the retry updates it
                    raise

    @staticmethod
    async def _upsert(session: AsyncSession, write: ConfigWrite, updated_by: str) -> Any:
        """Write one key; the previous value."""
        row = await session.scalar(select(BotConfigRow).where(BotConfigRow.key == write.key).with_for_update())
        previous = None if row is None else row.value
        if row is None:
            session.add(
                BotConfigRow(key=write.key, value=write.value, description=write.description, updated_by=updated_by)
            )
        else:
            row.value = write.value
            row.updated_by = updated_by
            row.updated_at = utcnow()
            if write.description is not None:
                row.description = write.description
        if write.audit is not None:
            message = write.audit if isinstance(write.audit, str) else write.audit(previous)
            context = {"key": write.key, "previous": previous, "value": write.value, "by": updated_by}
            context.update(write.audit_context or {})
            session.add(SystemLogRow(level="info", message=message, source="control", context=context))
        await session.flush()  # a value the database refuses fails here, before the next key is written
        return previous

    async def request_state(self, action: BotAction, *, by: str, reason: str) -> DesiredState:
        """The one way to control the bot (API and Telegram alike): write the desired state, audited."""
        desired = desired_state_for(action)
        await self.set_config(
            DESIRED_STATE_KEY,
            desired.value,
            updated_by=by,
            description=DESIRED_STATE_DESCRIPTION,
            audit=f"bot control: {action} (desired state {desired}) by {by}: {reason}",
            audit_context={"action": action.value, "reason": reason},
        )
        return desired

    async def request_safe_mode_reset(self, *, by: str, reason: str) -> None:
        """Ask the scheduler to end safe mode; it applies the request on its next control poll."""
        request = {"by": by, "reason": reason, "requested_at": utcnow().isoformat()}
        await self.set_config(
            SAFE_MODE_RESET_KEY,
            request,
            updated_by=by,
            description="Operator request to end the risk manager's safe mode, applied by the scheduler",
            audit=f"safe mode reset requested by {by}: {reason}",
            audit_context={"reason": reason},
        )

    async def safe_mode_reset_request(self) -> tuple[str, str, datetime] | None:
        value = await self.get_config(SAFE_MODE_RESET_KEY)
        if not value:
            return None
        return value["by"], value["reason"], datetime.fromisoformat(value["requested_at"])

    async def desired_state(self) -> DesiredState:
        value = await self.get_config(DESIRED_STATE_KEY)
        return DesiredState(value) if value is not None else DesiredState.RUNNING

    async def write_heartbeat(self, instance_name: str, **fields: Any) -> None:
        """Upsert the instance's heartbeat, with its ``heartbeat`` event, and a ``bot_state`` event when the
        state it reports changed."""
        fields.setdefault("heartbeat_at", utcnow())
        async with self._sessions.begin() as session:
            row = await session.scalar(select(BotStateRow).where(BotStateRow.instance_name == instance_name))
            previous = None if row is None else row.state
            if row is None:
                row = BotStateRow(instance_name=instance_name, **fields)
                session.add(row)
            else:
                for name, value in fields.items():
                    setattr(row, name, value)
            await session.flush()
            mode = fields.get("mode", self.mode)
            if row.state != previous:
                data = {"instance": instance_name, "state": row.state, "previous": previous}
                await add_event(session, EventType.BOT_STATE, mode=mode, data=data)
            beat = {"instance": instance_name, **{name: fields[name] for name in _HEARTBEAT_FIELDS if name in fields}}
            details = fields.get("details") or {}
            if "desired_state" in details:
                beat["desired_state"] = details["desired_state"]
            await add_event(session, EventType.HEARTBEAT, mode=mode, data=beat)

    async def prune_heartbeat_events(self, before: datetime) -> int:
        """Delete ``heartbeat`` events written before ``before`` (one every control poll: 8,640 a day at 10 s);
        the other events stay. The newest event is never deleted, so SQLite never hands its id out again."""
        newest = select(func.max(EventRow.id)).scalar_subquery()
        statement = delete(EventRow).where(
            EventRow.type == EventType.HEARTBEAT, EventRow.at < before, EventRow.id < newest
        )
        async with self._sessions.begin() as session:
            result = await session.execute(statement)
            return int(getattr(result, "rowcount", 0) or 0)

    async def record_settings_applied(self, changes: dict[str, Any], message: str) -> None:
        """The scheduler applied run-time settings: the audit line and the ``settings_applied`` event together."""
        async with self._sessions.begin() as session:
            session.add(SystemLogRow(level="info", message=message, source="scheduler", context={"changes": changes}))
            await add_event(session, EventType.SETTINGS_APPLIED, mode=self.mode, data={"changes": changes})

    async def get_heartbeat(self, instance_name: str) -> BotStateRow | None:
        async with self._sessions() as session:
            return await session.scalar(select(BotStateRow).where(BotStateRow.instance_name == instance_name))

    async def log(self, level: str, message: str, *, source: str, context: dict[str, Any] | None = None) -> None:
        async with self._sessions.begin() as session:
            session.add(SystemLogRow(level=level, message=message, source=source, context=context))
            if level in _ERROR_LEVELS:
                data = {"level": level, "message": message[:500], "source": source}
                await add_event(session, EventType.ERROR, mode=self.mode, data=data)

    @staticmethod
    def heartbeat_age_seconds(row: BotStateRow, now: datetime | None = None) -> float:
        return ((now or utcnow()) - row.heartbeat_at).total_seconds()
