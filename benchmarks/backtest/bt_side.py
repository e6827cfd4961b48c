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

ALL_IN = 0.999999  # backtesting.py reads sizes in (0, 1) as a share of available margin


def frame(data: np.lib.npyio.NpzFile, scale: float) -> pd.DataFrame:
    index = pd.to_datetime(data["timestamp"], utc=True).tz_localize(None)
    return pd.DataFrame(
        {
            "Open": data["open"] / scale,
            "High": data["high"] / scale,
            "Low": data["low"] / scale,
            "Close": data["close"] / scale,
            "Volume": data["volume"],
        },
        index=index,
    )


def volatility_breakout(k: float):
    class VolatilityBreakout(Strategy):
        def init(self) -> None:
            o, h, lo = (np.asarray(self.data.df[c]) for c in ("Open", "High", "Low"))
            self.target = np.full(len(o), np.nan)
            self.target[1:] = o[1:] + k * (h[:-1] - lo[:-1])  # target[t] = o[t] + k * range[t-1]
            self.n = len(o)

        def next(self) -> None:
            t = len(self.data) - 1  # orders placed now execute in bar t + 1
            if self.position:
                self.position.close()  # sold at the next open
            nxt = t + 1
            if 1 <= nxt <= self.n - 2:
                self.buy(size=ALL_IN, stop=self.target[nxt])  # fills at max(target, open) when high >= target

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
                self.buy(size=ALL_IN, sl=opens[nxt] - stop_distance[nxt], tp=opens[nxt] + target_distance[nxt])

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
    scale = 1.0
    df = frame(data, scale)
    if args.strategy == "volatility_breakout":
        strategy = volatility_breakout(args.k)
    else:
        strategy = rule(data["buy_signal"], data["stop_distance"], data["target_distance"], df["Open"].to_numpy())
    bt = Backtest(df, strategy, cash=1e13, commission=args.fee, finalize_trades=True)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    stats = bt.run()
    seconds = time.perf_counter() - started
    trades = stats["_trades"]
    position = pd.Series(np.arange(len(df)), index=df.index)
    out = {
        "seconds": seconds,
        "bars": len(df),
        "trades": [
            [int(position[e]), float(ep * scale), int(position[x]), float(xp * scale)]
            for e, ep, x, xp in zip(trades["EntryTime"], trades["EntryPrice"], trades["ExitTime"], trades["ExitPrice"], strict=True)
        ],
        "return_pct": float(stats["Return [%]"]),
    }
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main()
