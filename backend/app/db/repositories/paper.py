"""The paper exchange's account on the database (``src.api.paper_account.PaperAccountStore``).

Balances live in ``paper_balances`` and orders in ``paper_orders`` (the full order in Upbit's JSON
form), keyed by an account name, so the paper account survives restarts and
``get_order(identifier=...)`` answers after a crash exactly as Upbit would.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.types import utcnow
from backend.app.models import PaperBalanceRow, PaperOrderRow
from src.api.interfaces import Balance, ExchangeOrderState, Order
from src.api.upbit.parsing import order_to_payload, parse_order

_OPEN_STATES = (ExchangeOrderState.WAIT.value, ExchangeOrderState.WATCH.value)


class SqlPaperAccountStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], account: str = "paper") -> None:
        self._sessions = sessions
        self.account = account

    async def load_balances(self) -> dict[str, Balance]:
        query = select(PaperBalanceRow).where(PaperBalanceRow.account == self.account)
        async with self._sessions() as session:
            return {
                row.currency: Balance(row.currency, row.balance, row.locked, row.avg_buy_price)
                for row in await session.scalars(query)
            }

    async def save_balances(self, balances: dict[str, Balance]) -> None:
        async with self._sessions.begin() as session:
            rows = {
                row.currency: row
                for row in await session.scalars(
                    select(PaperBalanceRow).where(PaperBalanceRow.account == self.account).with_for_update()
                )
            }
            for currency, balance in balances.items():
                row = rows.pop(currency, None)
                if row is None:
                    session.add(
                        PaperBalanceRow(
                            account=self.account,
                            currency=currency,
                            balance=balance.balance,
                            locked=balance.locked,
                            avg_buy_price=balance.avg_buy_price,
                        )
                    )
                    continue
                row.balance, row.locked, row.avg_buy_price = balance.balance, balance.locked, balance.avg_buy_price
                row.updated_at = utcnow()
            if rows:
                await session.execute(
                    delete(PaperBalanceRow).where(
                        PaperBalanceRow.account == self.account, PaperBalanceRow.currency.in_(list(rows))
                    )
                )

    async def save_order(self, order: Order) -> None:
        payload = order_to_payload(order)
        async with self._sessions.begin() as session:
            row = await session.scalar(
                select(PaperOrderRow).where(PaperOrderRow.account == self.account, PaperOrderRow.uuid == order.uuid)
            )
            if row is None:
                session.add(
                    PaperOrderRow(
                        account=self.account,
                        uuid=order.uuid,
                        identifier=order.identifier,
                        symbol=order.symbol,
                        state=order.state,
                        payload=payload,
                    )
                )
                return
            row.state = order.state
            row.payload = payload
            row.updated_at = utcnow()

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order | None:
        query = select(PaperOrderRow.payload).where(PaperOrderRow.account == self.account)
        if uuid:
            query = query.where(PaperOrderRow.uuid == uuid)
        elif identifier:
            query = query.where(PaperOrderRow.identifier == identifier)
        else:
            return None
        async with self._sessions() as session:
            payload = await session.scalar(query)
        return None if payload is None else parse_order(payload)

    async def list_open_orders(self, symbol: str | None = None) -> list[Order]:
        query = select(PaperOrderRow.payload).where(
            PaperOrderRow.account == self.account, PaperOrderRow.state.in_(_OPEN_STATES)
        )
        if symbol is not None:
            query = query.where(PaperOrderRow.symbol == symbol)
        async with self._sessions() as session:
            return [parse_order(payload) for payload in await session.scalars(query.order_by(PaperOrderRow.id))]
