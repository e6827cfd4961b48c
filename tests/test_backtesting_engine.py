"""The engine simulates the bot: hand-computed cases for each rule (fills, sizing, spacing, daily cap, breakers,
Kelly, cash reserve, exits, check cadence), through ``Backtester.run_signals`` as ``backtest.py`` calls it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from src.backtesting.backtester import Backtester, BacktestResult
from src.backtesting.engine import (
    TABLE_STARTS,
    TICK_FLOORS,
    TICK_SIZES,
    EngineConfig,
    check_moments,
    fill_px,
    half_kelly,
    table_at,
)
from src.config.trading_groups import RiskConfig
from src.domain.exits import ExitPolicy
from src.domain.fills import fill_price
from src.domain.orders import Side
from src.risk.models import TradeStats
from src.risk.sizing import half_kelly_pct
from src.strategy.contract import StrategySignals

MONDAY = pd.Timestamp("2024-03-04T00:00:00Z")  # a Monday, after the 2024-01-29 tick table
# Every rule off except what a test switches on: fixed 20 %, no slippage, no gate, no spacing.
BASE = EngineConfig(
    slippage_pct=0.0,
    quick_filter=False,
    min_trade_interval_hours=0.0,
    max_trades_per_day=10**6,
    max_position_pct=100.0,
    cash_reserve_pct=0.0,
    daily_loss_limit_pct=99.0,
    weekly_loss_limit_pct=99.0,
)


def frame(closes: list[float], start: pd.Timestamp = MONDAY) -> pd.DataFrame:
    index = pd.date_range(start, periods=len(closes), freq="1h", tz="UTC", name="timestamp")
    c = np.asarray(closes, dtype=np.float64)
    return pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": 1.0, "value": c}, index=index)


def run(
    closes: list[float],
    entries: list[int] | None = None,
    exits: list[int] | None = None,
    policy: ExitPolicy | None = None,
    config: EngineConfig = BASE,
    start: pd.Timestamp = MONDAY,
    atr: float = np.nan,
) -> BacktestResult:
    df = frame(closes, start)
    n = len(df)
    entry = np.zeros(n, dtype=np.bool_)
    entry[entries if entries is not None else [0]] = True
    exit_ = np.zeros(n, dtype=np.bool_)
    exit_[exits or []] = True
    signals = StrategySignals(df.index, entry, exit_, np.full(n, atr))
    return Backtester(config).run_signals(df, signals, "test", {}, policy or ExitPolicy())


def at(hours: float, start: pd.Timestamp = MONDAY) -> str:
    return (start + pd.Timedelta(hours=hours)).isoformat()


# --- fills -------------------------------------------------------------------------------------------------------


def test_the_compiled_fill_price_is_the_fill_model_for_many_prices_dates_and_sides() -> None:
    # Given prices across every tick band, moments under each tick table, both sides and several slippages
    rng = np.random.default_rng(7)
    prices = np.concatenate([10 ** rng.uniform(-1, 8.5, 400), [100.0, 1000.0, 5000.0, 10_000.0, 2_000_000.0, 99.99]])
    moments = [datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC), datetime(2025, 8, 1, tzinfo=UTC)]
    for when in moments:
        table = table_at(when.timestamp(), TABLE_STARTS)
        for slippage in ("0", "0.05", "0.3"):
            for raw in prices:
                reference = Decimal(repr(round(float(raw), 3)))
                for side in (Side.BUY, Side.SELL):
                    # When the engine computes the fill
                    ours = fill_px(float(reference), side is Side.BUY, float(slippage) / 100, table, True,
                                   TICK_FLOORS, TICK_SIZES)  # fmt: skip
                    # Then it is src.domain.fills.fill_price to the float
                    expected = fill_price(reference, side, Decimal(slippage), when)
                    assert ours == pytest.approx(float(expected), rel=1e-12, abs=1e-12), (reference, side, when)


def test_a_buy_and_a_signal_sell_fill_at_the_close_with_slippage_on_the_tick_grid_and_fees() -> None:
    # Given 10M KRW, 20 % per entry, 0.05 % slippage, entry at bar 0 and a signal exit at bar 2
    config = replace(BASE, slippage_pct=0.05)
    result = run([50_000_000, 50_100_000, 51_000_000, 51_000_000], entries=[0], exits=[2], config=config)
    # Then the buy is at the close of bar 0 plus slippage rounded UP to the 1,000 KRW tick, at bar 0's end
    (trade,) = result.trade_records()
    assert trade["entry_price"] == 50_025_000
    assert trade["entry_time"] == at(1)
    assert trade["entry_candle"] == at(0)
    # And the volume is the 2,000,000 KRW total / price, cut to 8 decimals; the fee is on the executed KRW
    volume = 0.03998000
    assert trade["units"] == pytest.approx(volume, abs=1e-12)
    funds = volume * 50_025_000
    assert trade["cost"] == pytest.approx(funds * 1.0005)
    # And the sell is at bar 2's close minus slippage rounded DOWN, reason signal
    assert trade["exit_price"] == 50_974_000
    assert trade["exit_time"] == at(3)
    assert trade["exit_candle"] == at(2)
    assert trade["exit_reason"] == "signal"
    proceeds = volume * 50_974_000 * (1 - 0.0005)
    assert trade["pnl"] == pytest.approx(proceeds - funds * 1.0005)
    assert result.metrics["final_equity"] == pytest.approx(10_000_000 - funds * 1.0005 + proceeds)


def test_a_position_open_after_the_last_bar_is_sold_at_the_last_close_as_end() -> None:
    result = run([100_000, 101_000, 102_000])
    (trade,) = result.trade_records()
    assert trade["exit_reason"] == "end"
    assert trade["exit_candle"] == at(2)
    assert trade["exit_price"] == 102_000


# --- exits ---------------------------------------------------------------------------------------------------------


def test_stop_loss_fires_at_the_first_check_whose_price_is_at_or_below_the_stop() -> None:
    # Given a 5 % stop below a 100,000 fill; closes 97,000 then 95,000
    result = run([100_000, 97_000, 95_000, 90_000], policy=ExitPolicy(stop_loss_pct=5))
    (trade,) = result.trade_records()
    # Then the check at bar 2's close sells at that close (not at the stop level)
    assert trade["stop_price"] == 95_000
    assert (trade["exit_reason"], trade["exit_candle"], trade["exit_price"]) == ("stop_loss", at(2), 95_000)
    assert trade["exit_time"] == at(3)


def test_take_profit_and_atr_levels_come_from_the_exit_rule() -> None:
    # Given an ATR of 1,000 at the entry bar and a 3 ATR target
    result = run([100_000, 102_000, 103_000, 104_000], policy=ExitPolicy(stop_atr=2, target_atr=3), atr=1000.0)
    (trade,) = result.trade_records()
    assert (trade["stop_price"], trade["target_price"]) == (98_000, 103_000)
    assert (trade["exit_reason"], trade["exit_candle"]) == ("take_profit", at(2))


def test_trailing_stop_follows_the_highest_checked_close() -> None:
    # Given a 10 % trailing stop: highest close 120,000 -> level 108,000
    result = run([100_000, 120_000, 110_000, 108_000, 100_000], policy=ExitPolicy(trailing_stop_pct=10))
    (trade,) = result.trade_records()
    assert (trade["exit_reason"], trade["exit_candle"], trade["exit_price"]) == ("trailing_stop", at(3), 108_000)


def test_time_out_sells_at_the_first_check_after_the_holding_limit() -> None:
    # Given a 2.5 h limit and checks every 15 min: due 2.5 h after the entry fill (bar 0 close = 01:00)
    result = run([100_000] * 6, policy=ExitPolicy(max_hold_hours=2.5))
    (trade,) = result.trade_records()
    # Then the 03:30 check sells at the newest complete close (bar 2's)
    assert trade["exit_reason"] == "time_out"
    assert trade["exit_time"] == at(3.5)
    assert trade["exit_candle"] == at(2)


def test_a_time_out_due_inside_a_data_gap_fires_at_its_check_for_a_position_bought_before_the_gap() -> None:
    # Given hourly candles with a 12 h hole after bar 1, a buy at bar 1's close (02:00) and a 2 h limit
    df = pd.concat([frame([100_000] * 2), frame([100_000] * 3, MONDAY + pd.Timedelta(hours=14))])
    n = len(df)
    entry = np.zeros(n, dtype=np.bool_)
    entry[1] = True
    signals = StrategySignals(df.index, entry, np.zeros(n, dtype=np.bool_), np.full(n, np.nan))
    result = Backtester(BASE).run_signals(df, signals, "test", {}, ExitPolicy(max_hold_hours=2))
    (trade,) = result.trade_records()
    # Then, as the bot's position job every 15 min through the hole, the 04:00 check sells at the newest close
    # (bar 1's), not the first close after the hole
    assert trade["entry_time"] == at(2)
    assert (trade["exit_time"], trade["exit_candle"], trade["exit_reason"]) == (at(4), at(1), "time_out")


def test_exit_checks_only_see_the_closes_a_check_falls_on() -> None:
    # Given checks every 90 minutes on hourly bars: a check sees bar t's close if one falls in [T_t, T_t+1h)
    seen = np.isfinite(check_moments(frame([1.0] * 4).index, 3600, 90))
    assert seen.tolist() == [True, False, True, True]  # checks at 01:30, (none in 02:00..03:00), 03:00, 04:30
    # And a stop crossed only at an unseen close does not fire
    result = run([100_000, 90_000, 100_000, 100_000, 100_000], policy=ExitPolicy(stop_loss_pct=5),
                 config=replace(BASE, position_check_minutes=90))  # fmt: skip
    assert result.trade_records()[0]["exit_reason"] == "end"


# --- risk rules ------------------------------------------------------------------------------------------------------


def test_trades_are_spaced_by_the_minimum_interval_since_the_last_buy_or_sell() -> None:
    # Given an entry signal on every bar, a signal exit on every bar and 3 h spacing
    n = 10
    config = replace(BASE, min_trade_interval_hours=3.0)
    result = run([100_000] * n, entries=list(range(n)), exits=list(range(n)), config=config)
    trades = result.trade_records()
    # Then buy at bar 0, sell at bar 1 (exits are never spaced), next buy 3 h after that sell: bar 4, ...
    assert [(t["entry_candle"], t["exit_candle"]) for t in trades[:2]] == [(at(0), at(1)), (at(4), at(5))]
    assert result.gates()["refused_by"]["min_trade_interval"] > 0


def test_the_daily_trade_cap_counts_buys_and_sells_per_utc_day() -> None:
    # Given 2 trades per UTC day and entry and exit signals on every bar from 20:00
    start = MONDAY + pd.Timedelta(hours=20)
    config = replace(BASE, max_trades_per_day=2)
    n = 10
    result = run([100_000] * n, entries=list(range(n)), exits=list(range(n)), config=config, start=start)
    trades = result.trade_records()
    # Then buy 21:00 and sell 22:00 (Monday's two), refused 23:00; buy 00:00 and sell 01:00, then refused
    assert [(t["entry_time"], t["exit_time"]) for t in trades] == [
        (at(1, start), at(2, start)),
        (at(4, start), at(5, start)),
    ]
    assert result.gates()["refused_by"]["max_trades_per_day"] == 6


def test_a_daily_loss_enters_safe_mode_until_the_next_utc_day() -> None:
    # Given all-in entries and a 3 % daily loss limit; the price falls 10 % while held
    config = replace(BASE, position_fraction_pct=100.0, daily_loss_limit_pct=3.0)
    closes = [100_000, 90_000] + [90_000] * 30
    entries = list(range(len(closes)))
    result = run(closes, entries=entries, exits=[1], config=config)
    trades = result.trade_records()
    # Then after the signal sell at 02:00 no buy happens until 00:00 UTC the next day
    assert trades[0]["exit_time"] == at(2)
    assert trades[1]["entry_time"] == at(24)
    assert result.gates()["safe_mode_entered"] == 1
    assert result.gates()["refused_by"]["safe_mode"] == 21  # bars closing 03:00..23:00


def test_a_weekly_loss_enters_safe_mode_until_next_monday() -> None:
    config = replace(BASE, position_fraction_pct=100.0, weekly_loss_limit_pct=5.0, daily_loss_limit_pct=50.0)
    closes = [100_000, 90_000] + [90_000] * (24 * 7)
    result = run(closes, entries=list(range(len(closes))), exits=[1], config=config)
    trades = result.trade_records()
    assert trades[1]["entry_time"] == at(24 * 7)  # Monday 00:00 of the next ISO week


def test_cash_reserve_and_per_coin_cap_bound_the_order() -> None:
    # Given 20 % sizing but a 90 % cash reserve: room = 10M x 10 % / (1 + fee)
    reserve = run([100_000, 100_000], config=replace(BASE, cash_reserve_pct=90.0)).trade_records()[0]
    assert reserve["units"] * 100_000 == pytest.approx(999_500)
    # And with a 10 % per-coin cap the order is 1,000,000 KRW
    capped = run([100_000, 100_000], config=replace(BASE, max_position_pct=10.0)).trade_records()[0]
    assert capped["units"] * 100_000 == pytest.approx(1_000_000)


def test_an_order_below_the_minimum_is_not_placed() -> None:
    result = run([100_000, 100_000], config=replace(BASE, initial_capital=20_000.0))
    assert result.trade_records() == []
    assert result.gates()["refused_by"]["min_order"] == 1


def test_half_kelly_sizes_from_the_closed_round_trips_once_enough_exist() -> None:
    # Given half-Kelly after 2 closed trades: one win of +10 %, one loss of -5 % (each 20 % of equity)
    config = replace(BASE, position_sizing="half_kelly", kelly_min_trades=2, fee_rate=0.0)
    closes = [100_000, 110_000, 100_000, 95_000, 100_000, 100_000]
    result = run(closes, entries=[0, 2, 4], exits=[1, 3], config=config)
    first, second, third = result.trade_records()
    wins, losses = first["pnl"], -second["pnl"]
    # Then the third entry's size is half of W - (1 - W)/R, clamped to 5..30 %
    stats = TradeStats(closed=2, wins=1, avg_win=Decimal(repr(wins)), avg_loss=Decimal(repr(losses)))
    pct = float(half_kelly_pct(stats, RiskConfig()))
    equity = 10_000_000 + wins - losses
    assert third["cost"] == pytest.approx(np.floor(equity * pct / 100), abs=1)


def test_the_compiled_half_kelly_is_the_sizing_rule() -> None:
    rng = np.random.default_rng(3)
    config = RiskConfig()
    for _ in range(300):
        closed = int(rng.integers(1, 60))
        wins = int(rng.integers(0, closed + 1))
        win_sizes = rng.uniform(1000, 100_000, wins)
        loss_sizes = rng.uniform(0, 100_000, closed - wins)
        pnls = [Decimal(repr(float(v))) for v in win_sizes] + [Decimal(repr(-float(v))) for v in loss_sizes]
        expected = half_kelly_pct(TradeStats.from_pnls(pnls), config)
        ours = half_kelly(float(closed), float(wins), float(win_sizes.sum()), float(loss_sizes.sum()), 5.0, 30.0)
        assert ours == pytest.approx(float(expected), abs=1.01e-4)


def test_start_trades_only_from_the_start_and_uses_earlier_bars_as_history() -> None:
    df = frame([100_000] * 6)
    entry = np.ones(6, dtype=np.bool_)
    signals = StrategySignals(df.index, entry, np.ones(6, dtype=np.bool_), np.full(6, np.nan))
    result = Backtester(BASE).run_signals(df, signals, "t", {}, ExitPolicy(), start=df.index[3])
    assert result.metrics["bars"] == 3
    assert result.trade_records()[0]["entry_candle"] == at(3)


def test_flat_bars_keep_the_equity_and_each_bar_marks_it_at_the_close() -> None:
    result = run([100_000, 110_000, 121_000], config=replace(BASE, position_fraction_pct=100.0, fee_rate=0.0))
    equity = result.equity.to_numpy()
    units = result.trade_records()[0]["units"]
    assert equity[1] == pytest.approx(10_000_000 - units * 100_000 + units * 110_000)


def test_risk_rules_can_be_switched_off_for_research() -> None:
    config = replace(EngineConfig(slippage_pct=0.0, quick_filter=False), max_trades_per_day=1).without_risk_rules()
    n = 8
    result = run([100_000] * n, entries=list(range(n)), exits=list(range(n)), config=config)
    assert len(result.trade_records()) == 4
    assert result.to_dict()["settings"]["risk_rules"] is False
