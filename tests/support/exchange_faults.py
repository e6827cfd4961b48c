"""An exchange behind a flaky network, for reconciliation tests: answers lost after the order was accepted,
order queries that keep failing, and answers that are valid JSON but not an order.

A malformed answer goes through the Upbit client's own ``parse_order``, so the error the trading service sees
is the one the live client raises."""

from __future__ import annotations

from typing import Any

from src.api.interfaces import IExchangeClient, Order, OrderRequest
from src.api.upbit.parsing import parse_order
from src.exceptions import ExchangeUnavailable


class AnswerFaults:
    """Wraps an exchange (normally the paper one); everything not faulted is passed through."""

    def __init__(self, exchange: IExchangeClient) -> None:
        self.exchange = exchange
        self.lose_answers = False  # the order is placed, then the connection drops before the answer
        self.queries_down = False  # every order query fails with a 502
        self.malformed: dict[str, Any] = {}  # identifier -> the JSON the exchange answers for it

    def __getattr__(self, name: str) -> Any:
        return getattr(self.exchange, name)

    async def place_order(self, request: OrderRequest) -> Order:
        order = await self.exchange.place_order(request)
        if self.lose_answers:
            raise ExchangeUnavailable("connection dropped after the order was accepted", identifier=request.identifier)
        return order

    async def get_order(self, *, uuid: str | None = None, identifier: str | None = None) -> Order:
        if identifier is not None and identifier in self.malformed:
            return parse_order(self.malformed[identifier])
        if self.queries_down:
            raise ExchangeUnavailable("502 Bad Gateway from /v1/order", status=502)
        return await self.exchange.get_order(uuid=uuid, identifier=identifier)
