"""RiskManager over the in-memory store: entry rules at their boundaries, sizing, circuit breakers, exits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from src.config.trading_groups import RiskConfig
from src.domain.decisions import PositionSizing
from src.domain.events import EventKind
from src.domain.exits import ExitPolicy, ExitReason
from src.domain.modes import TradingMode
from src.exceptions import InvalidInput
from src.risk import (
    EntryRule,
    InMemoryRiskStore,
    PortfolioView,
    PositionRecord,
    RiskManager,
    RiskVerdict,
    TradeStats,
)
from src.risk.manager import day_start, week_start

MODE = TradingMode.PAPER
# A Wednesday, mid-morning UTC.
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
D = Decimal


def _config(**overrides: Any) -> RiskConfig:
    return RiskConfig.model_validate(overrides) if overrides else RiskConfig()


def _risk(store: InMemoryRiskStore | None = None, policy: ExitPolicy | None = None, **overrides: Any) -> RiskManager:
    return RiskManager(_config(**overrides), store or InMemoryRiskStore(), MODE, clock=lambda: NOW, policy=policy)


def _cash_only(cash: str = "10000000") -> PortfolioView:
    return PortfolioView.of(D(cash))


def _position(symbol: str = "KRW-BTC", **changes: Any) -> PositionRecord:
    values: dict[str, Any] = {
        "symbol": symbol,
        "mode": MODE,
        "amount": D("0.01"),
        "avg_entry_price": D("100000000"),
        "entry_at": NOW - timedelta(days=1),
        "highest_price": D("100000000"),
        "stop_price": D("95000000"),
        "take_profit_price": D("110000000"),
    }
    values.update(changes)
    return PositionRecord(**values)


# --- entries: spacing ------------------------------------------------------------------------------
async def test_a_fresh_account_may_buy_up_to_the_per_coin_cap() -> None:
    # Given 10,000,000 KRW cash and nothing else
    risk = _risk()
    # When a buy is evaluated
    verdict = await risk.evaluate_entry("KRW-BTC", _cash_only(), NOW)
    # Then it is allowed, capped at 40% of equity
    assert verdict == RiskVerdict(allowed=True, reasons=[], max_krw=D("4000000"))


@pytest.mark.parametrize(
    ("since_last", "allowed"),
    [(timedelta(hours=4) - timedelta(seconds=1), False), (timedelta(hours=4), True)],
)
async def test_trades_are_at_least_four_hours_apart(since_last: timedelta, allowed: bool) -> None:
    # Given a sell executed 3h59m59s / exactly 4h ago (sells count: any executed trade)
    store = InMemoryRiskStore()
    store.record_trade(MODE, NOW - since_last, order_id="o-1")
    # When a buy is evaluated
    verdict = await _risk(store).evaluate_entry("KRW-ETH", _cash_only(), NOW)
    # Then only exactly 4h is enough
    assert verdict.allowed is allowed
    assert verdict.blocked_by(EntryRule.MIN_TRADE_INTERVAL) is not allowed
    if not allowed:
        assert verdict.max_krw == 0
        assert "next entry allowed from 2026-11-25T10:00:01+00:00" in verdict.reasons[0]


@pytest.mark.parametrize(("trades_today", "allowed"), [(4, True), (5, False)])
async def test_at_most_five_trades_in_a_utc_day(trades_today: int, allowed: bool) -> None:
    # Given 4 (or 5) executed orders earlier today, one filled in two pieces, and many yesterday
    store = InMemoryRiskStore()
    for index in range(6):
        store.record_trade(MODE, day_start(NOW) - timedelta(minutes=index + 1), order_id=f"yesterday-{index}")
    for index in range(trades_today):
        store.record_trade(MODE, day_start(NOW) + timedelta(minutes=index), order_id=f"today-{index}")
    store.record_trade(MODE, day_start(NOW) + timedelta(minutes=1), order_id="today-1")  # second fill
    # When the next buy (the 5th / the 6th trade of the day) is evaluated, spacing switched off
    verdict = await _risk(store, MIN_TRADE_INTERVAL_HOURS="0").evaluate_entry("KRW-BTC", _cash_only(), NOW)
    # Then the 5th trade is allowed and the 6th is not
    assert verdict.allowed is allowed
    assert verdict.blocked_by(EntryRule.MAX_TRADES_PER_DAY) is not allowed


async def test_trades_of_another_mode_do_not_count() -> None:
    store = InMemoryRiskStore()
    store.record_trade(TradingMode.LIVE, NOW - timedelta(minutes=5))
    assert (await _risk(store).evaluate_entry("KRW-BTC", _cash_only(), NOW)).allowed


# --- entries: portfolio limits ----------------------------------------------------------------------
@pytest.mark.parametrize(("open_count", "allowed"), [(2, True), (3, False)])
async def test_at_most_three_positions(open_count: int, allowed: bool) -> None:
    # Given 2 (or 3) open positions in other coins
    portfolio = PortfolioView.of(D("7000000"), {"KRW-ETH": D("1000000")}, open_position_count=open_count)
    # When a 3rd (or 4th) coin is evaluated
    verdict = await _risk().evaluate_entry("KRW-XRP", portfolio, NOW)
    # Then the 3rd is allowed and the 4th is not
    assert verdict.allowed is allowed
    assert verdict.blocked_by(EntryRule.MAX_POSITIONS) is not allowed


async def test_a_held_coin_is_refused_as_held_not_for_want_of_a_slot() -> None:
    # Given 3 open positions (the limit), one of them in BTC worth 1,000,000 of 10,000,000 equity
    store = InMemoryRiskStore()
    await store.open_position(_position())
    portfolio = PortfolioView.of(D("7000000"), {"KRW-BTC": D("1000000"), "KRW-ETH": D("2000000")}, 3)
    # When more BTC is evaluated
    verdict = await _risk(store).evaluate_entry("KRW-BTC", portfolio, NOW)
    # Then the one reason is that BTC is already held: the strategy buys only when flat
    assert not verdict.allowed
    assert verdict.max_krw == 0
    assert verdict.reasons == [
        "already_held: KRW-BTC is already held (open position); the strategy buys only when flat"
    ]


@pytest.mark.parametrize(
    ("cap_pct", "dust", "allowed", "max_krw"),
    [("1", "0", True, "10000"), ("1", "4999", True, "5001"), ("0.9", "4001", False, "0")],
)
async def test_per_coin_cap_counts_dust_already_at_the_exchange(
    cap_pct: str, dust: str, allowed: bool, max_krw: str
) -> None:
    # Given BTC dust worth `dust` (below the 5,000 KRW minimum order, so not a holding) out of 1,000,000 equity
    portfolio = PortfolioView.of(D("1000000") - D(dust), {"KRW-BTC": D(dust)})
    # When BTC is evaluated with a per-coin cap of `cap_pct`% (10,000 or 9,000 KRW)
    verdict = await _risk(MAX_POSITION_PCT=cap_pct).evaluate_entry("KRW-BTC", portfolio, NOW)
    # Then the room is cap - dust; below the minimum order it is refused
    assert verdict.allowed is allowed
    assert verdict.max_krw == D(max_krw)
    assert verdict.blocked_by(EntryRule.MIN_ORDER) is not allowed


@pytest.mark.parametrize(
    ("cash", "allowed", "max_krw"),
    [("1005000", True, "5000"), ("1004999", False, "0"), ("1000000", False, "0")],
)
async def test_ten_percent_of_equity_stays_in_cash(cash: str, allowed: bool, max_krw: str) -> None:
    # Given equity 10,000,000 KRW (reserve 1,000,000) with `cash` in KRW and the rest in two coins
    rest = D("10000000") - D(cash)
    portfolio = PortfolioView.of(D(cash), {"KRW-ETH": rest / 2, "KRW-XRP": rest / 2}, 2)
    # When a third coin is evaluated
    verdict = await _risk().evaluate_entry("KRW-BTC", portfolio, NOW)
    # Then only cash above the reserve may be spent, and it must reach the minimum order
    assert verdict.allowed is allowed
    assert verdict.max_krw == D(max_krw)
    expected_rule = {"1004999": EntryRule.MIN_ORDER, "1000000": EntryRule.CASH_RESERVE}.get(cash)
    if expected_rule is not None:
        assert verdict.blocked_by(expected_rule)


async def test_the_buy_fee_stays_inside_the_cash_reserve() -> None:
    # Given a fee rate of 0.05% and 2,000,000 cash of 10,000,000 equity
    risk = RiskManager(RiskConfig(), InMemoryRiskStore(), MODE, fee_rate=D("0.0005"))
    portfolio = PortfolioView.of(D("2000000"), {"KRW-ETH": D("8000000")}, 1)
    # When a buy is evaluated
    verdict = await risk.evaluate_entry("KRW-BTC", portfolio, NOW)
    # Then total + fee fits in cash above the reserve
    assert verdict.max_krw == D("999500")
    assert verdict.max_krw * D("1.0005") <= D("1000000")


async def test_every_failing_rule_is_reported() -> None:
    store = InMemoryRiskStore()
    store.record_trade(MODE, NOW - timedelta(hours=1))
    portfolio = PortfolioView.of(D("500000"), {"KRW-ETH": D("4500000")}, 3)
    verdict = await _risk(store).evaluate_entry("KRW-BTC", portfolio, NOW)
    assert not verdict.allowed
    for rule in (EntryRule.MIN_TRADE_INTERVAL, EntryRule.MAX_POSITIONS, EntryRule.CASH_RESERVE):
        assert verdict.blocked_by(rule)


# --- entries: a coin already held is never bought again ----------------------------------------------------
@pytest.mark.parametrize(
    ("held_how", "held_krw"),
    [("open position", "1000000"), ("balance at the exchange", "1000000"), ("balance at the exchange", "5000")],
)
async def test_a_buy_of_a_held_coin_is_always_refused(held_how: str, held_krw: str) -> None:
    # Given BTC held (an open position, or coins at the exchange worth at least the minimum order)
    store = InMemoryRiskStore()
    if held_how == "open position":
        await store.open_position(_position())
    portfolio = PortfolioView.of(D("10000000") - D(held_krw), {"KRW-BTC": D(held_krw)}, 1)
    # When more BTC is evaluated
    verdict = await _risk(store).evaluate_entry("KRW-BTC", portfolio, NOW)
    # Then it is refused with the reason, however much room is left under the per-coin cap
    assert not verdict.allowed
    assert verdict.max_krw == 0
    assert verdict.blocked_by(EntryRule.ALREADY_HELD)
    assert verdict.reasons[0].startswith(f"already_held: KRW-BTC is already held ({held_how}")
    assert verdict.reasons[0].endswith("; the strategy buys only when flat")
    assert _risk().size_entry(verdict, _cash_only(), None) == 0


async def test_dust_below_the_minimum_order_is_not_a_holding() -> None:
    # Given 4,999 KRW of BTC left over at the exchange (unsellable dust) and no position
    portfolio = PortfolioView.of(D("10000000"), {"KRW-BTC": D("4999")})
    # When BTC is evaluated, then it is a new entry
    verdict = await _risk().evaluate_entry("KRW-BTC", portfolio, NOW)
    assert verdict.allowed
    assert not verdict.blocked_by(EntryRule.ALREADY_HELD)


async def test_naive_times_and_bad_portfolios_are_refused() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        await _risk().evaluate_entry("KRW-BTC", _cash_only(), NOW.replace(tzinfo=None))
    with pytest.raises(InvalidInput, match=r"holdings\['KRW-BTC'\]"):
        PortfolioView.of(D("1"), {"KRW-BTC": 5.0})  # type: ignore[dict-item]


# --- sizing ------------------------------------------------------------------------------------------
def _allowed(max_krw: str) -> RiskVerdict:
    return RiskVerdict(allowed=True, reasons=[], max_krw=D(max_krw))


def test_fixed_fraction_sizing_is_capped_by_the_verdict() -> None:
    risk = _risk()
    portfolio = _cash_only()
    assert risk.size_entry(_allowed("4000000"), portfolio, None) == D("2000000")  # 20% of 10,000,000
    assert risk.size_entry(_allowed("1234567.9"), portfolio, None) == D("1234567")
    assert risk.size_entry(RiskVerdict(allowed=False, reasons=["x: y"]), portfolio, None) == 0


def test_a_size_below_the_minimum_order_is_zero() -> None:
    risk = _risk(POSITION_FRACTION_PCT="1")
    assert risk.size_entry(_allowed("100000"), PortfolioView.of(D("400000")), None) == 0  # 4,000 < 5,000


def _stats(wins: int, losses: int, avg_win: str, avg_loss: str) -> TradeStats:
    return TradeStats.from_pnls([D(avg_win)] * wins + [-D(avg_loss)] * losses)


@pytest.mark.parametrize(
    ("stats", "expected_pct"),
    [
        # W=0.6, R=1.5: Kelly 0.6-0.4/1.5 = 0.3333 -> half 16.67%
        (_stats(12, 8, "15000", "10000"), D("16.6666")),
        # W=0.9, R=3: Kelly 0.8667 -> half 43.3% -> clamped to 30%
        (_stats(18, 2, "30000", "10000"), D("30")),
        # W=0.3, R=1: Kelly -0.4 -> clamped to 5%
        (_stats(6, 14, "10000", "10000"), D("5")),
        # no losses at all: Kelly = W = 1 -> clamped to 30%
        (_stats(20, 0, "10000", "1"), D("30")),
    ],
)
def test_half_kelly_is_clamped_to_five_to_thirty_percent(stats: TradeStats, expected_pct: Decimal) -> None:
    risk = _risk(POSITION_SIZING="half_kelly")
    decision = risk.sizing(_allowed("10000000"), _cash_only(), stats)
    assert decision.method is PositionSizing.HALF_KELLY
    assert decision.fraction_pct == expected_pct
    assert decision.krw == (D("10000000") * expected_pct / 100).to_integral_value(rounding="ROUND_DOWN")


def test_half_kelly_with_too_few_closed_positions_falls_back_and_says_so() -> None:
    risk = _risk(POSITION_SIZING="half_kelly", KELLY_MIN_TRADES="20")
    decision = risk.sizing(_allowed("10000000"), _cash_only(), _stats(12, 7, "15000", "10000"))
    assert decision.method is PositionSizing.FIXED
    assert decision.krw == D("2000000")
    assert "needs 20 closed positions, have 19" in decision.note
    assert risk.config.position_sizing is PositionSizing.HALF_KELLY


async def test_trade_stats_come_from_closed_positions() -> None:
    store = InMemoryRiskStore()
    for index, pnl in enumerate(["3000", "-1000", "5000"]):
        opened = await store.open_position(_position(f"KRW-C{index}"))
        await store.close_position(opened.id, exit_price=D("1"), reason="x", realized_pnl=D(pnl), closed_at=NOW)
    stats = await _risk(store).trade_stats()
    assert (stats.closed, stats.wins, stats.avg_win, stats.avg_loss) == (3, 2, D("4000"), D("1000"))
    assert stats.payoff_ratio == D("4")


# --- circuit breakers ----------------------------------------------------------------------------------
async def test_a_daily_loss_of_ten_percent_enters_safe_mode_until_the_next_utc_day() -> None:
    # Given the day started at 10,000,000 equity
    store = InMemoryRiskStore()
    risk = _risk(store)
    assert await risk.on_equity(D("10000000"), day_start(NOW) + timedelta(minutes=5)) == []
    # When equity falls 9.99%, then 10%
    assert await risk.on_equity(D("9001000"), NOW) == []
    events = await risk.on_equity(D("9000000"), NOW + timedelta(minutes=1))
    # Then safe mode starts, is saved, and blocks buys until 00:00 UTC tomorrow
    assert [event.kind for event in events] == [EventKind.SAFE_MODE_ENTERED]
    state = await store.load_risk_state(MODE)
    assert state.safe_mode
    assert state.safe_mode_until == day_start(NOW) + timedelta(days=1)
    assert "daily loss 10.00%" in (state.safe_mode_reason or "")
    verdict = await risk.evaluate_entry("KRW-BTC", _cash_only(), NOW + timedelta(minutes=2))
    assert verdict.blocked_by(EntryRule.SAFE_MODE)
    # And a further loss the same day does not announce it again
    assert await risk.on_equity(D("8900000"), NOW + timedelta(minutes=3)) == []


async def test_daily_safe_mode_ends_by_itself_at_the_next_utc_day() -> None:
    store = InMemoryRiskStore()
    risk = _risk(store)
    await risk.on_equity(D("10000000"), day_start(NOW))
    await risk.on_equity(D("8900000"), NOW)  # -11% today, -11% this week: daily breach only
    midnight = day_start(NOW) + timedelta(days=1)
    # Before midnight still in safe mode; at midnight it ends and the day re-anchors
    assert await risk.on_equity(D("8900000"), midnight - timedelta(seconds=1)) == []
    events = await risk.on_equity(D("8900000"), midnight)
    assert [event.kind for event in events] == [EventKind.SAFE_MODE_LEFT]
    state = await store.load_risk_state(MODE)
    assert not state.safe_mode
    assert (state.day_anchor_at, state.day_anchor_equity) == (midnight, D("8900000"))
    assert (await risk.evaluate_entry("KRW-BTC", _cash_only(), midnight)).allowed


async def test_weekly_loss_of_fifteen_percent_holds_safe_mode_until_monday() -> None:
    # Given the week (Mon 23 Nov 2026) started at 10,000,000, losing 8% on Monday and 8% more on Wednesday
    store = InMemoryRiskStore()
    risk = _risk(store)
    monday = week_start(NOW)
    await risk.on_equity(D("10000000"), monday + timedelta(hours=1))
    assert await risk.on_equity(D("9200000"), monday + timedelta(hours=20)) == []
    await risk.on_equity(D("9200000"), NOW)  # Wednesday: day anchor 9,200,000
    # When equity reaches 8,500,000 (-15% on the week, -7.6% on the day)
    events = await risk.on_equity(D("8500000"), NOW + timedelta(hours=1))
    # Then safe mode holds until next Monday 00:00 UTC, surviving the daily roll-over
    assert [event.kind for event in events] == [EventKind.SAFE_MODE_ENTERED]
    state = await store.load_risk_state(MODE)
    assert state.safe_mode_until == monday + timedelta(days=7) == datetime(2026, 11, 30, tzinfo=UTC)
    assert "weekly loss 15.00%" in (state.safe_mode_reason or "")
    assert await risk.on_equity(D("8500000"), NOW + timedelta(days=1)) == []
    assert (await store.load_risk_state(MODE)).safe_mode
    left = await risk.on_equity(D("8500000"), monday + timedelta(days=7))
    assert [event.kind for event in left] == [EventKind.SAFE_MODE_LEFT]


async def test_a_weekly_breach_extends_a_daily_safe_mode() -> None:
    store = InMemoryRiskStore()
    risk = _risk(store)
    monday = week_start(NOW)
    await risk.on_equity(D("10000000"), monday)
    await risk.on_equity(D("9400000"), NOW)  # Wednesday anchor
    first = await risk.on_equity(D("8460000"), NOW + timedelta(hours=1))  # -10% day, -15.4% week
    assert first[0].fields["until"] == (monday + timedelta(days=7)).isoformat()
    store2 = InMemoryRiskStore()
    risk2 = _risk(store2)
    await risk2.on_equity(D("10000000"), monday)
    await risk2.on_equity(D("9500000"), NOW)
    await risk2.on_equity(D("8550000"), NOW + timedelta(hours=1))  # -10% day, -14.5% week: daily only
    extended = await risk2.on_equity(D("8400000"), NOW + timedelta(hours=2))  # -16% week
    assert extended[0].fields["extended"] is True
    assert (await store2.load_risk_state(MODE)).safe_mode_until == monday + timedelta(days=7)


async def test_safe_mode_survives_a_restart() -> None:
    # Given a manager that entered safe mode
    store = InMemoryRiskStore()
    await _risk(store).on_equity(D("10000000"), day_start(NOW))
    await _risk(store).on_equity(D("8000000"), NOW)
    # When a new manager (a restarted process) reads the same store
    restarted = RiskManager(RiskConfig(), store, MODE)
    # Then it refuses buys and remembers the anchors
    verdict = await restarted.evaluate_entry("KRW-BTC", _cash_only(), NOW + timedelta(hours=1))
    assert verdict.blocked_by(EntryRule.SAFE_MODE)
    assert (await restarted.risk_state()).day_anchor_equity == D("10000000")


async def test_the_operator_resets_safe_mode_and_losses_count_afresh() -> None:
    store = InMemoryRiskStore()
    risk = _risk(store)
    await risk.on_equity(D("10000000"), day_start(NOW))
    await risk.on_equity(D("8000000"), NOW - timedelta(minutes=30))
    # When the operator resets it
    event = await risk.reset_safe_mode(by="admin", reason="checked the market")
    # Then buys are allowed at once and the same loss does not re-enter safe mode
    assert event is not None
    assert event.kind is EventKind.SAFE_MODE_LEFT
    assert event.fields["why"] == "reset by admin: checked the market"
    assert (await risk.evaluate_entry("KRW-BTC", _cash_only(), NOW)).allowed
    assert await risk.on_equity(D("8000000"), NOW) == []
    state = await store.load_risk_state(MODE)
    assert (state.safe_mode, state.day_anchor_equity, state.week_anchor_equity) == (False, D("8000000"), D("8000000"))
    # And a reset with nothing to reset says so; who and why are required
    assert await risk.reset_safe_mode(by="admin", reason="again") is None
    with pytest.raises(InvalidInput):
        await risk.reset_safe_mode(by=" ", reason="x")


async def test_a_reset_request_older_than_the_safe_mode_does_not_end_it() -> None:
    # Given safe mode entered at NOW (the clock's time)
    store = InMemoryRiskStore()
    risk = _risk(store)
    await risk.enter_safe_mode(by="breaker", reason="daily loss")
    # When a reset request made before it arrives (an old request still in bot_config)
    stale = await risk.reset_safe_mode(by="admin", reason="old", requested_at=NOW - timedelta(hours=1))
    # Then safe mode stays on; a request made after it was entered ends it
    assert stale is None
    assert (await store.load_risk_state(MODE)).safe_mode
    fresh = await risk.reset_safe_mode(by="admin", reason="checked", requested_at=NOW + timedelta(minutes=1))
    assert fresh is not None
    assert not (await store.load_risk_state(MODE)).safe_mode


async def test_the_operator_may_enter_safe_mode_without_an_end() -> None:
    store = InMemoryRiskStore()
    risk = _risk(store)
    event = await risk.enter_safe_mode(by="admin", reason="exchange maintenance")
    assert event.kind is EventKind.SAFE_MODE_ENTERED
    # It does not end by time, and a breach does not shorten it
    await risk.on_equity(D("10000000"), NOW + timedelta(days=30))
    verdict = await risk.evaluate_entry("KRW-BTC", _cash_only(), NOW + timedelta(days=30))
    assert verdict.blocked_by(EntryRule.SAFE_MODE)
    assert "set by admin: exchange maintenance" in verdict.reasons[0]
    await risk.reset_safe_mode(by="admin", reason="done")
    assert (await risk.evaluate_entry("KRW-BTC", _cash_only(), NOW + timedelta(days=30))).allowed


async def test_with_config_applies_operator_overrides_over_the_same_state() -> None:
    store = InMemoryRiskStore()
    risk = _risk(store)
    portfolio = PortfolioView.of(D("5000000"), {"KRW-ETH": D("5000000")}, 3)
    assert not (await risk.evaluate_entry("KRW-BTC", portfolio, NOW)).allowed
    relaxed = risk.with_config(risk.config.model_copy(update={"max_positions": 4}))
    assert (await relaxed.evaluate_entry("KRW-BTC", portfolio, NOW)).allowed
    assert relaxed.store is store


# --- exits ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("price", "reason", "trigger"),
    [
        ("95000001", None, None),
        ("95000000", ExitReason.STOP_LOSS, "95000000"),
        ("109999999", None, None),
        ("110000000", ExitReason.TAKE_PROFIT, "110000000"),
    ],
)
def test_stop_loss_and_take_profit_fire_at_their_levels(price: str, reason: ExitReason | None, trigger: str) -> None:
    signals = _risk().exits_due([_position(id=7)], {"KRW-BTC": D(price)}, NOW)
    if reason is None:
        assert signals == []
    else:
        assert [(s.symbol, s.reason, s.trigger_price, s.price, s.position_id) for s in signals] == [
            ("KRW-BTC", reason, D(trigger), D(price), 7)
        ]


def test_exits_are_due_even_in_safe_mode_and_right_after_a_trade() -> None:
    # exits_due reads no safe mode and no spacing: it only compares prices with levels
    store = InMemoryRiskStore()
    store.record_trade(MODE, NOW - timedelta(minutes=1))
    signals = _risk(store).exits_due([_position()], {"KRW-BTC": D("90000000")}, NOW)
    assert [s.reason for s in signals] == [ExitReason.STOP_LOSS]


def test_candle_lows_and_highs_catch_touches_between_checks() -> None:
    risk = _risk()
    position = _position()
    prices = {"KRW-BTC": D("100000000")}
    assert risk.exits_due([position], prices, NOW) == []
    low_touch = risk.exits_due([position], prices, NOW, lows={"KRW-BTC": D("94000000")})
    assert [(s.reason, s.trigger_price) for s in low_touch] == [(ExitReason.STOP_LOSS, D("95000000"))]
    high_touch = risk.exits_due([position], prices, NOW, highs={"KRW-BTC": D("111000000")})
    assert [s.reason for s in high_touch] == [ExitReason.TAKE_PROFIT]
    both = risk.exits_due([position], prices, NOW, lows={"KRW-BTC": D("94000000")}, highs={"KRW-BTC": D("111000000")})
    assert [s.reason for s in both] == [ExitReason.STOP_LOSS]


def test_the_trailing_stop_follows_the_highest_price() -> None:
    # Given a 3% trailing stop on a position that peaked at 108,000,000 (trailing level 104,760,000)
    risk = _risk(policy=ExitPolicy(trailing_stop_pct=3))
    position = _position(trailing_stop_pct=D("3"), highest_price=D("108000000"))
    # Then above the level nothing is due, at it the trailing stop fires (above the fixed stop)
    assert risk.exits_due([position], {"KRW-BTC": D("104760001")}, NOW) == []
    signals = risk.exits_due([position], {"KRW-BTC": D("104760000")}, NOW)
    assert [(s.reason, s.trigger_price) for s in signals] == [(ExitReason.TRAILING_STOP, D("104760000"))]
    # While the trailing level is below the fixed stop, a fall is a stop-loss
    fresh = _position(trailing_stop_pct=D("10"))
    assert [s.reason for s in risk.exits_due([fresh], {"KRW-BTC": D("94000000")}, NOW)] == [ExitReason.STOP_LOSS]


@pytest.mark.parametrize(
    ("held", "price", "reason"),
    [
        (timedelta(hours=47, minutes=59), "100000000", None),
        (timedelta(hours=48), "100000000", ExitReason.TIME_OUT),
        (timedelta(hours=72), "94000000", ExitReason.STOP_LOSS),  # a stop that is also due wins
        (timedelta(hours=72), "111000000", ExitReason.TAKE_PROFIT),
    ],
)
def test_a_position_held_max_hold_hours_times_out(held: timedelta, price: str, reason: ExitReason | None) -> None:
    # Given a strategy that holds at most 48 hours, and a position entered `held` ago
    risk = _risk(policy=ExitPolicy(stop_loss_pct=5, take_profit_pct=10, max_hold_hours=48))
    position = _position(entry_at=NOW - held)
    # When the position check runs now at `price`
    signals = risk.exits_due([position], {"KRW-BTC": D(price)}, NOW)
    # Then the time-out is due from 48 hours on, sold at the price the check saw, unless a level is due first
    assert [s.reason for s in signals] == ([reason] if reason else [])
    if reason is ExitReason.TIME_OUT:
        assert signals[0].trigger_price == D(price)


def test_without_max_hold_hours_a_position_never_times_out() -> None:
    assert _risk().exits_due([_position(entry_at=NOW - timedelta(days=3650))], {"KRW-BTC": D("100000000")}, NOW) == []


def test_with_policy_keeps_the_state_and_the_thresholds() -> None:
    store = InMemoryRiskStore()
    risk = _risk(store, MAX_POSITIONS="4")
    timed = risk.with_policy(ExitPolicy(max_hold_hours=1))
    assert (timed.store, timed.config, timed.policy.max_hold_hours) == (store, risk.config, 1.0)
    assert timed.with_config(RiskConfig()).policy == timed.policy


def test_positions_without_a_price_or_already_closed_are_skipped() -> None:
    from src.risk import PositionStatus

    closed = _position(status=PositionStatus.CLOSED)
    assert _risk().exits_due([_position("KRW-ETH"), closed], {"KRW-BTC": D("1")}, NOW) == []


async def test_anchors_roll_when_the_clock_moves_back_to_another_day() -> None:
    # Given anchors written on Wednesday; When a replay feeds Monday's equity
    store = InMemoryRiskStore()
    risk = _risk(store)
    await risk.on_equity(D("10000000"), NOW)
    monday = week_start(NOW) - timedelta(days=7) + timedelta(hours=1)
    assert await risk.on_equity(D("5000000"), monday) == []
    # Then Monday's equity is the new anchor, not a 50% loss
    state = await store.load_risk_state(MODE)
    assert (state.day_anchor_at, state.day_anchor_equity, state.week_anchor_equity) == (
        monday,
        D("5000000"),
        D("5000000"),
    )
