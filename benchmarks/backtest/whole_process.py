"""Benchmark: a whole ``backtest.py`` process against a whole backtesting.py process doing the same job.

Run from the project root (backtesting.py must be in ``benchmarks/.venv-bt``, see benchmarks/README.md)::

    .venv/bin/python -m benchmarks.backtest.whole_process [--bars 300000] [--repeats 3] [--before DIR]

Each side is a fresh process, timed from outside (wall time, and the child's CPU time), in alternating rounds:

- **ours, cached**: ``python backtest.py --strategy volatility_breakout --data FILE --json OUT`` with the flags
  that make the job the same as backtesting.py's (below), the candle cache present (every run after the first);
- **ours, first run**: the same with the candle cache deleted before the run (parse, validate, write the cache);
- **backtesting.py**: ``benchmarks/backtest/bt_whole.py`` in its own environment: ``read_csv``, the same
  strategy, ``Backtest.run``, the trades written as JSON;
- **before** (with ``--before DIR``, a checkout of the code before this change, e.g. ``git archive``): the same
  ``backtest.py`` command run from DIR.

Same job, same trades: ``--no-risk-rules --no-quick-filter`` (no spacing, caps, breakers or gate),
``--slippage 0 --no-tick-rounding`` (fills at the close, as backtesting.py's ``trade_on_close``),
``--fee 0.0005`` (its ``commission``), ``--capital 1e12 --position-fraction 0.01`` (with one unit a trade and 1e13
cash on its side, neither side ever skips an entry for want of cash or below the minimum order, even after
100,000 trades' fees; sizes differ, and entries and exits do not depend on them).
The benchmark compares the trade lists (entry candle, entry price, exit candle, exit price; exactly, no
tolerance) and fails if they differ. Start-up is measured separately: ``python -c "import backtest"``.
Writes benchmarks/results/whole_process.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BT_PYTHON = ROOT / "benchmarks" / ".venv-bt" / "bin" / "python"
SAME_JOB = [
    "--no-risk-rules",
    "--no-quick-filter",
    "--slippage",
    "0",
    "--no-tick-rounding",
    "--fee",
    "0.0005",
    "--capital",
    "1e12",
    "--position-fraction",
    "0.01",
]


def load() -> str:
    """The 1, 5 and 15 minute load averages (``uptime``)."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one child process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ours(root: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, str(root / "backtest.py"), "--strategy", "volatility_breakout", "--data", str(data),
            "--json", str(out), *SAME_JOB]  # fmt: skip


def drop_cache(data: Path) -> None:
    from src.backtesting.candle_cache import cache_paths

    for path in cache_paths(data):
        path.unlink(missing_ok=True)


def trade_keys(path: Path) -> list[tuple[str, float, str, float]]:
    trades = json.loads(path.read_text())["trades"]
    return [(t["entry_candle"], t["entry_price"], t["exit_candle"], t["exit_price"]) for t in trades]


def make_data(bars: int) -> Path:
    from benchmarks.backtest.run import synthetic_hourly
    from src.backtesting.data_provider import save_candle_csv

    path = RESULTS / f"KRW-BTC_1h_{bars}.csv"
    if not path.is_file():
        RESULTS.mkdir(parents=True, exist_ok=True)
        save_candle_csv(synthetic_hourly(bars), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=300_000)
    parser.add_argument("--data", type=Path, help="a candle CSV instead of a synthetic one of --bars bars")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a checkout of the code before, run alternately too")
    args = parser.parse_args()
    if not BT_PYTHON.exists():
        sys.exit(f"backtesting.py is not installed in {BT_PYTHON.parent.parent} (see benchmarks/README.md)")
    data = (args.data or make_data(args.bars)).resolve()
    work = RESULTS / "whole_process"
    work.mkdir(parents=True, exist_ok=True)
    before_data = None
    if args.before is not None:  # its own copy: the code before has no cache, so it never sees ours
        before_data = work / data.name
        shutil.copy2(data, before_data)
    sides: dict[str, tuple[list[str], Path]] = {
        "backtesting.py": (
            [
                str(BT_PYTHON),
                str(ROOT / "benchmarks" / "backtest" / "bt_whole.py"),
                "--data",
                str(data),
                "--json",
                str(work / "bt.json"),
            ],
            ROOT,
        ),
        "ours, first run": (ours(ROOT, data, work / "ours-first.json"), ROOT),
        "ours, cached": (ours(ROOT, data, work / "ours.json"), ROOT),
    }
    if args.before is not None and before_data is not None:
        sides["before"] = (ours(args.before.resolve(), before_data, work / "before.json"), args.before.resolve())
    startup = {"ours": [sys.executable, "-c", "import backtest"]}
    if args.before is not None:
        startup["before"] = [sys.executable, "-c", "import backtest"]
    load_start = load()
    # Warm-up: numba's on-disk cache, the OS page cache, the candle cache
    for name, (cmd, cwd) in sides.items():
        if name == "ours, first run":
            continue
        timed(cmd, cwd)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in [*sides, *(f"start-up {s}" for s in startup)]}
    for _ in range(args.repeats):
        for name, (cmd, cwd) in sides.items():
            if name == "ours, first run":
                drop_cache(data)
            times[name].append(timed(cmd, cwd))
        for name, cmd in startup.items():
            cwd = args.before.resolve() if name == "before" and args.before is not None else ROOT
            times[f"start-up {name}"].append(timed(cmd, cwd))
    load_end = load()

    theirs = trade_keys(work / "bt.json")
    checks = {"ours, cached": trade_keys(work / "ours.json"), "ours, first run": trade_keys(work / "ours-first.json")}
    if "before" in sides:
        checks["before"] = trade_keys(work / "before.json")
    same = {name: keys == theirs for name, keys in checks.items()}
    rows = {
        name: {
            "wall_median_s": statistics.median(w for w, _ in runs),
            "wall_best_s": min(w for w, _ in runs),
            "cpu_median_s": statistics.median(c for _, c in runs),
            "runs": runs,
        }
        for name, runs in times.items()
    }
    bt = rows["backtesting.py"]
    summary: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}, {os.cpu_count()} cpus",
        "data": str(data),
        "bars": sum(1 for _ in data.open()) - 1,
        "trades": len(theirs),
        "same_trades_as_backtesting_py": same,
        "load_before": load_start,
        "load_after": load_end,
        "rows": rows,
        "ratio_vs_backtesting_py": {
            name: {"wall": bt["wall_median_s"] / r["wall_median_s"], "cpu": bt["cpu_median_s"] / r["cpu_median_s"]}
            for name, r in rows.items()
            if name in sides and name != "backtesting.py"
        },
    }
    (RESULTS / "whole_process.json").write_text(json.dumps(summary, indent=2))
    print(render(summary))
    if not all(same.values()):
        sys.exit(f"trade lists differ from backtesting.py's: {same}")


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['bars']:,} bars, {summary['trades']:,} trades; load average {summary['load_before']} before, "
        f"{summary['load_after']} after; same trades as backtesting.py: {summary['same_trades_as_backtesting_py']}",
        "",
        "| process | wall, median (s) | wall, best (s) | CPU, median (s) | backtesting.py / this (wall) | (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in summary["rows"].items():
        ratio = summary["ratio_vs_backtesting_py"].get(name)
        wall, cpu = (f"{ratio['wall']:.1f}×", f"{ratio['cpu']:.1f}×") if ratio else ("", "")
        lines.append(
            f"| {name} | {r['wall_median_s']:.2f} | {r['wall_best_s']:.2f} | {r['cpu_median_s']:.2f} | {wall} | {cpu} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
