"""Reconciliation: settle every unsettled order by asking the exchange (never re-sending), and apply to the
positions the filled orders a crash left out of them.

``OrderNotFound`` for a ``pending`` row older than ``not_found_grace`` marks it ``failed`` (the request never
arrived: Upbit lists an accepted order at once); an answer that cannot be handled leaves the row unsettled.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from src.api.interfaces import IExchangeClient
from src.domain.events import EventKind, NotificationEvent
from src.domain.orders import OrderStatus
from src.exceptions import ExchangeError, OrderNotFound, TradingSystemError
from src.trading.repository import OrderRecord
from src.trading.results import ExecutionResult
from src.trading.settlement import OrderSettlement, exit_reason_of
from src.utils.logger import get_logger

log = get_logger(__name__)


class OrderReconciliation(OrderSettlement):
    """The reconciling half of ``TradingService`` (which sets these attributes)."""

    exchange: IExchangeClient
    not_found_grace: timedelta
    _in_hand: dict[str, asyncio.Event]  # identifiers whose placing call (``_submit``) is still running

    async def reconcile(self) -> list[ExecutionResult]:
        """Settle every ``pending``/``open`` order of this mode by asking the exchange; never re-send.

        Then apply to the positions every filled order whose fills are not in them yet (a crash after
        its trades were written); the results list only the orders settled here.
        """
        unsettled = await self.repository.list_orders([OrderStatus.PENDING, OrderStatus.OPEN], self.mode)
        results = []
        for record in unsettled:
            if record.identifier in self._in_hand:  # its own placing call settles it (a task beside this one)
                continue
            try:
                results.append(await self._reconcile_one(record))
            except Exception as exc:  # one bad answer must not stop the others nor the position repair
                results.append(await self._reconcile_failed(record, exc))
        if results:
            log.info("orders.reconciled", count=len(results), statuses=[r.status.value for r in results])
        await self._apply_missed_fills()
        return results

    async def settle_reported(self, identifier: str) -> ExecutionResult | None:
        """Upbit reported a final state of ``identifier`` (a private ``myOrder`` event): settle that one order now
        by the same steps as ``reconcile`` (ask the exchange by identifier, then settle). None when the order is
        not ours in this mode or is no longer ``pending``/``open`` (settled by its own job or an earlier poll):
        exactly once still rests on the order's status, the trades' ids and the ``position_fills`` marker.
        The caller serialises it with the jobs that touch the account (the scheduler's job lock); an order whose
        placing call is still running in this process (e.g. a sell placed outside that lock) is waited for, and
        then found settled."""
        in_hand = self._in_hand.get(identifier)
        if in_hand is not None:
            await in_hand.wait()
        record = await self.repository.get_order(identifier)
        if record is None or record.mode is not self.mode:
            return None
        if record.status not in (OrderStatus.PENDING, OrderStatus.OPEN):
            log.info("order.event_already_settled", identifier=identifier, status=record.status.value)
            return None
        try:
            result = await self._reconcile_one(record)
        except Exception as exc:
            return await self._reconcile_failed(record, exc)
        log.info("order.settled_by_event", identifier=identifier, status=result.status.value)
        return result

    async def _reconcile_failed(self, record: OrderRecord, exc: Exception) -> ExecutionResult:
        """An order whose answer could not be handled (e.g. valid JSON that is not an order): recorded on the
        row (which stays unsettled, so the risk rules still count it and the next reconciliation asks again),
        in ``system_logs``, and announced as an ERROR event."""
        answer = exc.context.get("order") if isinstance(exc, TradingSystemError) else None
        error = f"{type(exc).__name__}: {exc}" + ("" if answer is None else f"; answer: {answer!r}"[:1000])
        error = error[:2000]
        context = {"identifier": record.identifier, "symbol": record.symbol, "side": record.side.value, "error": error}
        log.error("order.reconcile_error", **context)
        self.observer.on_exchange_error("get_order", type(exc).__name__)
        try:
            await self.repository.update_order(record.identifier, error_message=error)
            await self.repository.log_event("error", "reconciling an order failed; it stays unsettled", context)
        except Exception:  # the database may be what failed; the alert below still goes out
            log.exception("order.reconcile_error_not_recorded", identifier=record.identifier)
        self.notifier.notify(
            NotificationEvent(
                EventKind.ERROR, f"Reconciling order {record.identifier} failed", context, at=self.clock()
            )
        )
        return ExecutionResult(record.identifier, record.symbol, record.side, record.status, error=error)

    async def _apply_missed_fills(self) -> None:
        if self.positions is None:
            return
        for order, trades in await self.repository.list_filled_orders_without_position(self.mode):
            if not await self.positions.needs_applying(order, trades):
                continue
            filled_at = max((t.created_at for t in trades if t.created_at is not None), default=None)
            if not await self._apply_to_position(order, trades, None, exit_reason_of(order), filled_at):
                continue
            log.warning("position.fill_recovered", identifier=order.identifier, symbol=order.symbol)
            await self.repository.log_event(
                "warning",
                "filled order applied to positions by reconciliation",
                {"identifier": order.identifier, "symbol": order.symbol, "side": order.side.value},
            )

    async def _reconcile_one(self, record: OrderRecord) -> ExecutionResult:
        try:
            if record.exchange_uuid:
                order = await self.exchange.get_order(uuid=record.exchange_uuid)
            else:
                order = await self.exchange.get_order(identifier=record.identifier)
        except OrderNotFound:
            return await self._not_found(record)
        except ExchangeError as exc:
            self.observer.on_exchange_error("get_order", type(exc).__name__)
            log.warning("order.reconcile_failed", identifier=record.identifier, error=str(exc))
            return ExecutionResult(record.identifier, record.symbol, record.side, record.status, error=str(exc))
        log.info("order.reconciled", identifier=record.identifier, state=order.state.value)
        return await self._settle(record, order)

    async def _not_found(self, record: OrderRecord) -> ExecutionResult:
        age = self.clock() - (record.created_at or self.clock())
        if record.status is OrderStatus.PENDING and age >= self.not_found_grace:
            error = (
                f"OrderNotFound: the exchange has no order {record.identifier} after {age}; the request never arrived"
            )
            await self.repository.update_order(record.identifier, status=OrderStatus.FAILED, error_message=error)
            await self.repository.log_event(
                "warning", "pending order not found at the exchange; marked failed", {"identifier": record.identifier}
            )
            log.warning("order.not_found_failed", identifier=record.identifier, age_seconds=age.total_seconds())
            return ExecutionResult(record.identifier, record.symbol, record.side, OrderStatus.FAILED, error=error)
        log.info("order.not_found_yet", identifier=record.identifier, age_seconds=age.total_seconds())
        return ExecutionResult(record.identifier, record.symbol, record.side, record.status, error="not found yet")
