"""backtesting.py (kernc) doing the whole job of ``backtest.py --strategy volatility_breakout --json``, as a user
would write it: load the candle CSV, run, write the trades as JSON. Runs ONLY in benchmarks/.venv-bt (AGPL,
never a dependency); timed from outside, as a whole process, by ``benchmarks/backtest/whole_process.py``.

The strategy is the bot's volatility breakout with its semantics (docs/BACKTESTING.md), written here from the
candles, independently of our code: at the close of bar t, a held position is sold (the exit signal is on
every bar), else when ``high[t] >= open[t] + k * (high[t-1] - low[t-1])`` one is bought; one action per close.
``trade_on_close=True`` fills market orders at the close of the bar they were placed on. One unit per trade
and ample cash, so no trade is ever skipped for want of cash (our side runs with capital to match).

One padding bar (a copy of the last) is appended: backtesting.py fills an order placed at bar t while
processing bar t + 1, so without it the orders of the last bar would be filled at the previous close.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from backtesting import Backtest, Strategy


def breakout(k: float, n: int):
    class VolatilityBreakout(Strategy):
        def init(self) -> None:
            o, h, lo = (np.asarray(self.data.df[c]) for c in ("Open", "High", "Low"))
            target = np.full(len(o), np.nan)
            target[1:] = o[1:] + k * (h[:-1] - lo[:-1])
            self.entry = h >= target  # NaN target (bar 0): False

        def next(self) -> None:
            t = len(self.data) - 1
            if t >= n:  # the padding bar: nothing is decided on it
                return
            if self.position:
                self.position.close()
            elif self.entry[t]:
                self.buy(size=1)

    return VolatilityBreakout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--k", type=float, default=0.5)
    parser.add_argument("--fee", type=float, default=0.0005)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    df = pd.read_csv(args.data, index_col="timestamp", parse_dates=["timestamp"])
    df = df.rename(columns={"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume"})
    df.index = df.index.tz_convert(None)
    n = len(df)
    padded = pd.concat([df, df.iloc[-1:]])
    padded.index = df.index.append(pd.DatetimeIndex([df.index[-1] + (df.index[-1] - df.index[-2])]))
    bt = Backtest(
        padded[["Open", "High", "Low", "Close", "Volume"]],
        breakout(args.k, n),
        cash=1e13,
        commission=args.fee,
        trade_on_close=True,
        finalize_trades=True,
    )
    stats = bt.run()
    trades = stats["_trades"]
    out = {
        "return_pct": float(stats["Return [%]"]),
        "trades": [
            {
                "entry_candle": entry.isoformat() + "+00:00",
                "entry_price": float(entry_price),
                "exit_candle": exit_.isoformat() + "+00:00",
                "exit_price": float(exit_price),
            }
            for entry, entry_price, exit_, exit_price in zip(
                trades["EntryTime"], trades["EntryPrice"], trades["ExitTime"], trades["ExitPrice"], strict=True
            )
        ],
    }
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=2)


if __name__ == "__main__":
    main()
