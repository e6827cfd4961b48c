"""Upbit KRW-market rules: tick sizes by date, the minimum order, and rounding to the grid."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from src.domain.money import VOLUME_QUANTUM

MIN_ORDER_KRW = Decimal("5000")
# Since 2025-05-07 Upbit shows 30 book levels and refuses a market order larger than what they hold
# (a market buy's KRW total above the 30 asks, a market sell's volume above the 30 bids).
MAX_SWEEP_LEVELS = 30

# (price floor, tick) from the highest band down; each table applies from its start date (UTC).
# TICK_TABLES lists them newest first; the backtester vectorises them.
_TICKS_UNTIL_2024_01_29: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal("2000000"), Decimal("1000")),
    (Decimal("1000000"), Decimal("500")),
    (Decimal("500000"), Decimal("100")),
    (Decimal("100000"), Decimal("50")),
    (Decimal("10000"), Decimal("10")),
    (Decimal("1000"), Decimal("5")),
    (Decimal("100"), Decimal("1")),
    (Decimal("10"), Decimal("0.1")),
    (Decimal("0"), Decimal("0.01")),
)
_TICKS_FROM_2024_01_29: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal("2000000"), Decimal("1000")),
    (Decimal("1000000"), Decimal("500")),
    (Decimal("500000"), Decimal("100")),
    (Decimal("100000"), Decimal("50")),
    (Decimal("10000"), Decimal("10")),
    (Decimal("1000"), Decimal("1")),
    (Decimal("100"), Decimal("0.1")),
    (Decimal("10"), Decimal("0.01")),
    (Decimal("0"), Decimal("0.001")),
)
_TICKS_FROM_2025_07_31: tuple[tuple[Decimal, Decimal], ...] = (
    (Decimal("1000000"), Decimal("1000")),
    (Decimal("500000"), Decimal("500")),
    (Decimal("100000"), Decimal("100")),
    (Decimal("50000"), Decimal("50")),
    (Decimal("10000"), Decimal("10")),
    (Decimal("5000"), Decimal("5")),
    (Decimal("100"), Decimal("1")),
    # Below 100 KRW the post-2025-07-31 table was not published in our sources; keep the previous one.
    (Decimal("10"), Decimal("0.01")),
    (Decimal("0"), Decimal("0.001")),
)
TICK_TABLES = (
    (datetime(2025, 7, 31, tzinfo=UTC), _TICKS_FROM_2025_07_31),
    (datetime(2024, 1, 29, tzinfo=UTC), _TICKS_FROM_2024_01_29),
    (datetime.min.replace(tzinfo=UTC), _TICKS_UNTIL_2024_01_29),
)


def krw_tick_size(price: Decimal, at: datetime | None = None) -> Decimal:
    """The KRW tick for ``price`` under the table in force at ``at`` (now when omitted)."""
    when = at or datetime.now(UTC)
    table = next(ticks for start, ticks in TICK_TABLES if when >= start)
    for floor, tick in table:
        if price >= floor:
            return tick
    return table[-1][1]


def round_to_tick(price: Decimal, at: datetime | None = None, *, up: bool = False) -> Decimal:
    """Round a price onto the tick grid of the dated table: down by default (safer for buys), up when asked."""
    return round_to_grid(price, krw_tick_size(price, at), up=up)


def round_to_grid(price: Decimal, tick: Decimal, *, up: bool = False) -> Decimal:
    """Round a price onto multiples of ``tick`` (e.g. the exchange's own tick size): down, or up when asked."""
    steps = (price / tick).to_integral_value(rounding=ROUND_UP if up else ROUND_DOWN)
    return (steps * tick).quantize(tick) if tick < 1 else steps * tick


def truncate_volume(volume: Decimal) -> Decimal:
    """Upbit volumes carry at most 8 decimals; extra precision is cut, never rounded up."""
    return volume.quantize(VOLUME_QUANTUM, rounding=ROUND_DOWN)
