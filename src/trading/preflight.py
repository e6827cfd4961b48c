"""``POST /v1/orders/test`` before the first order per market: after the process starts and after a maintenance
announcement. Upbit answers ``market_offline`` for a market that takes no orders yet; such an order is not sent
(``TradingService`` marks its row ``failed`` with the reason, so nothing is left pending).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from src.api.interfaces import OrderRequest
from src.exceptions import Blocked, ExchangeError, ExchangeUnavailable, RateLimited
from src.utils.logger import get_logger

log = get_logger(__name__)


@runtime_checkable
class OrderTester(Protocol):
    """An exchange that validates an order without placing it (``UpbitClient``); raises its refusal."""

    async def test_order(self, request: OrderRequest) -> None: ...


class OrderPreflight:
    """Which markets still need a test order, and the test itself.

    A market is tested until Upbit accepts a test order for it; then its orders go straight out until
    ``reset`` (a maintenance announcement). A test that cannot be answered (5xx, timeout, 429, 418) does not
    hold the order back: the order path handles those outcomes, and the next order tests again.
    """

    def __init__(self, tester: OrderTester) -> None:
        self.tester = tester
        self._cleared: set[str] = set()

    def needs_test(self, symbol: str) -> bool:
        return symbol not in self._cleared

    async def refusal(self, request: OrderRequest) -> ExchangeError | None:
        """Upbit's refusal of ``request`` as a test order (e.g. ``MarketOffline``), or None to send it."""
        if not self.needs_test(request.symbol):
            return None
        try:
            await self.tester.test_order(request)
        except (ExchangeUnavailable, RateLimited, Blocked) as exc:
            log.warning("order.test_unanswered", symbol=request.symbol, error=f"{type(exc).__name__}: {exc.message}")
            return None
        except ExchangeError as exc:
            log.warning("order.test_refused", symbol=request.symbol, name=exc.name, error=exc.message)
            return exc
        self._cleared.add(request.symbol)
        log.info("order.test_passed", symbol=request.symbol)
        return None

    def reset(self, symbols: Iterable[str] | None = None) -> None:
        """Test again before the next order in ``symbols`` (every market when None)."""
        if symbols is None:
            self._cleared.clear()
        else:
            self._cleared.difference_update(symbols)
