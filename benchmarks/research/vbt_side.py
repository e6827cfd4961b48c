"""The vectorbt side of the research benchmark. Runs ONLY in benchmarks/.venv-vbt (never a dependency).

Input: an .npz with the candles (``open``, ``high``, ``low``, ``close``, ``timestamp`` ns) and the grid (``k``,
``trend_window``). The volatility breakout's signals are built here with vectorbt/pandas/numpy from the candles,
independently of our code, for every parameter set (one column each), then ``Portfolio.from_signals`` broadcasts
the columns in chunks (a 100k × 10k float array would need 8 GB). Output: JSON with the time, the peak memory and
each set's total return and trade count.

Semantics, the closest vectorbt has to ours (what is compared is written in benchmarks/README.md): buy at the
close of an entry bar when flat, all in (``size=inf``), sell at the next bar's close; ``fees`` per side; no
slippage, no tick grid, no minimum order, no risk rules.
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np
import pandas as pd
import vectorbt as vbt


@numba.njit(cache=True)
def held_one_bar(entry: np.ndarray) -> np.ndarray:
    """Our hold rule in signal form: an entry is taken when flat; the position is sold at the next bar's close,
    and that bar cannot buy (one action per bar). ``entry`` is (bars, sets)."""
    taken = np.zeros_like(entry)
    for col in range(entry.shape[1]):
        held = False
        for t in range(entry.shape[0]):
            if held:
                held = False
            elif entry[t, col]:
                taken[t, col] = True
                held = True
    return taken


def signals(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, ks: np.ndarray, windows: np.ndarray):
    """Entries (bars × sets): ``h[t] >= o[t] + k (h[t-1] - l[t-1])`` and ``o[t] > mean(c[t-w..t-1])``."""
    prev_range = np.concatenate(([np.nan], h[:-1] - lo[:-1]))
    closes = pd.Series(c)
    means = {int(w): closes.rolling(int(w)).mean().shift(1).to_numpy() for w in np.unique(windows)}
    target = o[:, None] + ks[None, :] * prev_range[:, None]
    trend = np.stack([o > means[int(w)] for w in windows], axis=1)  # NaN mean: False
    return (h[:, None] >= target) & trend


def sweep(o, h, lo, c, close, ks, windows, args) -> tuple[list[float], list[int]]:
    """Every set's total return and trade count, ``args.chunk`` sets (columns) per from_signals call."""
    returns: list[float] = []
    trades: list[int] = []
    for first in range(0, len(ks), args.chunk):
        part = slice(first, first + args.chunk)
        taken = held_one_bar(signals(o, h, lo, c, ks[part], windows[part]))
        exits = np.zeros_like(taken)
        exits[1:] = taken[:-1]
        columns = pd.RangeIndex(first, first + taken.shape[1])
        pf = vbt.Portfolio.from_signals(
            close,
            pd.DataFrame(taken, index=close.index, columns=columns),
            pd.DataFrame(exits, index=close.index, columns=columns),
            size=np.inf,
            fees=args.fee,
            init_cash=args.capital,
            freq="1h",
        )
        returns.extend(float(x) for x in pf.total_return().to_numpy())
        trades.extend(int(x) for x in pf.trades.count().to_numpy())
    return returns, trades


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--fee", type=float, default=0.0005)
    parser.add_argument("--capital", type=float, default=10_000_000.0)
    parser.add_argument("--chunk", type=int, default=250, help="parameter sets (columns) per from_signals call")
    parser.add_argument("--sets", type=int, help="only the first N sets of the grid")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = np.load(args.data)
    o, h, lo, c = (data[name] for name in ("open", "high", "low", "close"))
    index = pd.to_datetime(data["timestamp"], utc=True).tz_localize(None)
    ks, windows = data["k"], data["trend_window"]
    if args.sets:
        ks, windows = ks[: args.sets], windows[: args.sets]
    close = pd.Series(c, index=index)
    # Warm-up outside the timing: every numba function of the pipeline compiled on a small slice
    sweep(o[:300], h[:300], lo[:300], c[:300], close.iloc[:300], ks[:2], windows[:2], args)
    started, cpu_started = time.perf_counter(), time.process_time()
    returns, trades = sweep(o, h, lo, c, close, ks, windows, args)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    with open("/proc/self/status", encoding="ascii") as status:
        peak_kb = int(next(line for line in status if line.startswith("VmHWM")).split()[1])
    out = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "bars": len(c),
        "sets": len(ks),
        "chunk": args.chunk,
        "peak_rss_mb": peak_kb / 1024,
        "vectorbt": vbt.__version__,
        "total_return_pct": [100.0 * r for r in returns],
        "trades": trades,
    }
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main()
