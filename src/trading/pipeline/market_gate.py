"""The market-status job: Upbit's flags (``market_event.warning``/``caution``) refreshed, and held coins that are
flagged handled by ``MARKET_WARNING_ACTION``.

- ``alert`` (default): a ``MARKET_WARNING`` notification and a ``system_logs`` line when a held coin becomes
  flagged (or its flags change); nothing is sold.
- ``tighten_stop``: the position's stop moves up to ``MARKET_WARNING_STOP_PCT`` below the current price, never
  down, at every refresh while the flag lasts (a ratchet); the exits (position job, real-time path) then sell
  at that stop. Notified once per flag; every move is in ``system_logs``.
- ``exit``: the position is sold through the exit path (``exit: market_warning``), at every refresh while it is
  flagged and held (a failed sale is tried again).

New buys in a flagged market are refused by the risk stage (``MarketStatusBook.entry_refusal``). A refresh that
fails keeps the last flags in force.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from src.api.interfaces import IExchangeClient
from src.domain.events import EventKind, NotificationEvent, Notifier
from src.domain.exits import ExitReason
from src.domain.market_stream import MarketStatus, MarketWarningAction
from src.domain.money import quantize_money
from src.position.service import PositionService
from src.risk.models import ExitSignal
from src.trading.market_status import MarketStatusBook, MarketStatusSource
from src.trading.pipeline.exits import ErrorLogger, exit_position
from src.trading.repository import ITradingRepository
from src.trading.results import ExecutionResult
from src.trading.service import TradingService
from src.utils.logger import get_logger

log = get_logger(__name__)

HUNDRED = Decimal(100)


@dataclass(slots=True)
class MarketFlagAction:
    """What the job did about one flagged held coin."""

    symbol: str
    reason: str  # market_warning | market_caution
    action: MarketWarningAction
    detail: str
    result: ExecutionResult | None = None
    error: str | None = None


@dataclass(slots=True)
class MarketGateConfig:
    """``MARKET_WARNING_ACTION`` and ``MARKET_WARNING_STOP_PCT`` (``settings.realtime``)."""

    action: MarketWarningAction = MarketWarningAction.ALERT
    stop_pct: Decimal = Decimal("1")


async def refresh_market_flags(
    *,
    source: MarketStatusSource,
    book: MarketStatusBook,
    config: MarketGateConfig,
    exchange: IExchangeClient,
    positions: PositionService,
    trading: TradingService,
    repository: ITradingRepository,
    notifier: Notifier,
    clock: Callable[[], datetime],
    log_error: ErrorLogger,
    act: bool = True,
) -> list[MarketFlagAction]:
    """Read the flags, record what changed, and (``act``) handle the flagged held coins."""
    now = clock()
    try:
        statuses = await source.get_market_statuses()
    except Exception as exc:
        book.last_error = f"{type(exc).__name__}: {exc}"[:500]
        await log_error("market status refresh failed; the last flags stay in force", exc, {})
        return []
    changed = book.update(statuses, now)
    if changed:
        flags = {status.symbol: status.reason or "clear" for status in changed}
        log.warning("market.flags_changed", flags=flags)
        await repository.log_event("warning", "Upbit market flags changed", {"flags": flags})
    held = {p.symbol: p for p in await positions.open_positions() if book.status(p.symbol).flagged}
    if not held or not act:
        return []
    newly = {symbol for symbol in held if book.is_news(symbol)}
    prices = {t.symbol: t.trade_price for t in await exchange.get_tickers(sorted(held))}
    actions: list[MarketFlagAction] = []
    for symbol, position in held.items():
        status = book.status(symbol)
        price = prices.get(symbol)
        if config.action is MarketWarningAction.EXIT and price is not None:
            sold = await _sell(status, price, position.amount, position.id, exchange, positions, trading, repository,
                               log_error)  # fmt: skip
            actions.append(sold)
        elif config.action is MarketWarningAction.TIGHTEN_STOP and price is not None:
            tightened = await _tighten(status, price, config.stop_pct, positions)
            if tightened is not None:
                actions.append(tightened)
            elif symbol in newly:
                actions.append(MarketFlagAction(symbol, str(status.reason), config.action, "stop already tighter"))
        elif symbol in newly:  # alert, or no price to act on (tried again at the next refresh)
            detail = "alert only" if config.action is MarketWarningAction.ALERT else "no price to act on"
            actions.append(MarketFlagAction(symbol, str(status.reason), MarketWarningAction.ALERT, detail))
    for action in actions:
        # a stop that follows the price up is said once per flag (system_logs has every move); sales always
        notify = action.action is not MarketWarningAction.TIGHTEN_STOP or action.symbol in newly
        await _announce(action, repository, notifier, now, notify=notify)
        book.handled(action.symbol)
    return actions


async def _tighten(
    status: MarketStatus, price: Decimal, stop_pct: Decimal, positions: PositionService
) -> MarketFlagAction | None:
    """The stop up to ``stop_pct`` below ``price``; None when it already is at or above that (nothing to say)."""
    stop = quantize_money(price * (1 - stop_pct / HUNDRED))
    moved = await positions.raise_stop(status.symbol, stop)
    if moved is None:
        return None
    position, previous = moved
    if position.stop_price is None or (previous is not None and position.stop_price <= previous):
        return None
    detail = f"stop raised from {previous if previous is not None else 'none'} to {position.stop_price} (price {price})"
    return MarketFlagAction(status.symbol, str(status.reason), MarketWarningAction.TIGHTEN_STOP, detail)


async def _sell(
    status: MarketStatus,
    price: Decimal,
    amount: Decimal,
    position_id: int | None,
    exchange: IExchangeClient,
    positions: PositionService,
    trading: TradingService,
    repository: ITradingRepository,
    log_error: ErrorLogger,
) -> MarketFlagAction:
    """Sell the position through the exit path (``exit: market_warning``), exactly once per order."""
    signal = ExitSignal(status.symbol, ExitReason.MARKET_WARNING, price, price, position_id)
    report = await exit_position(
        signal, amount, exchange=exchange, positions=positions, trading=trading, repository=repository,
        log_error=log_error,
    )  # fmt: skip
    detail = f"sold: {report.reason}" if report.result is not None else f"sale failed: {report.error}"
    return MarketFlagAction(
        status.symbol, str(status.reason), MarketWarningAction.EXIT, detail, report.result, report.error
    )


async def _announce(
    action: MarketFlagAction, repository: ITradingRepository, notifier: Notifier, at: datetime, *, notify: bool
) -> None:
    fields: dict[str, Any] = {
        "symbol": action.symbol,
        "reason": action.reason,
        "action": action.action.value,
        "detail": action.detail,
        "status": action.result.status.value if action.result is not None else None,
        "error": action.error,
    }
    log.warning("market.held_coin_flagged", **fields)
    await repository.log_event("warning", f"held coin {action.symbol} flagged by Upbit ({action.reason})", fields)
    if notify:
        notifier.notify(NotificationEvent(EventKind.MARKET_WARNING, f"{action.symbol}: {action.reason}", fields, at=at))
