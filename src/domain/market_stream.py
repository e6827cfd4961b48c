"""Real-time market and account events as our own types (Upbit's WebSocket and its REST fallback).

The ground floor for the real-time path (issue: Upbit-native safety): the public stream yields
``PriceTick``s, the private stream ``OrderEvent``s and ``Announcement``s, and the market list's flags
are ``MarketStatus``. Nothing here knows about sockets, JSON or the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class TickSource(StrEnum):
    """Where a price came from: the WebSocket stream, the REST fallback poll, or a replay's candles."""

    STREAM = "stream"
    REST = "rest"
    REPLAY = "replay"


class StreamState(StrEnum):
    """The state of a supervised stream, as status, metrics and logs show it."""

    OFF = "off"  # switched off by a setting (or nothing to watch)
    CONNECTING = "connecting"
    LIVE = "live"  # connected, subscribed, messages arriving
    STALE = "stale"  # connected but silent for longer than the stale limit: the REST fallback polls
    DOWN = "down"  # disconnected, reconnecting with backoff: the REST fallback polls


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One trade price of ``symbol``. ``at`` is the exchange's time (UTC); ``received`` the monotonic clock
    (``time.perf_counter()``) when it arrived in this process, for latency measurement."""

    symbol: str
    price: Decimal
    at: datetime
    source: TickSource
    received: float = 0.0


class MarketWarningAction(StrEnum):
    """What happens to a held coin that Upbit flags with a warning or caution (``MARKET_WARNING_ACTION``)."""

    ALERT = "alert"  # notify and record only (default)
    TIGHTEN_STOP = "tighten_stop"  # move the stop up to MARKET_WARNING_STOP_PCT below the price
    EXIT = "exit"  # sell the position through the exit path


@dataclass(frozen=True, slots=True)
class MarketStatus:
    """A market's flags from ``GET /v1/market/all?is_details=true`` (``market_event.warning``/``caution``)."""

    symbol: str
    warning: bool = False
    caution: bool = False

    @property
    def flagged(self) -> bool:
        return self.warning or self.caution

    @property
    def reason(self) -> str | None:
        """``market_warning`` / ``market_caution`` (both: warning), or None when the market is clear."""
        if self.warning:
            return "market_warning"
        if self.caution:
            return "market_caution"
        return None


class OrderEventState(StrEnum):
    """``state`` of a private ``myOrder`` event (``trade`` is one execution; ``prevented``: self-match prevention)."""

    WAIT = "wait"
    WATCH = "watch"
    TRADE = "trade"
    DONE = "done"
    CANCEL = "cancel"
    PREVENTED = "prevented"

    @property
    def is_final(self) -> bool:
        return self in (OrderEventState.DONE, OrderEventState.CANCEL, OrderEventState.PREVENTED)


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """A ``myOrder`` event: what Upbit reports about one of our orders, keyed by its ``identifier``."""

    uuid: str
    identifier: str | None
    symbol: str
    state: OrderEventState
    at: datetime
    executed_volume: Decimal = Decimal(0)
    remaining_volume: Decimal = Decimal(0)
    side: str | None = None  # "bid" | "ask" (the event's ``ask_bid`` in lower case)
    order_type: str | None = None  # limit | price | market | best
    price: Decimal | None = None  # the order's price; for ``trade`` the execution price
    volume: Decimal | None = None  # the order's volume; for ``trade`` the executed volume of that trade
    avg_price: Decimal | None = None
    executed_funds: Decimal = Decimal(0)
    paid_fee: Decimal = Decimal(0)
    trade_uuid: str | None = None  # ``trade`` only: the execution's id (one event per execution)
    is_maker: bool | None = None  # ``trade`` only


class AnnouncementCategory(StrEnum):
    """Upbit's announcement categories (private ``announcement`` stream); unknown ones read as ``NOTICE``."""

    NOTICE = "notice"
    TRADE = "trade"
    WALLET = "wallet"
    MAINTENANCE = "maintenance"
    DIGITAL_ASSET = "digital_asset"
    NFT = "nft"
    SERVICE = "service"
    EVENT = "event"
    NOTE = "note"
    TRADING = "trading"
    AIRDROP = "airdrop"
    FEATURE = "feature"
    DISCLOSURE = "disclosure"


@dataclass(frozen=True, slots=True)
class Announcement:
    """An ``announcement`` event: Upbit's own notice (delisting, deposit or withdrawal halt, maintenance...).

    ``markets``: the KRW markets the title names (e.g. ``KRW-ABC`` for "... 코인(ABC) ..."), possibly none.
    """

    uuid: str
    category: AnnouncementCategory
    title: str
    at: datetime
    url: str | None = None
    markets: tuple[str, ...] = ()
    updated: bool = False  # ``event_type`` UPDATED: a change to a notice already sent (same ``uuid``)
