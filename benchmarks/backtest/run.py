"""Benchmark: the bot-simulating engine against the engine it replaced, plus the quick filter and peak memory.

Run from the project root::

    .venv/bin/python -m benchmarks.backtest.run [--sizes 10000 100000 1000000] [--repeats 3]
    .venv/bin/python -m benchmarks.backtest.run --with-backtesting-py   # also the old comparison (see README)

The baseline is the previous engine, kept only in ``benchmarks/backtest/baseline_engine.py``; both run in this
process, alternating, on the same candles and signals. Prints markdown tables and writes
benchmarks/results/backtest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.backtest.baseline_engine import PortfolioConfig, run_baseline, run_baseline_signals
from src.backtesting.backtester import Backtester
from src.backtesting.data_provider import load_candle_csv
from src.backtesting.engine import EngineConfig
from src.backtesting.quick_filter import QuickBacktestFilter
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from src.strategy.contract import Strategy
from src.utils.logger import configure_logging

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BT_PYTHON = ROOT / "benchmarks" / ".venv-bt" / "bin" / "python"
FEE = 0.0005
# Same fills as backtesting.py: no slippage, no tick grid, no minimum order in the way (old engine only)
COMPARABLE = PortfolioConfig(
    initial_capital=10_000_000.0, fee_rate=FEE, slippage_pct=0.0, min_order_krw=0.0, use_tick_sizes=False
)
# Today's engine as the bot's default settings describe it, slippage 0.05 %, tick grid on: the baseline gets the
# same costs. "gate on" adds the quick filter at every entry attempt.
BASELINE = PortfolioConfig(initial_capital=10_000_000.0, fee_rate=FEE, slippage_pct=0.05)
RISK_ON = EngineConfig(fee_rate=FEE, slippage_pct=0.05, quick_filter=False)
GATE_ON = EngineConfig(fee_rate=FEE, slippage_pct=0.05, quick_filter=True)


def synthetic_hourly(bars: int, seed: int = 42, start: str = "2000-01-01") -> pd.DataFrame:
    """A seeded random walk with realistic hourly OHLCV (BTC-like prices, fat-ish tails)."""
    rng = np.random.default_rng(seed)
    log_returns = rng.standard_t(df=4, size=bars) * 0.004
    close = 30_000_000.0 * np.exp(np.cumsum(log_returns))
    opens = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0, 0.0005, bars))
    wick = np.abs(rng.normal(0, 0.003, (2, bars)))
    high = np.maximum(opens, close) * (1 + wick[0])
    low = np.minimum(opens, close) * (1 - wick[1])
    volume = rng.lognormal(3, 0.8, bars)
    index = pd.date_range(start, periods=bars, freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": opens, "high": high, "low": low, "close": close, "volume": volume, "value": volume * close},
        index=index,
    )


def strategies() -> dict[str, Strategy]:
    return {"volatility_breakout": VolatilityBreakoutStrategy(k=0.5), "rule_breakout": RuleBasedBreakoutStrategy()}


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def compare(df: pd.DataFrame, strategy: Strategy, repeats: int, gate_repeats: int) -> dict[str, Any]:
    """Best of ``repeats``, baseline and new engine alternating: totals (signals + loop + metrics) and engine
    only (loop + metrics given the signals); the gate-on run best of ``gate_repeats``."""
    signals = strategy.generate_signals(df)
    best: dict[str, float] = {}
    out: dict[str, Any] = {}
    runs = {
        "baseline_total": lambda: run_baseline(df, strategy, BASELINE)[1],
        "new_total": lambda: Backtester(RISK_ON).run(df, strategy).metrics,
        "baseline_engine": lambda: run_baseline_signals(df, signals, strategy, BASELINE)[1],
        "new_engine": lambda: (
            Backtester(RISK_ON).run_signals(df, signals, strategy.name, {}, strategy.exit_policy).metrics
        ),
    }
    for _ in range(repeats):
        for key, fn in runs.items():
            seconds, metrics = _timed(fn)
            best[key] = min(best.get(key, float("inf")), seconds)
            out[f"{key}_trades"] = int(metrics["trades"])
    for _ in range(gate_repeats):
        seconds, result = _timed(lambda: Backtester(GATE_ON).run(df, strategy))
        best["new_total_gate"] = min(best.get("new_total_gate", float("inf")), seconds)
        out["new_total_gate_trades"] = int(result.metrics["trades"])
        out["gate_refusals"] = result.gates()["refused_by"]["quick_filter"]
    return {**out, **{f"{k}_s": v for k, v in best.items()}}


def run_bt(df: pd.DataFrame, name: str, strategy: Strategy, tag: str) -> dict[str, Any] | None:
    if not BT_PYTHON.exists():
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    npz, out = RESULTS / f"{tag}.npz", RESULTS / f"{tag}-{name}.json"
    arrays = {c: df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
    arrays["timestamp"] = df.index.as_unit("ns").asi8
    if name == "rule_breakout":
        signals = strategy.generate_signals(df)
        arrays |= {
            "buy_signal": signals.entry,
            "stop_distance": strategy.exit_policy.stop_atr * signals.atr,
            "target_distance": strategy.exit_policy.target_atr * signals.atr,
        }
    np.savez(npz, **arrays)
    cmd = [str(BT_PYTHON), str(Path(__file__).with_name("bt_side.py")), "--data", str(npz), "--strategy", name]
    subprocess.run([*cmd, "--fee", str(FEE), "--out", str(out)], check=True, cwd=ROOT)
    return json.loads(out.read_text())


def same_trades(ours: pd.DataFrame, theirs: list[list[float]], df: pd.DataFrame) -> tuple[bool, str]:
    """Entry/exit bars and prices must match. One documented exception: a position still open after the
    last bar is closed by us at the last close and by backtesting.py (finalize_trades) at the last open."""
    mine = [[int(r.entry_bar), float(r.entry_price), int(r.exit_bar), float(r.exit_price)] for r in ours.itertuples()]
    note = ""
    if mine and ours["exit_reason"].iloc[-1] == "end" and theirs and np.isclose(theirs[-1][3], df["open"].iloc[-1]):
        theirs = [*theirs[:-1], [*theirs[-1][:3], mine[-1][3]]]
        note = " (last trade open at the end: closed at the last close by us, at the last open by backtesting.py)"
    if len(mine) != len(theirs):
        return False, f"{len(mine)} vs {len(theirs)} trades"
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        if (
            a[0] != b[0]
            or a[2] != b[2]
            or not np.isclose(a[1], b[1], rtol=1e-9)
            or not np.isclose(a[3], b[3], rtol=1e-9)
        ):
            return False, f"trade {i} differs: ours {a} theirs {b}"
    return True, f"{len(mine)} identical trades{note}"


def quick_filter_ms(df: pd.DataFrame, repeats: int = 20) -> float:
    best = float("inf")
    for _ in range(repeats):
        quick = QuickBacktestFilter(lookback_days=730, thresholds="moderate")  # fresh: no cached result; 2 years
        started = time.perf_counter()
        quick.evaluate("KRW-BTC", df)
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def peak_memory_mb(bars: int) -> float:
    """Peak RSS (VmHWM) of a fresh process that builds ``bars`` synthetic bars and runs the volatility breakout.

    VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec, so a child would report this (large)
    benchmark process's memory.
    """
    code = (
        "from benchmarks.backtest.run import synthetic_hourly, RISK_ON;"
        "from src.backtesting.backtester import Backtester;"
        "from src.strategy.bundled import VolatilityBreakoutStrategy;"
        f"df=synthetic_hourly({bars});Backtester(RISK_ON).run(df, VolatilityBreakoutStrategy(k=0.5));"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gate-repeats", type=int, default=1, help="repeats of the (slow) quick-filter-on run")
    parser.add_argument("--with-backtesting-py", action="store_true", help="also the old backtesting.py comparison")
    parser.add_argument("--bt-max-bars", type=int, default=1_000_000, help="skip backtesting.py above this size")
    args = parser.parse_args()
    configure_logging("WARNING")
    rows: list[dict[str, Any]] = []
    # Warm-up: numba's compiled loops are cached on disk after the first run; report that once
    started = time.perf_counter()
    warm = synthetic_hourly(2000)
    for strategy in strategies().values():
        Backtester(GATE_ON).run(warm, strategy)
        run_baseline(warm, strategy, BASELINE)
    first_call = time.perf_counter() - started

    for size in args.sizes:
        df = synthetic_hourly(size)
        for name, strategy in strategies().items():
            row = {"bars": size, "strategy": name, **compare(df, strategy, args.repeats, args.gate_repeats)}
            row["ratio_total"] = row["new_total_s"] / row["baseline_total_s"]
            row["ratio_engine"] = row["new_engine_s"] / row["baseline_engine_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)

    checks = backtesting_py_checks(args.bt_max_bars) if args.with_backtesting_py else []
    two_years = synthetic_hourly(2 * 8760, seed=7)
    real_btc = load_candle_csv(ROOT / "backtest_data" / "hourly" / "KRW-BTC_1h.csv")
    real_two_years = real_btc[real_btc.index >= real_btc.index[-1] - pd.Timedelta(days=730)]
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "first_call_s": first_call,
        "quick_filter_ms_synthetic_2y": quick_filter_ms(two_years),
        "quick_filter_ms_real_btc_2y": quick_filter_ms(real_two_years),
        "peak_memory_mb_1m_bars": peak_memory_mb(1_000_000),
        "checks": checks,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "backtest.json").write_text(json.dumps(summary, indent=2))
    print(render(summary))


def backtesting_py_checks(max_bars: int) -> list[dict[str, Any]]:
    """The old engine (the baseline) against backtesting.py: OLD SEMANTICS (all-in, act at the next open); kept
    to show the baseline's fills were right. The new engine simulates the bot and has no backtesting.py twin."""
    checks = []
    for label, path in (
        ("KRW-BTC 1d", ROOT / "backtest_data" / "daily" / "KRW-BTC_1d.csv"),
        ("KRW-BTC 1h", ROOT / "backtest_data" / "hourly" / "KRW-BTC_1h.csv"),
    ):
        real = load_candle_csv(path)
        if len(real) > max_bars:
            continue
        for name, strategy in strategies().items():
            portfolio, _ = run_baseline(real, strategy, COMPARABLE)
            theirs = run_bt(real, name, strategy, f"real-{label.replace(' ', '_')}")
            verdict = (
                same_trades(portfolio.trades, theirs["trades"], real)
                if theirs
                else (None, "backtesting.py not installed")
            )
            checks.append(
                {"data": label, "strategy": name, "bars": len(real), "same": verdict[0], "detail": verdict[1]}
            )
    return checks


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(summary: dict[str, Any]) -> str:
    lines = [
        "| bars | strategy | trades old / new / new+gate | old total (s) | new total, risk on (s) | new/old total "
        "| old engine (s) | new engine (s) | new/old engine | new total, risk + quick filter (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['bars']:,} | {r['strategy']} | {r['baseline_total_trades']:,} / {r['new_total_trades']:,} / "
            f"{r.get('new_total_gate_trades', 0):,} | {r['baseline_total_s']:.4f} | {r['new_total_s']:.4f} | "
            f"{r['ratio_total']:.2f} | {r['baseline_engine_s']:.4f} | {r['new_engine_s']:.4f} | "
            f"{r['ratio_engine']:.2f} | {_num(r.get('new_total_gate_s'), '.3f')} |"
        )
    if summary["checks"]:
        lines += ["", "| real data (old engine vs backtesting.py) | strategy | bars | same trade list |",
                  "|---|---|---:|---|"]  # fmt: skip
        lines += [f"| {c['data']} | {c['strategy']} | {c['bars']:,} | {c['detail']} |" for c in summary["checks"]]
    lines += [
        "",
        f"- quick filter, 2 years of hourly bars: {summary['quick_filter_ms_synthetic_2y']:.1f} ms "
        f"(synthetic 17,520 bars), {summary['quick_filter_ms_real_btc_2y']:.1f} ms (real KRW-BTC, last 730 days)",
        "- peak memory (RSS) of a fresh process generating 1M bars and running the volatility breakout: "
        f"{summary['peak_memory_mb_1m_bars']:.0f} MB",
        f"- first calls in a fresh process (numba cache load/compile): {summary['first_call_s']:.2f} s",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
