"""Typed errors of the trading domain. Each carries its context; the edge that can act handles it."""

from __future__ import annotations

from typing import Any


class TradingSystemError(Exception):
    """Base of every error raised on purpose by this system."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context


class ConfigurationError(TradingSystemError):
    """Settings are missing or invalid; the message names the key and the expected form."""


class DataError(TradingSystemError):
    """Candle files or market data are malformed (the message names file, line and reason)."""


class DatabaseNotMigratedError(TradingSystemError):
    """The database schema is behind the newest migration."""


class DatabaseUnavailable(TradingSystemError):
    """The database cannot be reached or refuses the connection (server down, wrong host, port or credentials)."""


class ExchangeError(TradingSystemError):
    """The exchange refused or failed a request. ``name`` is the exchange's error name, if any."""

    def __init__(self, message: str, *, name: str | None = None, status: int | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.name = name
        self.status = status


class AuthError(ExchangeError):
    """Authentication failed (bad signature, query hash, nonce, expired key, IP, scope)."""


class RateLimited(ExchangeError):
    """HTTP 429: too many requests; wait and retry."""


class Blocked(ExchangeError):
    """HTTP 418: the exchange blocked this client after repeated excess requests."""


class InsufficientFunds(ExchangeError):
    """Not enough balance for the order."""


class UnderMinTotal(ExchangeError):
    """The order is below the exchange's minimum total (5,000 KRW on Upbit's KRW market)."""


class InvalidPrice(ExchangeError):
    """The price is not on the tick grid."""


class InvalidOrder(ExchangeError):
    """The order's parameters are invalid for its type."""


class DuplicateOrderIdentifier(InvalidOrder):
    """The client ``identifier`` was used before (it is unique forever): reconcile by identifier."""


class OrderNotFound(ExchangeError):
    """No order with that uuid or identifier."""


class MarketOffline(ExchangeError):
    """The market takes no orders yet (Upbit's ``market_offline``, e.g. right after maintenance)."""


class ExchangeUnavailable(ExchangeError):
    """5xx, timeout or connection failure: the outcome of the request is unknown."""


class MarketDataUnavailable(TradingSystemError):
    """A market-data service (e.g. the fear & greed index) failed, timed out or answered an error."""


class AIServiceError(TradingSystemError):
    """The AI adviser could not give an answer (used inside the AI service; never escapes a cycle)."""


class InvalidInput(TradingSystemError):
    """A caller passed arguments that cannot be right (e.g. a sell sized in KRW); the message names them."""


class PositionConflict(TradingSystemError):
    """The stored positions disagree with the requested change (e.g. a second open position for a symbol)."""


class SchedulerLockHeld(TradingSystemError):
    """Another scheduler already trades this account."""


class SchedulerLockLost(TradingSystemError):
    """This process no longer holds the single-trader lock (database restarted, lease taken over): no order
    may be sent until it is held again. ``taken_over``: another process holds it now (final for this one)."""

    def __init__(self, message: str, *, taken_over: bool = False, **context: Any) -> None:
        super().__init__(message, **context)
        self.taken_over = taken_over


class NotificationFailed(TradingSystemError):
    """A notification (Telegram message) could not be delivered after every retry; context names the chat."""
