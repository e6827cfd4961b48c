"""Backtests through the API: checks a request, queues it, runs it in a worker process, stores the outcome.

A run never executes on the API's event loop: each takes one of ``BACKTEST_API_WORKERS`` slots and runs in
its own process (spawned, so the numba simulation neither blocks the loop nor shares its threads). Up to
``BACKTEST_API_QUEUE`` more wait for a slot; beyond that ``submit`` raises ``PoolFull`` (429 + Retry-After).
A cancelled run that is queued never starts; one that is running has its process terminated. Runs that an
API process left queued or running when it stopped are marked failed when the next one starts
(``fail_leftovers``)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from backend.app.db.repositories.backtests import BacktestRepository
from backend.app.db.types import utcnow
from backend.app.schemas.backtests import BacktestIn
from backend.app.services.backtest_worker import backtest_request, run_backtest_in_worker
from src.backtesting.data_provider import HistoricalDataProvider
from src.backtesting.runner import strategy_for
from src.config.settings import Settings
from src.domain.backtest_runs import BacktestStatus
from src.exceptions import InvalidInput, TradingSystemError
from src.strategy.registry import AI_STRATEGY
from src.utils.logger import get_logger, redactor

log = get_logger(__name__)

POLL_SECONDS = 0.1
PROGRESS_STEP = 0.05  # a progress change smaller than this is not written
RESTART_REASON = "the API stopped while this run was {status}; start it again"
RETRY_AFTER_SECONDS = 30
FOREIGN_STALE = timedelta(hours=6)  # a run of an API process on another host, not updated for this long, is lost


class PoolFull(Exception):
    """Every worker is busy and the queue is full."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the backtest pool is full")
        self.retry_after = retry_after


def check_request(request: BacktestIn, settings: Settings) -> None:
    """``InvalidInput`` naming the field for a request the backtest would refuse: an unknown strategy,
    parameters outside its declared space, a market and bar size with no candles."""
    if request.strategy == AI_STRATEGY:
        raise InvalidInput(
            "strategy: the ai strategy asks the model for every candle; run it with backtest.py --strategy ai"
        )
    try:
        strategy_for(backtest_request(request.stored()), settings)
    except TradingSystemError as exc:
        field = "strategy" if exc.message.startswith("unknown strategy") else "params"
        raise InvalidInput(f"{field}: {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"params: {exc}") from None
    path = HistoricalDataProvider(settings.market_data.backtest_data_dir).path_for(request.symbol, request.timeframe)
    if not path.is_file():
        raise InvalidInput(
            f"symbol: no candles for {request.symbol} {request.timeframe} in {settings.market_data.backtest_data_dir}"
            f"; collect them with `python -m scripts.backtesting.data_collector --symbol {request.symbol} "
            f"--timeframe {request.timeframe}`"
        )


@dataclass(slots=True)
class _Running:
    process: BaseProcess
    connection: Connection


class BacktestPool:
    def __init__(self, repository: BacktestRepository, settings: Settings) -> None:
        self._repository = repository
        self._settings = settings
        self._workers = settings.backtest.api_workers
        self._capacity = settings.backtest.api_workers + settings.backtest.api_queue
        self._slots = asyncio.Semaphore(self._workers)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._running: dict[int, _Running] = {}
        self._waiting: set[int] = set()  # queued runs whose task waits for a slot
        self._reserved = 0
        self._context = multiprocessing.get_context("spawn")

    @property
    def repository(self) -> BacktestRepository:
        return self._repository

    @property
    def active(self) -> int:
        """Runs queued or running in this process."""
        return len(self._tasks) + self._reserved

    async def fail_leftovers(self) -> None:
        """At start-up: the unfinished runs of API processes that are gone can never finish; they are marked
        failed. Gone: on this host, a process id that no longer runs (or is this new process's own); on another
        host, a run not updated for ``FOREIGN_STALE``."""
        now = utcnow()
        left = [
            run
            for run in await self._repository.unfinished()
            if _owner_gone(run.owner) or (not _same_host(run.owner) and now - run.updated_at > FOREIGN_STALE)
        ]
        for status in (BacktestStatus.RUNNING, BacktestStatus.QUEUED):
            ids = [run.id for run in left if run.status is status]
            if ids and await self._repository.fail_unfinished(ids, status, RESTART_REASON.format(status=status.value)):
                log.warning("backtests.failed_after_restart", runs=ids, status=status.value)

    async def submit(self, request: BacktestIn, requested_by: str) -> int:
        if self.active >= self._capacity:
            raise PoolFull(RETRY_AFTER_SECONDS)
        self._reserved += 1
        try:
            run_id = await self._repository.create(request.stored(), requested_by, owner_name())
        finally:
            self._reserved -= 1
        self._waiting.add(run_id)
        self._tasks[run_id] = asyncio.create_task(self._run(run_id, request.stored()), name=f"backtest-{run_id}")
        log.info("backtests.queued", run=run_id, strategy=request.strategy, symbol=request.symbol, by=requested_by)
        return run_id

    async def cancel(self, run_id: int) -> BacktestStatus | None:
        """The run's status after the request: ``cancelled`` when it was queued or running, else as it was;
        None for no such run."""
        if await self._repository.move(run_id, BacktestStatus.CANCELLED, error="cancelled"):
            running = self._running.get(run_id)
            if running is not None:
                running.process.terminate()
            elif run_id in self._waiting:  # its place in the queue is free at once
                self._tasks[run_id].cancel()
            log.info("backtests.cancelled", run=run_id)
            return BacktestStatus.CANCELLED
        return await self._repository.status_of(run_id)

    async def aclose(self) -> None:
        """Stop every worker; their runs are marked failed (the API stopped)."""
        runs = list(self._tasks)
        for running in self._running.values():
            running.process.terminate()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for status in (BacktestStatus.RUNNING, BacktestStatus.QUEUED):
            await self._repository.fail_unfinished(runs, status, RESTART_REASON.format(status=status.value))

    async def _run(self, run_id: int, body: dict[str, Any]) -> None:
        try:
            async with self._slots:
                self._waiting.discard(run_id)
                if not await self._repository.move(run_id, BacktestStatus.RUNNING, progress=0.0):
                    return  # cancelled while it waited
                await self._execute(run_id, body)
        except asyncio.CancelledError:
            if run_id not in self._waiting:
                raise
        except Exception as exc:  # a run's failure is stored on the run, the pool goes on
            log.error("backtests.run_error", run=run_id, error=type(exc).__name__)
            reason = redactor.scrub_text(f"{type(exc).__name__}: {exc}")
            await self._repository.move(run_id, BacktestStatus.FAILED, error=reason)
        finally:
            self._waiting.discard(run_id)
            self._tasks.pop(run_id, None)

    async def _execute(self, run_id: int, body: dict[str, Any]) -> None:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=run_backtest_in_worker, args=(sender, body, self._settings), name=f"backtest-{run_id}", daemon=True
        )
        process.start()
        sender.close()
        self._running[run_id] = _Running(process, receiver)
        try:
            outcome = await self._watch(run_id, process, receiver)
        finally:
            self._running.pop(run_id, None)
            if process.is_alive():
                process.terminate()
            await asyncio.to_thread(process.join, 5)
            receiver.close()
        kind, value = outcome
        if kind == "done":
            stored = await self._repository.move(
                run_id,
                BacktestStatus.DONE,
                progress=1.0,
                metrics=value["metrics"],
                trades=value["trades"],
                equity=value["equity"],
                candles=value["candles"],
            )
        else:
            stored = await self._repository.move(run_id, BacktestStatus.FAILED, error=redactor.scrub_text(value))
        log.info("backtests.finished", run=run_id, outcome=kind if stored else "discarded (cancelled)")

    async def _watch(self, run_id: int, process: BaseProcess, receiver: Connection) -> tuple[str, Any]:
        """The worker's last message (``done`` or ``failed``), writing its progress on the way."""
        written = 0.0
        while True:
            while receiver.poll():
                try:
                    message = await asyncio.to_thread(receiver.recv)  # a result is megabytes: off the loop
                except EOFError:
                    return "failed", _exit_reason(process)
                if message[0] == "progress":
                    if message[1] - written >= PROGRESS_STEP:
                        written = float(message[1])
                        await self._repository.set_progress(run_id, written)
                    continue
                return message[0], message[1]
            if not process.is_alive() and not receiver.poll():
                return "failed", _exit_reason(process)
            await asyncio.sleep(POLL_SECONDS)


def owner_name() -> str:
    """This API process, as the runs it starts name it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _same_host(owner: str) -> bool:
    return owner.rpartition(":")[0] == socket.gethostname()


def _owner_gone(owner: str) -> bool:
    """Whether the API process ``host:pid`` on this host has ended (this process's own id counts as ended: at
    start-up it has no runs yet, so a run naming it is a previous process's, e.g. pid 1 in a container)."""
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process runs under that id
        return True
    return False


def _exit_reason(process: BaseProcess) -> str:
    return f"the worker process ended without a result (exit code {process.exitcode})"
