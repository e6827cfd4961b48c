"""The backtesting.py (kernc) side of the benchmark. Runs ONLY in benchmarks/.venv-bt (AGPL, never a dependency).

Input: an .npz with timestamps (ns), open/high/low/close/volume and, for the rule strategy, the rule's
precomputed ``buy_signal``, ``stop_distance`` and ``target_distance``. The volatility breakout target is
computed here from the candles, independently of our code. Output: JSON with the run time and the trades.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd

from backtesting import Backtest, Strategy

# One unit per trade with ample cash: backtesting.py sizes in whole units, and an all-in size would stop
# trading once a losing run leaves less than one unit of cash. Our engine's entries and exits do not
# depend on the position size, so the trade lists (times and prices) are comparable.
UNITS = 1
CASH = 1e13


def padded(values: np.ndarray) -> np.ndarray:
    """Prepend a copy of the first value: backtesting.py's first ``next()`` is at its bar 1, so with one
    padding bar in front it can place orders for our bar 1 (the spec's first possible entry)."""
    return np.concatenate((values[:1], values))


def frame(data: np.lib.npyio.NpzFile) -> pd.DataFrame:
    stamps = data["timestamp"]
    index = pd.to_datetime(np.concatenate(([stamps[0] - (stamps[1] - stamps[0])], stamps)), utc=True)
    columns = {"Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}
    return pd.DataFrame({k: padded(data[v]) for k, v in columns.items()}, index=index.tz_localize(None))


def volatility_breakout(k: float):
    class VolatilityBreakout(Strategy):
        def init(self) -> None:
            o, h, lo = (np.asarray(self.data.df[c]) for c in ("Open", "High", "Low"))
            self.target = np.full(len(o), np.nan)
            self.target[1:] = o[1:] + k * (h[:-1] - lo[:-1])  # target[t] = o[t] + k * range[t-1]
            self.n = len(o)

        def next(self) -> None:
            t = len(self.data) - 1  # orders placed now execute in bar t + 1
            for order in list(self.orders):
                order.cancel()  # a stop that did not trigger is only good for its own bar
            if self.position:
                self.position.close()  # sold at the next open
            nxt = t + 1
            if 2 <= nxt <= self.n - 2:  # our bars 1 .. N-2 (bar 0 here is the padding)
                self.buy(size=UNITS, stop=self.target[nxt])  # fills at max(target, open) when high >= target

    return VolatilityBreakout


def rule(buy: np.ndarray, stop_distance: np.ndarray, target_distance: np.ndarray, opens: np.ndarray):
    class Rule(Strategy):
        def init(self) -> None:
            self.n = len(buy)

        def next(self) -> None:
            t = len(self.data) - 1
            nxt = t + 1
            if not self.position and buy[t] and nxt < self.n - 1:
                # stop/target are distances from the entry's market price (the next open)
                self.buy(size=UNITS, sl=opens[nxt] - stop_distance[nxt], tp=opens[nxt] + target_distance[nxt])

    return Rule


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--strategy", choices=["volatility_breakout", "rule_breakout"], required=True)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--fee", type=float, default=0.0005)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = np.load(args.data)
    df = frame(data)
    if args.strategy == "volatility_breakout":
        strategy = volatility_breakout(args.k)
    else:
        buy = np.concatenate(([False], data["buy_signal"]))
        strategy = rule(buy, padded(data["stop_distance"]), padded(data["target_distance"]), df["Open"].to_numpy())
    bt = Backtest(df, strategy, cash=CASH, commission=args.fee, finalize_trades=True)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    stats = bt.run()
    seconds = time.perf_counter() - started
    trades = stats["_trades"]
    position = pd.Series(np.arange(len(df)) - 1, index=df.index)  # back to our bar numbers
    entry_bars = position.reindex(trades["EntryTime"]).to_numpy()
    exit_bars = position.reindex(trades["ExitTime"]).to_numpy()
    out = {
        "seconds": seconds,
        "bars": len(df),
        "trades": [
            [int(e), float(ep), int(x), float(xp)]
            for e, ep, x, xp in zip(entry_bars, trades["EntryPrice"], exit_bars, trades["ExitPrice"], strict=True)
        ],
        "return_pct": float(stats["Return [%]"]),
    }
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main()
