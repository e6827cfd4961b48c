"""The ticks replay makes of a candle for the real-time exits (``candle_path``, ``leg_ticks``): the adverse move
first, every level a leg passes put on the path in the order the price passes it."""

from __future__ import annotations

from decimal import Decimal

from src.trading.pipeline.realtime_exits import candle_path, leg_ticks


def d(value: int) -> Decimal:
    return Decimal(value)


def test_a_candle_is_walked_open_low_high_close() -> None:
    assert candle_path(d(100), d(110), d(90), d(105)) == [d(100), d(90), d(110), d(105)]


def test_a_stop_between_the_open_and_the_low_is_crossed_at_the_stop() -> None:
    """Given a stop at 95 and a target at 108 inside a candle 100 -> 90 -> 110, the falling leg passes the stop
    before reaching the low, and the rising leg passes the stop and then the target."""
    levels = [d(95), d(108)]
    assert leg_ticks(d(100), d(90), levels) == [d(95), d(90)]
    assert leg_ticks(d(90), d(110), levels) == [d(95), d(108), d(110)]


def test_a_level_at_a_leg_end_is_not_repeated_and_nothing_outside_is_added() -> None:
    assert leg_ticks(d(100), d(95), [d(95), d(120), d(50)]) == [d(95)]
    assert leg_ticks(d(100), d(100), [d(100)]) == [d(100)]


def test_levels_on_a_falling_leg_come_highest_first() -> None:
    assert leg_ticks(d(100), d(80), [d(85), d(95), d(90)]) == [d(95), d(90), d(85), d(80)]
