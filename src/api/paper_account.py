"""Where the paper exchange keeps its account: balances and orders (``PaperAccountStore``).

The backend implements the port over the database (``SqlPaperAccountStore``), so ``get_order(identifier=...)``
still answers after a restart; ``InMemoryPaperAccountStore`` serves tests and replay runs without one.
"""

from __future__ import annotations

from typing import Protocol

from src.api.interfaces import Balance, ExchangeOrderState, Order


class PaperAccountStore(Protocol):
    """Where the paper account lives (the backend implements it over the database)."""

    async def load_balances(self) -> dict[str, Balance]: ...

    async def save_balances(self, balances: dict[str, Balance]) -> None: ...

    async def save_order(self, order: Order) -> None: ...

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order | None: ...

    async def list_open_orders(self, symbol: str | None = None) -> list[Order]: ...


class InMemoryPaperAccountStore:
    """``PaperAccountStore`` in memory (tests, replay runs without a database)."""

    def __init__(self) -> None:
        self.balances: dict[str, Balance] = {}
        self.orders: dict[str, Order] = {}

    async def load_balances(self) -> dict[str, Balance]:
        return dict(self.balances)

    async def save_balances(self, balances: dict[str, Balance]) -> None:
        self.balances = dict(balances)

    async def save_order(self, order: Order) -> None:
        self.orders[order.uuid] = order

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order | None:
        if uuid:
            return self.orders.get(uuid)
        return next((o for o in self.orders.values() if identifier and o.identifier == identifier), None)

    async def list_open_orders(self, symbol: str | None = None) -> list[Order]:
        return [
            o
            for o in self.orders.values()
            if o.state is ExchangeOrderState.WAIT and (symbol is None or o.symbol == symbol)
        ]
