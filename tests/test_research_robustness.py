"""Monte Carlo over trades, significance against random entries, deflated Sharpe and PBO (research robustness)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.research.robustness import (
    ResampleMethod,
    deflated_sharpe,
    deflated_sharpe_of_returns,
    expected_max_sharpe,
    monte_carlo,
    probability_of_overfitting,
    random_entry_test,
    round_trip_return,
    trade_returns_on_equity,
)


# --- Monte Carlo ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(ResampleMethod))
def test_monte_carlo_is_reproducible_with_a_seed(method: ResampleMethod) -> None:
    # Given 300 trade returns
    returns = np.random.default_rng(11).normal(0.003, 0.03, 300)
    # When the Monte Carlo runs twice with the same seed, and once with another
    first = monte_carlo(returns, runs=3000, method=method, seed=42)
    again = monte_carlo(returns, runs=3000, method=method, seed=42)
    other = monte_carlo(returns, runs=3000, method=method, seed=43)
    # Then the same seed gives exactly the same numbers, and another seed other samples
    assert first.percentiles == again.percentiles
    assert first.fan == again.fan
    for key in first.samples:
        assert np.array_equal(first.samples[key], again.samples[key])
    assert not np.array_equal(first.samples["max_drawdown"], other.samples["max_drawdown"])


def test_reshuffle_keeps_the_total_return_and_moves_only_the_path() -> None:
    # Given ten losing trades of -2% in a row, then ninety winning trades of +1%
    returns = np.array([-0.02] * 10 + [0.01] * 90)
    result = monte_carlo(returns, runs=5000, method=ResampleMethod.RESHUFFLE, seed=1)
    total = 100 * (0.98**10 * 1.01**90 - 1)
    # Then every reshuffle ends at the same equity (the product does not depend on the order)
    assert all(result.percentiles["total_return"][q] == pytest.approx(total) for q in ("5", "50", "95"))
    assert result.observed["total_return"] == pytest.approx(total)
    # And the backtest's own order is the worst streak and the worst drawdown: a random order rarely puts all ten
    # losses together, so even the 95th percentile streak is shorter, and the drawdown shallower
    assert result.observed["longest_losing_streak"] == 10
    assert result.observed["max_drawdown"] == pytest.approx(100 * (0.98**10 - 1))
    assert (
        1 <= result.percentiles["longest_losing_streak"]["5"] <= result.percentiles["longest_losing_streak"]["95"] < 10
    )
    assert result.percentiles["max_drawdown"]["5"] > result.observed["max_drawdown"]
    # And the fan starts at 1.0 and ends at the final equity for every percentile
    assert all(path[0] == 1.0 and path[-1] == pytest.approx(1 + total / 100) for path in result.fan.values())


def test_percentiles_on_planted_sequences() -> None:
    # Given only winning trades of +1%: no drawdown, no losing streak, whatever the resampling
    for method in ResampleMethod:
        flat = monte_carlo(np.full(50, 0.01), runs=500, method=method, seed=3)
        assert flat.percentiles["max_drawdown"] == {"5": 0.0, "50": 0.0, "95": 0.0}
        assert flat.percentiles["longest_losing_streak"] == {"5": 0.0, "50": 0.0, "95": 0.0}
        assert flat.percentiles["total_return"]["50"] == pytest.approx(100 * (1.01**50 - 1))
    # Given a coin of +5% / -4% (100 of each): the bootstrap's median is the even split, its spread is real
    coin = np.array([0.05, -0.04] * 100)
    boot = monte_carlo(coin, runs=20000, method=ResampleMethod.BOOTSTRAP, seed=5)
    even = 100 * (1.05**100 * 0.96**100 - 1)
    assert boot.percentiles["total_return"]["50"] == pytest.approx(even, rel=0.01)
    assert boot.percentiles["total_return"]["5"] < even < boot.percentiles["total_return"]["95"]
    # and a loss takes 91 winners or fewer of 200 fair tosses: P = 0.11
    assert 0.08 < boot.to_dict()["probability_of_loss"] < 0.15


def test_block_bootstrap_keeps_streaks_that_the_plain_bootstrap_breaks() -> None:
    # Given losses that come in runs of eight (and wins in runs of eight)
    returns = np.array(([-0.01] * 8 + [0.012] * 8) * 20)
    plain = monte_carlo(returns, runs=4000, method=ResampleMethod.BOOTSTRAP, seed=9)
    blocks = monte_carlo(returns, runs=4000, method=ResampleMethod.BLOCK, seed=9, block=8)
    # Then blocks of eight trades keep the runs: the median longest losing streak is at least eight
    assert blocks.percentiles["longest_losing_streak"]["50"] >= 8
    assert blocks.block == 8
    assert plain.percentiles["longest_losing_streak"]["50"] < blocks.percentiles["longest_losing_streak"]["50"]


def test_trade_returns_on_equity_compound_to_the_backtests_final_equity() -> None:
    pnl = np.array([100_000.0, -50_000.0, 20_000.0, -10_000.0])
    returns = trade_returns_on_equity(pnl, 1_000_000.0)
    assert 1_000_000.0 * float(np.prod(1 + returns)) == pytest.approx(1_000_000.0 + pnl.sum())


@pytest.mark.parametrize(
    ("returns", "runs", "message"),
    [(np.array([0.1]), 0, "runs"), (np.array([np.nan]), 10, "finite"), (np.array([-1.0]), 10, "-100%")],
)
def test_bad_monte_carlo_input_is_refused(returns: np.ndarray, runs: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        monte_carlo(returns, runs=runs)


# --- significance against random entries ------------------------------------------------------------------------
def _walk(seed: int, bars: int = 4000) -> np.ndarray:
    return 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, bars)))


def test_the_p_value_is_small_for_a_planted_edge() -> None:
    # Given a random walk, and trades of 5 bars planted where the price rose most over those bars
    close = _walk(1)
    hold = 5
    gains = close[hold:] / close[:-hold]
    entries = np.sort(np.argsort(gains[:-1])[-400:])
    chosen: list[int] = []
    for entry in entries:  # one trade at a time, as the engine holds them
        if not chosen or entry >= chosen[-1] + hold:
            chosen.append(int(entry))
    entry = np.array(chosen[:40])
    returns = round_trip_return(close[entry], close[entry + hold], 0.0005, 0.05)
    # When they are tested against random entries with the same holding times
    result = random_entry_test(
        close, np.full(len(entry), hold), returns, fee_rate=0.0005, slippage_pct=0.05, runs=2000, seed=3
    )
    # Then chance almost never does as well
    assert result.p_value < 0.01
    assert not result.overlapping
    assert result.observed_return_pct > result.random_return_pct["95"]


def test_the_p_value_is_uniform_for_random_entries() -> None:
    # Given 300 strategies that enter at random bars of their own random walk
    p_values = []
    for trial in range(300):
        rng = np.random.default_rng(1000 + trial)
        close = _walk(5000 + trial, 1500)
        holds = rng.integers(1, 12, 25)
        starts = np.sort(rng.choice(1500 - 12, 25, replace=False))
        returns = round_trip_return(close[starts], close[starts + holds], 0.0005, 0.05)
        result = random_entry_test(close, holds, returns, fee_rate=0.0005, slippage_pct=0.05, runs=199, seed=trial)
        p_values.append(result.p_value)
    values = np.array(p_values)
    # Then their p-values are spread evenly over (0, 1]: about a tenth below 0.1, a half below 0.5
    assert 0.04 <= float(np.mean(values < 0.1)) <= 0.17
    assert 0.40 <= float(np.mean(values < 0.5)) <= 0.60
    assert 0.43 <= float(values.mean()) <= 0.57


def test_random_entries_keep_the_exposure_and_never_overlap() -> None:
    # Given holdings that fill almost the whole history, the random placements still fit one after another
    close = _walk(2, 200)
    holds = np.array([40, 50, 60, 45])  # 195 of 199 bars
    returns = round_trip_return(close[[0, 40, 90, 150]], close[[40, 90, 150, 195]], 0.0, 0.0)
    result = random_entry_test(close, holds, returns, fee_rate=0.0, slippage_pct=0.0, runs=500, seed=1)
    assert not result.overlapping
    assert 0 < result.p_value <= 1


# --- deflated Sharpe ratio ---------------------------------------------------------------------------------------
def test_deflated_sharpe_matches_the_papers_example() -> None:
    # Bailey and Lopez de Prado (2014), section 7: 100 trials whose annualised Sharpe ratios have variance 0.5,
    # the best one 2.5 annualised, 1250 daily observations, skewness -3, kurtosis 10 -> DSR 0.9004
    result = deflated_sharpe(
        2.5 / math.sqrt(250),
        trials=100,
        trials_sharpe_variance=0.5 / 250,
        observations=1250,
        skewness=-3,
        kurtosis=10,
    )
    assert result.benchmark == pytest.approx(0.1132, abs=1e-4)
    assert result.deflated_sharpe == pytest.approx(0.9004, abs=1e-4)
    assert expected_max_sharpe(100, 0.5 / 250) * math.sqrt(250) == pytest.approx(1.7894, abs=1e-3)


def test_more_trials_deflate_more_and_one_trial_is_the_probabilistic_sharpe() -> None:
    returns = np.random.default_rng(4).normal(0.001, 0.01, 1000)
    one = deflated_sharpe_of_returns(returns, trials=1, trials_sharpe_variance=0.0)
    many = deflated_sharpe_of_returns(returns, trials=1000, trials_sharpe_variance=0.01**2)
    assert one.benchmark == 0.0
    assert many.deflated_sharpe < one.deflated_sharpe
    assert 0.0 <= many.deflated_sharpe <= 1.0


# --- probability of backtest overfitting --------------------------------------------------------------------------
def test_pbo_of_pure_noise_is_about_one_half() -> None:
    noise = np.random.default_rng(7).normal(0, 0.01, (1600, 40))
    result = probability_of_overfitting(noise, blocks=10)
    assert result.splits == math.comb(10, 5)
    assert 0.3 <= result.pbo <= 0.7


def test_pbo_of_a_real_edge_is_zero() -> None:
    returns = np.random.default_rng(8).normal(0, 0.01, (1600, 40))
    returns[:, 17] += 0.004  # one trial really is better, in every period
    assert probability_of_overfitting(returns, blocks=10).pbo == 0.0


def test_pbo_is_one_when_the_in_sample_best_is_always_the_out_of_sample_worst() -> None:
    # Given two blocks: trial 0 is great in the first and terrible in the second, trial 1 the opposite; the rest
    # are average in both
    rng = np.random.default_rng(9)
    returns = rng.normal(0, 0.001, (400, 6))
    returns[:200, 0] += 0.01
    returns[200:, 0] -= 0.01
    returns[:200, 1] -= 0.01
    returns[200:, 1] += 0.01
    result = probability_of_overfitting(returns, blocks=2)
    assert result.splits == 2
    assert result.pbo == 1.0
    assert result.degradation < 0


@pytest.mark.parametrize(("shape", "blocks"), [((100, 1), 4), ((100, 3), 3), ((10, 3), 8)])
def test_bad_pbo_input_is_refused(shape: tuple[int, int], blocks: int) -> None:
    with pytest.raises(ValueError):
        probability_of_overfitting(np.zeros(shape), blocks=blocks)
