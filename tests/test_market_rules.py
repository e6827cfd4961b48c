"""KRW tick sizes by date, rounding onto the grid, and volume truncation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from src.domain.market_rules import krw_tick_size, round_to_tick, truncate_volume

BEFORE_2024 = datetime(2023, 6, 1, tzinfo=UTC)
DURING_2024 = datetime(2024, 6, 1, tzinfo=UTC)
AFTER_2025_07_31 = datetime(2025, 8, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("price", "at", "tick"),
    [
        ("95000000", BEFORE_2024, "1000"),
        ("1500000", BEFORE_2024, "500"),
        ("1500000", AFTER_2025_07_31, "1000"),
        ("3000", BEFORE_2024, "5"),
        ("3000", DURING_2024, "1"),
        ("3000", AFTER_2025_07_31, "1"),
        ("7000", AFTER_2025_07_31, "5"),
        ("75000", DURING_2024, "10"),
        ("75000", AFTER_2025_07_31, "50"),
        ("500", DURING_2024, "0.1"),
        ("500", AFTER_2025_07_31, "1"),
    ],
)
def test_tick_size_follows_the_table_in_force(price: str, at: datetime, tick: str) -> None:
    assert krw_tick_size(Decimal(price), at) == Decimal(tick)


def test_the_table_changes_exactly_at_its_start() -> None:
    assert krw_tick_size(Decimal("3000"), datetime(2024, 1, 28, 23, 59, tzinfo=UTC)) == Decimal("5")
    assert krw_tick_size(Decimal("3000"), datetime(2024, 1, 29, tzinfo=UTC)) == Decimal("1")


def test_rounding_goes_down_by_default_and_up_on_request() -> None:
    assert round_to_tick(Decimal("95000999"), BEFORE_2024) == Decimal("95000000")
    assert round_to_tick(Decimal("95000001"), BEFORE_2024, up=True) == Decimal("95001000")
    assert round_to_tick(Decimal("512.37"), DURING_2024) == Decimal("512.3")
    assert round_to_tick(Decimal("95000000"), BEFORE_2024) == Decimal("95000000")


def test_volume_is_truncated_to_eight_decimals_never_rounded_up() -> None:
    assert truncate_volume(Decimal("0.123456789")) == Decimal("0.12345678")
    assert truncate_volume(Decimal("1")) == Decimal("1.00000000")
