"""Only one scheduler trades an account: a PostgreSQL advisory lock, or a lease row on SQLite.

The lock is checked before every order (``ensure_held``, the ``OrderGuard`` of ``TradingService``; the
scheduler's ``LockKeeper`` wraps ``check``) and on every control poll:

- PostgreSQL: the advisory lock lives on one connection. ``check`` asks ``pg_locks`` on that very
  connection whether its session still holds the key; a dead connection (the server restarted) or a
  missing lock means it was lost. A lost lock is re-taken on a new connection when it is free, or when the
  session still holding it is this process's previous one (same backend pid and start time: the client
  side died, the server has not noticed), which is ended first. When another session holds it,
  ``SchedulerLockLost(taken_over=True)``.
- SQLite: ``check`` extends the lease (the row still names this holder) or re-takes a free one.
  A lease whose holder is provably dead on this host (same hostname, pid gone or now another process,
  told apart by the process start time recorded in the holder) is taken over at once; any other lease
  blocks until it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.app.db.types import utcnow
from backend.app.models import SchedulerLockRow
from src.exceptions import SchedulerLockHeld, SchedulerLockLost
from src.utils.logger import get_logger

log = get_logger(__name__)

_CHECK_TIMEOUT_SECONDS = 5.0
_UNKNOWN_START = "-"
# Our session holds the advisory lock (a bigint key is stored as classid = high 32 bits, objid = low 32 bits).
_HELD_SQL = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
    " AND classid = CAST(:high AS oid) AND objid = CAST(:low AS oid) AND objsubid = 1)"
)


_TRY_LOCK_SQL = text(
    "SELECT pg_try_advisory_lock(:key), pg_backend_pid(),"
    " (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
)
# End the session still holding the lock if, and only if, it is this process's previous one (pid + start time).
_END_OWN_SESSION_SQL = text(
    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = CAST(:high AS oid)"
    " AND l.objid = CAST(:low AS oid) AND l.objsubid = 1 AND l.pid = :pid AND a.backend_start = :started"
)
_STALE_SESSION_WAIT_SECONDS = 5.0


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"scheduler:{name}".encode()).digest()[:8], "big", signed=True)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None (no such process or no /proc)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def process_start(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot, Linux); ``-`` where that cannot be read."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else _UNKNOWN_START


def holder_is_dead(holder: str) -> bool:
    """True only when ``holder`` (``host:pid:start:id``) provably no longer runs: it was on this host and its
    pid is gone, a zombie, or now a process that started at another time (pid reused, e.g. the same pid in a
    restarted container). Another host, an unreadable holder or a live process: False (the lease rule applies)."""
    parts = holder.split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return False
    if fields[0] == "Z":  # killed, not yet reaped: it sends nothing any more
        return True
    recorded = parts[2] if len(parts) >= 4 else _UNKNOWN_START
    current = fields[19] if len(fields) > 19 else _UNKNOWN_START
    return _UNKNOWN_START not in (recorded, current) and recorded != current


class SchedulerLock:
    """Held for the life of the process. On SQLite the lease must be renewed (``check``) more often than
    ``lease_seconds``; a holder that died stops renewing and its lease expires (or is taken over at once when
    the holder is provably dead on this host)."""

    def __init__(
        self,
        engine: AsyncEngine,
        name: str,
        lease_seconds: int = 120,
        *,
        check_timeout_seconds: float = _CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self._engine = engine
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}:{id(self):x}"
        self._lease = timedelta(seconds=lease_seconds)
        self._check_timeout = check_timeout_seconds
        self._pg_connection: AsyncConnection | None = None
        self._checking = asyncio.Lock()  # the control poll and the order path share one connection
        self._released = False
        self.held = False
        self.backend_pid: int | None = None  # PostgreSQL: the server process of the session holding the lock
        self._session: tuple[int, datetime] | None = None  # (pid, backend_start) of the last session that held it

    @property
    def released(self) -> bool:
        return self._released

    @property
    def _is_postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    async def acquire(self) -> None:
        if self._is_postgres:
            await self._acquire_advisory()
        else:
            await self._acquire_lease()
        self.held = True
        self._released = False

    # --- PostgreSQL ---------------------------------------------------------------------------------
    def _key_params(self) -> dict[str, int]:
        key = _advisory_key(self.name)
        return {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}

    async def _acquire_advisory(self) -> None:
        await self._discard_connection()
        connection = await self._engine.connect()
        try:
            result = await connection.execute(_TRY_LOCK_SQL, {"key": _advisory_key(self.name)})
            got, backend_pid, backend_start = result.one()
            await connection.commit()
        except BaseException:
            await _close_quietly(connection)
            raise
        if not got:
            await connection.close()
            raise SchedulerLockHeld(f"another scheduler holds the lock '{self.name}' (PostgreSQL advisory lock)")
        self._pg_connection = connection
        self.backend_pid = backend_pid
        self._session = (backend_pid, backend_start)

    async def _retake_advisory(self) -> None:
        """Take the lock on a new connection. If it is still held by this process's previous session (the
        client side died, e.g. a network cut, and the server has not noticed yet), end that session first:
        waiting for the server's TCP keepalive could take hours, and exiting would not help a restart."""
        try:
            await self._acquire_advisory()
            return
        except SchedulerLockHeld:
            if self._session is None or not await self._end_own_stale_session(*self._session):
                raise
        deadline = asyncio.get_running_loop().time() + _STALE_SESSION_WAIT_SECONDS
        while True:  # the ended session frees the lock a moment later
            try:
                await self._acquire_advisory()
                return
            except SchedulerLockHeld:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _end_own_stale_session(self, pid: int, started: datetime) -> bool:
        async with self._engine.connect() as connection:
            ended = await connection.scalar(
                _END_OWN_SESSION_SQL, {**self._key_params(), "pid": pid, "started": started}
            )
            await connection.commit()
        if ended:
            log.warning(
                "lock.stale_session_ended", lock=self.name, backend_pid=pid, detail="this process's previous session"
            )
        return bool(ended)

    async def _advisory_still_held(self) -> bool:
        """Ask on the lock's own connection; a dead connection (server restarted) means the lock is gone."""
        connection = self._pg_connection
        if connection is None:
            return False
        try:
            held = await asyncio.wait_for(connection.scalar(_HELD_SQL, self._key_params()), self._check_timeout)
            await connection.commit()
        except Exception as exc:
            log.warning("lock.connection_lost", lock=self.name, error=_one_line(exc))
            await self._discard_connection()
            return False
        return bool(held)

    async def _discard_connection(self) -> None:
        connection, self._pg_connection = self._pg_connection, None
        self.backend_pid = None
        if connection is not None:
            await _close_quietly(connection)

    # --- SQLite -------------------------------------------------------------------------------------
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
            if current is not None and current != self.holder and holder_is_dead(current):
                log.warning("lock.taken_over_from_dead_holder", lock=self.name, previous=current, holder=self.holder)
                stale = (SchedulerLockRow.name == self.name) & (SchedulerLockRow.holder == current)
                await connection.execute(delete(SchedulerLockRow).where(stale))
                current = None
            if current is not None and current != self.holder:
                raise SchedulerLockHeld(f"another scheduler holds the lock '{self.name}' ({current})")
            if current is None:
                await connection.execute(
                    insert(SchedulerLockRow).values(
                        name=self.name, holder=self.holder, acquired_at=now, expires_at=now + self._lease
                    )
                )

    async def _lease_still_held(self) -> bool:
        """Extend the lease while the row still names this holder (then nobody else can hold it)."""
        try:
            async with self._engine.begin() as connection:
                result = await connection.execute(
                    update(SchedulerLockRow)
                    .where(SchedulerLockRow.name == self.name, SchedulerLockRow.holder == self.holder)
                    .values(expires_at=utcnow() + self._lease)
                )
        except Exception as exc:
            log.warning("lock.renew_failed", lock=self.name, error=_one_line(exc))
            return False
        return result.rowcount == 1

    # --- both ---------------------------------------------------------------------------------------
    async def check(self) -> bool:
        """Return when this process holds the lock: still (False) or re-taken just now because it was lost and
        free (True). Raises ``SchedulerLockLost``: ``taken_over`` when another process holds it, otherwise
        when it could not be checked or re-taken (database unreachable, SQLite busy) or was released."""
        async with self._checking:
            return await self._check()

    async def ensure_held(self) -> None:
        """``OrderGuard``: return when the lock is held (re-taking a free one), else raise ``SchedulerLockLost``."""
        await self.check()

    async def _check(self) -> bool:
        if self._released:
            raise SchedulerLockLost(f"the lock '{self.name}' was released (shutting down)")
        if self.held:
            still = await (self._advisory_still_held() if self._is_postgres else self._lease_still_held())
            if still:
                return False
            self.held = False
        try:
            if self._is_postgres:
                await self._retake_advisory()
            else:
                await self._write_lease()
        except (SchedulerLockHeld, IntegrityError) as exc:  # IntegrityError: another inserted the lease just now
            message = exc.message if isinstance(exc, SchedulerLockHeld) else "another scheduler took the lease"
            raise SchedulerLockLost(f"lost the lock '{self.name}': {message}", taken_over=True) from exc
        except Exception as exc:
            raise SchedulerLockLost(f"lost the lock '{self.name}' and cannot re-take it: {_one_line(exc)}") from exc
        self.held = True
        return True

    async def renew(self) -> None:
        """Extend the lease / verify the advisory lock, re-taking it when free (``check`` without its answer)."""
        await self.check()

    async def release(self) -> None:
        """Free the lock. Never raises: a connection the database already closed (it restarted) freed the
        advisory lock with its session; a lease that cannot be deleted expires."""
        async with self._checking:
            await self._release()

    async def _release(self) -> None:
        self._released = True
        held, self.held = self.held, False
        if self._is_postgres:
            connection, self._pg_connection = self._pg_connection, None
            self.backend_pid = None
            if connection is None:
                return
            try:
                if held:
                    await asyncio.wait_for(
                        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _advisory_key(self.name)}),
                        self._check_timeout,
                    )
                    await connection.commit()
                await connection.close()
            except Exception as exc:
                log.warning(
                    "lock.release_connection_lost",
                    lock=self.name,
                    error=_one_line(exc),
                    detail="PostgreSQL frees an advisory lock when its session ends",
                )
                await _close_quietly(connection)
            return
        if not held:
            return
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    delete(SchedulerLockRow).where(
                        SchedulerLockRow.name == self.name, SchedulerLockRow.holder == self.holder
                    )
                )
        except Exception as exc:
            log.warning("lock.release_failed", lock=self.name, error=_one_line(exc))

    async def __aenter__(self) -> SchedulerLock:
        await self.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


def _one_line(exc: BaseException) -> str:
    """``Type: first line`` (SQLAlchemy appends the statement and its parameters on further lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


async def _close_quietly(connection: AsyncConnection) -> None:
    """Drop a connection that may already be dead, without waiting on the server."""
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()
