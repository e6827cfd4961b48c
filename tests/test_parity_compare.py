"""The parity report's comparison (``src.backtesting.parity``) on hand-made round trip lists: what counts as a
difference, and what the report says about it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from src.backtesting.parity import DifferenceKind, RoundTrip, compare_round_trips, price_gap_pct
from src.exceptions import DataError

T0 = datetime(2023, 9, 1, 3, tzinfo=UTC)
HOUR = timedelta(hours=1)


def trip(
    entry_hour: int,
    exit_hour: int | None,
    reason: str = "signal",
    entry_price: float = 35_000_000.0,
    exit_price: float | None = 35_500_000.0,
) -> RoundTrip:
    return RoundTrip(
        entry_at=T0 + entry_hour * HOUR,
        entry_price=entry_price,
        exit_at=None if exit_hour is None else T0 + exit_hour * HOUR,
        exit_price=None if exit_hour is None else exit_price,
        exit_reason=reason,
    )


def kinds(report_differences: list) -> list[DifferenceKind]:
    return [d.kind for d in report_differences]


def test_equal_lists_are_identical_and_say_so() -> None:
    # Given the same two round trips on both sides, one still open at the end
    backtest = [trip(0, 5, "stop_loss"), trip(10, None, "end")]
    replay = [trip(0, 5, "stop_loss"), trip(10, None, "end")]

    # When compared
    report = compare_round_trips(backtest, replay, 0.05)

    # Then there is no difference and the summary counts them
    assert report.identical
    assert report.matched == 2
    assert report.lines() == ["identical: 2 round trips in both, prices within 0.05 %"]


def test_an_open_position_is_not_compared_by_its_exit() -> None:
    """The backtest marks a position still open after the last bar at the last close; the bot has not sold."""
    backtest = [RoundTrip(T0, 100.0, T0 + 9 * HOUR, 140.0, "end")]
    replay = [RoundTrip(T0, 100.0, None, None, "end")]

    assert compare_round_trips(backtest, replay, 0.0).identical


def test_an_extra_backtest_trade_is_only_in_the_backtest_and_the_bot_cycle_explains_it() -> None:
    # Given a backtest entry at hour 8 the bot did not make, its cycle at that moment blocked by spacing
    backtest = [trip(0, 5), trip(8, 9)]
    replay = [trip(0, 5)]
    cycles = {T0 + 8 * HOUR: "blocked (stage validation: rejected, MIN_TRADE_INTERVAL_HOURS)"}

    # When compared
    report = compare_round_trips(backtest, replay, 0.05, replay_cycles=cycles)

    # Then one difference: only in the backtest, with the bot's cycle outcome as the reason
    assert not report.identical
    assert kinds(report.differences) == [DifferenceKind.ONLY_BACKTEST]
    difference = report.differences[0]
    assert difference.entry_at == T0 + 8 * HOUR
    assert difference.replay is None
    assert "MIN_TRADE_INTERVAL_HOURS" in difference.why
    assert report.summary() == "DIFFERENT: backtest 2 round trips, replay 1; 1 identical, 1 difference(s)"


def test_a_missed_trade_is_only_in_the_replay_and_names_the_position_the_backtest_held() -> None:
    # Given the backtest held its first position until hour 12, while the bot sold at 5 and bought again at 8
    backtest = [trip(0, 12, "time_out")]
    replay = [trip(0, 5, "stop_loss"), trip(8, 9)]

    report = compare_round_trips(backtest, replay, 0.05)

    # Then the first pair differs by exit reason and moment, and the second trade is only in the replay, because
    # the backtest still held the first position
    assert kinds(report.differences) == [
        DifferenceKind.EXIT_MOMENT,
        DifferenceKind.EXIT_REASON,
        DifferenceKind.ONLY_REPLAY,
    ]
    missed = report.differences[-1]
    assert missed.backtest is None
    assert missed.replay == replay[1]
    assert "the backtest still held the position bought at 2023-09-01 03:00" in missed.why
    assert report.lines()[-1].startswith("The lists part at 2023-09-01 03:00")


def test_a_different_exit_reason_at_the_same_moment_is_one_difference() -> None:
    report = compare_round_trips([trip(0, 5, "take_profit")], [trip(0, 5, "trailing_stop")], 0.05)

    assert kinds(report.differences) == [DifferenceKind.EXIT_REASON]
    assert "backtest take_profit" in report.differences[0].why
    assert "replay trailing_stop" in report.differences[0].why


@pytest.mark.parametrize(
    ("entry_price", "exit_price", "expected"),
    [
        (35_017_500.0, 35_500_000.0, []),  # 0.05 % apart: within the slippage
        (35_017_501.0, 35_500_000.0, [DifferenceKind.ENTRY_PRICE]),  # just beyond
        (35_000_000.0, 35_300_000.0, [DifferenceKind.EXIT_PRICE]),  # 0.56 % apart
    ],
)
def test_prices_must_be_within_the_slippage(
    entry_price: float, exit_price: float, expected: list[DifferenceKind]
) -> None:
    backtest = [trip(0, 5, entry_price=entry_price, exit_price=exit_price)]
    replay = [trip(0, 5)]

    report = compare_round_trips(backtest, replay, 0.05)

    assert kinds(report.differences) == expected
    if expected:
        assert "more than the 0.05 % slippage" in report.differences[0].why


def test_with_zero_slippage_prices_must_be_equal() -> None:
    assert compare_round_trips([trip(0, 5)], [trip(0, 5)], 0.0).identical
    report = compare_round_trips([trip(0, 5, exit_price=35_500_001.0)], [trip(0, 5)], 0.0)
    assert kinds(report.differences) == [DifferenceKind.EXIT_PRICE]
    assert price_gap_pct(101.0, 100.0) == pytest.approx(1.0)


def test_backtest_records_become_round_trips_and_the_json_is_strict() -> None:
    # Given a backtest.py --json trade record (naive ISO moments are UTC)
    record = {
        "entry_time": "2023-09-01T03:00:00+00:00",
        "entry_price": 35_000_000.0,
        "exit_time": "2023-09-01T08:00:00",
        "exit_price": 35_500_000.0,
        "exit_reason": "signal",
        "pnl_pct": 1.3,
    }
    converted = RoundTrip.from_backtest(record)
    assert converted == trip(0, 5)

    report = compare_round_trips([converted], [], 0.05, context={"strategy": "rule_breakout"})
    written = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert written["identical"] is False
    assert written["strategy"] == "rule_breakout"
    assert written["counts"] == {"backtest": 1, "replay": 0, "matched": 0}
    assert written["differences"][0]["kind"] == "only_backtest"
    assert written["backtest"][0]["exit_at"] == "2023-09-01T08:00:00+00:00"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"entry_price": 1.0, "exit_reason": "end"}, "lacks 'entry_time'"),
        ({"entry_time": "yesterday", "entry_price": 1.0, "exit_reason": "end"}, "not an ISO moment"),
    ],
)
def test_a_bad_backtest_record_is_one_clear_error(record: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        RoundTrip.from_backtest(record)


def test_bad_slippage_and_two_replay_trips_at_one_moment_are_refused() -> None:
    with pytest.raises(DataError, match="slippage"):
        compare_round_trips([], [], float("nan"))
    with pytest.raises(DataError, match="same entry moment"):
        compare_round_trips([], [trip(0, 1), trip(0, 2)], 0.05)


def test_the_strategy_signals_tell_which_side_saw_other_candles() -> None:
    """Given the strategy signals entries at hours 0 and 8 only: the replay's extra trade at hour 3 had no signal
    (that side computed on other candles), the backtest's extra trade at hour 8 had one (the bot was stopped by
    something else)."""
    backtest = [trip(0, 2), trip(8, 9)]
    replay = [trip(0, 2), trip(3, 4)]
    signals = {T0, T0 + 8 * HOUR}

    report = compare_round_trips(backtest, replay, 0.05, entry_signals=signals)

    only_replay, only_backtest = report.differences
    assert only_replay.kind is DifferenceKind.ONLY_REPLAY
    assert "the strategy signals no entry for that bar" in only_replay.why
    assert only_backtest.kind is DifferenceKind.ONLY_BACKTEST
    assert "the strategy signals an entry for that bar" in only_backtest.why


def test_a_trade_on_a_bar_outside_the_window_is_named_so() -> None:
    """The window's bars open in [start, end) and are acted on at their close, in (start, end]: a buy at the
    moment ``start`` acted on the bar before the window."""
    report = compare_round_trips([trip(1, 2)], [trip(0, 1), trip(1, 2)], 0.05, window=(T0, T0 + 5 * HOUR))

    [outside] = report.differences
    assert outside.kind is DifferenceKind.ONLY_REPLAY
    assert "it acted on a bar outside the window (the window's bars close in (2023-09-01 03:00, " in outside.why
