"""Only one scheduler trades an account: a PostgreSQL advisory lock, or a lease row on SQLite."""

from __future__ import annotations

import hashlib
import os
import socket
from datetime import timedelta
from types import TracebackType

from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.app.db.types import utcnow
from backend.app.models import SchedulerLockRow
from src.exceptions import SchedulerLockHeld


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"scheduler:{name}".encode()).digest()[:8], "big", signed=True)


class SchedulerLock:
    """Held for the life of the process. On SQLite the lease must be renewed (``renew``) more often than
    ``lease_seconds``; a holder that died stops renewing and its lease expires."""

    def __init__(self, engine: AsyncEngine, name: str, lease_seconds: int = 120) -> None:
        self._engine = engine
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._lease = timedelta(seconds=lease_seconds)
        self._pg_connection: AsyncConnection | None = None
        self.held = False

    @property
    def _is_postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    async def acquire(self) -> None:
        if self._is_postgres:
            await self._acquire_advisory()
        else:
            await self._acquire_lease()
        self.held = True

    async def _acquire_advisory(self) -> None:
        connection = await self._engine.connect()
        got = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": _advisory_key(self.name)})
        await connection.commit()
        if not got:
            await connection.close()
            raise SchedulerLockHeld(f"another scheduler holds the lock '{self.name}' (PostgreSQL advisory lock)")
        self._pg_connection = connection

    async def _acquire_lease(self) -> None:
        try:
            await self._write_lease()
        except (IntegrityError, OperationalError) as exc:
            # Another process inserted the row (or holds SQLite's write lock) at the same instant.
            raise SchedulerLockHeld(f"another scheduler is taking the lock '{self.name}'") from exc

    async def _write_lease(self) -> None:
        now = utcnow()
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(SchedulerLockRow).where(SchedulerLockRow.name == self.name, SchedulerLockRow.expires_at < now)
            )
            current = (
                await connection.execute(select(SchedulerLockRow.holder).where(SchedulerLockRow.name == self.name))
            ).scalar()
            if current is not None and current != self.holder:
                raise SchedulerLockHeld(f"another scheduler holds the lock '{self.name}' ({current})")
            if current is None:
                await connection.execute(
                    SchedulerLockRow.__table__.insert().values(
                        name=self.name, holder=self.holder, acquired_at=now, expires_at=now + self._lease
                    )
                )

    async def renew(self) -> None:
        """Extend the SQLite lease; raises if another process took it over (then this one must stop trading)."""
        if self._is_postgres or not self.held:
            return
        async with self._engine.begin() as connection:
            result = await connection.execute(
                SchedulerLockRow.__table__.update()
                .where(SchedulerLockRow.name == self.name, SchedulerLockRow.holder == self.holder)
                .values(expires_at=utcnow() + self._lease)
            )
            if result.rowcount != 1:
                self.held = False
                raise SchedulerLockHeld(f"lost the lock '{self.name}'")

    async def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._pg_connection is not None:
            await self._pg_connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": _advisory_key(self.name)}
            )
            await self._pg_connection.close()
            self._pg_connection = None
            return
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(SchedulerLockRow).where(
                    SchedulerLockRow.name == self.name, SchedulerLockRow.holder == self.holder
                )
            )

    async def __aenter__(self) -> SchedulerLock:
        await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()
