"""The ground floor: state machines, timeframes, exit reasons and the money convention."""

from __future__ import annotations

from decimal import Decimal

import pytest

from src.domain.bot import (
    BOT_TRANSITIONS,
    BotAction,
    BotState,
    DesiredState,
    IllegalBotTransition,
    check_bot_transition,
    desired_state_for,
    following,
)
from src.domain.exits import ExitReason
from src.domain.money import ZERO, quantize_money, report_krw, whole_krw
from src.domain.orders import ORDER_TRANSITIONS, IllegalOrderTransition, OrderStatus, check_transition
from src.domain.timeframes import Timeframe


def test_every_state_has_a_row_in_its_transition_table() -> None:
    assert set(ORDER_TRANSITIONS) == set(OrderStatus)
    assert set(BOT_TRANSITIONS) == set(BotState)


@pytest.mark.parametrize("current", list(OrderStatus))
@pytest.mark.parametrize("new", list(OrderStatus))
def test_order_transitions_follow_the_table(current: OrderStatus, new: OrderStatus) -> None:
    if new is current or new in ORDER_TRANSITIONS[current]:
        check_transition(current, new)
    else:
        with pytest.raises(IllegalOrderTransition):
            check_transition(current, new)


def test_a_final_order_status_goes_nowhere() -> None:
    for final in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.FAILED):
        with pytest.raises(IllegalOrderTransition):
            check_transition(final, OrderStatus.OPEN)


def test_the_bot_follows_every_desired_state_and_never_starts_again() -> None:
    state = BotState.STARTING
    for desired in (DesiredState.PAUSED, DesiredState.RUNNING, DesiredState.STOPPED, DesiredState.RUNNING):
        state = following(state, desired)
        assert state.value == desired.value
    with pytest.raises(IllegalBotTransition):
        check_bot_transition(BotState.RUNNING, BotState.STARTING)
    assert desired_state_for(BotAction.RESUME) is DesiredState.RUNNING


@pytest.mark.parametrize(
    ("timeframe", "seconds", "minutes"),
    [(Timeframe.M1, 60, 1), (Timeframe.M15, 900, 15), (Timeframe.H4, 14400, 240), (Timeframe.W1, 604800, 10080)],
)
def test_timeframe_lengths(timeframe: Timeframe, seconds: int, minutes: int) -> None:
    assert timeframe.seconds == seconds
    assert timeframe.minutes == minutes
    assert Timeframe.from_minutes(minutes) is timeframe
    assert Timeframe.from_seconds(seconds) is timeframe


def test_timeframe_parsing() -> None:
    assert Timeframe.parse("1h") is Timeframe.H1
    assert Timeframe.is_known("1d")
    assert not Timeframe.is_known("2h")
    with pytest.raises(ValueError, match="unknown timeframe '2h'; expected one of 1m, 3m"):
        Timeframe.parse("2h")
    with pytest.raises(ValueError):
        Timeframe.from_minutes(7)
    assert Timeframe.from_seconds(7.5) is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("exit: stop_loss (price 1, level 2)", ExitReason.STOP_LOSS),
        ("exit: take_profit", ExitReason.TAKE_PROFIT),
        ("rules: exit signal", ExitReason.SIGNAL),
        ("exit:", ExitReason.SIGNAL),
    ],
)
def test_exit_reason_of_an_order_reason(reason: str, expected: ExitReason) -> None:
    assert ExitReason.of_order_reason(reason) is expected


def test_money_convention() -> None:
    assert Decimal("0") == ZERO
    assert quantize_money(Decimal("1.123456789")) == Decimal("1.12345679")
    assert whole_krw(Decimal("5999.99")) == Decimal("5999")
    assert str(report_krw(Decimal("10076746.4567"))) == "10076746.46"
