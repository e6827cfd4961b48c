"""Benchmark: a volatility-breakout parameter sweep, our batch evaluation at 1 and 2 workers against vectorbt.

Run from the project root::

    .venv/bin/python -m benchmarks.research.run                 # 10,000 sets × 100,000 hourly bars; vectorbt on a
                                                                # sample of the grid (--vbt-sets, default 2,000)
    .venv/bin/python -m benchmarks.research.run --vbt-sets 10000   # vectorbt on the whole grid (about 30 min here)
    .venv/bin/python -m benchmarks.research.run --bars 20000 --k-values 20 --windows 20 --skip-vbt   # a quick look

The data: synthetic hourly candles (``benchmarks.backtest.run.synthetic_hourly``, a seeded random walk). The
grid: ``k`` × ``trend_window`` with the trend filter on (every set has its own signals). Our side is
``src.research.search.evaluate_job`` (``evaluate_batch``: many sets per compiled call) through the executors of
``src.research.distributed``: in one process, and on a local Ray instance with 1 and with 2 workers (actors).
Each configuration runs in a fresh process (clean peak memory; every one warmed up before the timing: numba's
compiled kernels loaded, Ray's actors started). vectorbt runs in its own environment (``benchmarks/.venv-vbt``,
created on first use from ``benchmarks/research/requirements-vectorbt.txt``). Writes
benchmarks/results/research.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
VBT_VENV = ROOT / "benchmarks" / ".venv-vbt"
VBT_PYTHON = VBT_VENV / "bin" / "python"
VBT_REQUIREMENTS = Path(__file__).with_name("requirements-vectorbt.txt")
FEE = 0.0005
CAPITAL = 1e12  # large enough that whole-KRW sizing never stops a losing sweep (vectorbt has no such floor)
STRATEGY = "volatility_breakout"


def engine_config() -> Any:
    """The closest our engine gets to vectorbt's from_signals: all in, fee per side, no slippage, no tick grid,
    no minimum order, no risk rules, no quick filter (the engine still simulates the bot's loop: position checks,
    the fill model, the breakers' bookkeeping)."""
    from src.backtesting.engine import EngineConfig

    return EngineConfig(
        initial_capital=CAPITAL,
        fee_rate=FEE,
        slippage_pct=0.0,
        min_order_krw=0.0,
        use_tick_sizes=False,
        position_fraction_pct=100.0,
        quick_filter=False,
    ).without_risk_rules()


def grid(k_values: int, windows: int) -> list[dict[str, Any]]:
    ks = 0.5 + 0.025 * np.arange(k_values)
    return [
        {"k": round(float(k), 6), "trend_filter": True, "trend_window": int(w)}
        for k in ks
        for w in range(1, windows + 1)
    ]


def research_data(bars: int) -> Any:
    from benchmarks.backtest.run import synthetic_hourly
    from src.research.data import ResearchData

    return ResearchData.of(synthetic_hourly(bars), symbol="SYNTH", timeframe="1h")


# --- one configuration, in a fresh process ----------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _rollup_kb(pid: int) -> dict[str, int]:
    """Rss, Pss and private memory (kB) from /proc/PID/smaps_rollup."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1])
    return {
        "rss": out.get("Rss", 0),
        "pss": out.get("Pss", 0),
        "private": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0),
        "shared": out.get("Shared_Clean", 0) + out.get("Shared_Dirty", 0),
    }


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def warm() -> None:
    """Each worker, once: load (or compile) the batch kernel."""
    from src.research.batch import evaluate_batch

    data = research_data(600)
    evaluate_batch(data, STRATEGY, grid(2, 2), engine_config())


def child(mode: str, bars: int, k_values: int, windows: int, batch_size: int) -> dict[str, Any]:
    from src.research.distributed import InProcessExecutor, RayExecutor, fan_out
    from src.research.search import evaluate_job
    from src.utils.logger import configure_logging

    configure_logging("WARNING")
    data = research_data(bars)
    sets = grid(k_values, windows)
    batches = fan_out([data.symbol], STRATEGY, sets, batch_size=batch_size, config=engine_config())
    warm()
    executor: Any
    if mode == "in-process":
        executor = InProcessExecutor()
    else:
        workers = int(mode.split("-")[1])
        executor = RayExecutor(num_cpus=workers, workers=workers, warmup=warm, object_store_mb=128)
    pids = [os.getpid()] if mode == "in-process" else [pid for _, pid in executor.worker_locations()]
    cpu_before = sum(_cpu_s(pid) for pid in pids)
    started = time.perf_counter()
    results = executor.map_batches(evaluate_job, batches, data={data.symbol: data})
    seconds = time.perf_counter() - started
    cpu = sum(_cpu_s(pid) for pid in pids) - cpu_before
    flat = [m for chunk in results for m in chunk]
    out: dict[str, Any] = {
        "mode": mode,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "sets": len(flat),
        "bars": len(data),
        "batches": len(batches),
        "data_mb": (data.times_ns.nbytes + sum(a.nbytes for a in data.columns.values())) / 2**20,
        "results_sha256": hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest(),
        "driver_peak_rss_mb": _status_kb(os.getpid(), "VmHWM") / 1024,
        "total_return_pct": [m["total_return_pct"] for m in flat],
        "trades": [m["trades"] for m in flat],
    }
    if mode != "in-process":
        workers_mem = [(_status_kb(pid, "VmHWM"), _rollup_kb(pid)) for pid in pids]
        out["worker_peak_rss_mb"] = [peak / 1024 for peak, _ in workers_mem]
        out["worker_pss_mb"] = [roll["pss"] / 1024 for _, roll in workers_mem]
        out["worker_private_mb"] = [roll["private"] / 1024 for _, roll in workers_mem]
        # what went into the object store: each dataset once (RayExecutor.share), whatever the number of workers
        out["object_store"] = f"{executor.datasets_shared} × {out['data_mb']:.1f} MB"
        executor.close()
    return out


def run_child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    out_file = RESULTS / f"research-{mode}.json"
    command = [sys.executable, "-m", "benchmarks.research.run", "--child", mode, "--out", str(out_file),
               "--bars", str(args.bars), "--k-values", str(args.k_values), "--windows", str(args.windows),
               "--batch-size", str(args.batch_size)]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out_file.read_text())
    out_file.unlink()
    return result


# --- vectorbt ---------------------------------------------------------------------------------------------------


def ensure_vbt() -> None:
    if VBT_PYTHON.exists():
        return
    print(f"creating {VBT_VENV} (vectorbt, for this benchmark only)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VBT_VENV)], check=True)
    subprocess.run([str(VBT_PYTHON), "-m", "pip", "install", "--quiet", "-r", str(VBT_REQUIREMENTS)], check=True)


def run_vbt(args: argparse.Namespace, sets: list[dict[str, Any]], sample: list[int]) -> dict[str, Any]:
    from benchmarks.backtest.run import synthetic_hourly

    ensure_vbt()
    df = synthetic_hourly(args.bars)
    npz, out = RESULTS / "research-vbt.npz", RESULTS / "research-vbt.json"
    np.savez(
        npz,
        **{c: df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")},
        timestamp=df.index.as_unit("ns").asi8,
        k=np.array([sets[i]["k"] for i in sample]),
        trend_window=np.array([sets[i]["trend_window"] for i in sample]),
    )
    command = [str(VBT_PYTHON), str(Path(__file__).with_name("vbt_side.py")), "--data", str(npz), "--fee", str(FEE),
               "--capital", str(CAPITAL), "--chunk", str(args.vbt_chunk), "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.read_text())
    npz.unlink()
    out.unlink()
    return result


def compare(ours: dict[str, Any], theirs: dict[str, Any], sample: list[int]) -> dict[str, Any]:
    """Trade counts and total returns of the sampled sets, ours against vectorbt's."""
    our_trades = np.array([ours["trades"][i] for i in sample])
    our_ret = np.array([ours["total_return_pct"][i] for i in sample])
    their_trades, their_ret = np.array(theirs["trades"]), np.array(theirs["total_return_pct"])
    # total return -> final equity as a share of the start; compare equity ratios (returns near -100 % are tiny)
    ratio = (1 + our_ret / 100) / np.where(1 + their_ret / 100 == 0, np.nan, 1 + their_ret / 100)
    return {
        "sets_compared": len(sample),
        "same_trade_count": int(np.sum(our_trades == their_trades)),
        "max_trade_count_diff": int(np.max(np.abs(our_trades - their_trades))),
        "median_equity_ratio": float(np.nanmedian(ratio)),
        "max_abs_log_equity_ratio": float(np.nanmax(np.abs(np.log(ratio)))),
    }


# --- the report ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--k-values", type=int, default=100)
    parser.add_argument("--windows", type=int, default=100, help="trend windows 1..N (sets = k-values × windows)")
    parser.add_argument("--batch-size", type=int, default=250, help="parameter sets per batch (Ray task)")
    parser.add_argument("--vbt-sets", type=int, default=2000, help="vectorbt on this many sets (evenly spread)")
    parser.add_argument("--vbt-chunk", type=int, default=250, help="columns per vectorbt from_signals call")
    parser.add_argument("--skip-vbt", action="store_true")
    parser.add_argument("--modes", nargs="+", default=["in-process", "ray-1", "ray-2"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args.bars, args.k_values, args.windows, args.batch_size)
        args.out.write_text(json.dumps(result))
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    sets = grid(args.k_values, args.windows)
    load_before = os.getloadavg()
    runs: dict[str, dict[str, Any]] = {}
    for mode in args.modes:
        runs[mode] = run_child(mode, args)
        r = runs[mode]
        print(f"{mode}: {r['seconds']:.1f} s, {r['sets'] * r['bars'] / r['seconds'] / 1e6:.2f} M bar-sets/s "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    vbt: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    if not args.skip_vbt:
        count = min(args.vbt_sets, len(sets))
        sample = sorted({round(i * (len(sets) - 1) / max(1, count - 1)) for i in range(count)})
        vbt = run_vbt(args, sets, sample)
        print(f"vectorbt: {vbt['seconds']:.1f} s for {vbt['sets']} sets (load {os.getloadavg()[0]:.1f})", flush=True)
        check = compare(next(iter(runs.values())), vbt, sample)
    load_after = os.getloadavg()
    summary = summarise(args, sets, runs, vbt, check, load_before, load_after)
    (RESULTS / "research.json").write_text(json.dumps(summary, indent=2))
    print(render(summary))


def summarise(args, sets, runs, vbt, check, load_before, load_after) -> dict[str, Any]:
    rows = []
    for mode, r in runs.items():
        evals = r["sets"] * r["bars"]
        rows.append({
            "mode": mode,
            "seconds": r["seconds"],
            "cpu_seconds": r["cpu_seconds"],
            "bar_sets_per_s": evals / r["seconds"],
            "bar_sets_per_cpu_s": evals / r["cpu_seconds"] if r["cpu_seconds"] else None,
            "driver_peak_rss_mb": r["driver_peak_rss_mb"],
            "worker_peak_rss_mb": r.get("worker_peak_rss_mb"),
            "worker_pss_mb": r.get("worker_pss_mb"),
            "worker_private_mb": r.get("worker_private_mb"),
            "object_store": r.get("object_store"),
            "results_sha256": r["results_sha256"],
        })  # fmt: skip
    same = len({r["results_sha256"] for r in runs.values()}) == 1
    by_mode = {row["mode"]: row for row in rows}
    speedup = None
    if "ray-1" in by_mode and "ray-2" in by_mode:
        speedup = by_mode["ray-1"]["seconds"] / by_mode["ray-2"]["seconds"]
    vbt_row = None
    if vbt is not None:
        evals = vbt["sets"] * vbt["bars"]
        vbt_row = {
            "sets": vbt["sets"],
            "seconds": vbt["seconds"],
            "cpu_seconds": vbt.get("cpu_seconds"),
            "bar_sets_per_s": evals / vbt["seconds"],
            "bar_sets_per_cpu_s": evals / vbt["cpu_seconds"],
            "peak_rss_mb": vbt["peak_rss_mb"],
            "version": vbt["vectorbt"],
            "chunk": vbt["chunk"],
        }
    one = by_mode.get("ray-1") or by_mode.get("in-process")
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "load_before": load_before,
        "load_after": load_after,
        "bars": args.bars,
        "sets": len(sets),
        "batch_size": args.batch_size,
        "data": "synthetic hourly candles (benchmarks.backtest.run.synthetic_hourly, seed 42)",
        "grid": f"k = 0.5 + 0.025 i (i < {args.k_values}) × trend_window 1..{args.windows}, trend_filter on",
        "rows": rows,
        "same_results_everywhere": same,
        "speedup_1_to_2_workers": speedup,
        "vectorbt": vbt_row,
        "ours_vs_vectorbt": (one["bar_sets_per_s"] / vbt_row["bar_sets_per_s"]) if vbt_row and one else None,
        "ours_vs_vectorbt_per_cpu_s": (
            one["bar_sets_per_cpu_s"] / vbt_row["bar_sets_per_cpu_s"] if vbt_row and one else None
        ),
        "ours_2_workers_vs_vectorbt": (
            by_mode["ray-2"]["bar_sets_per_s"] / vbt_row["bar_sets_per_s"] if vbt_row and "ray-2" in by_mode else None
        ),
        "semantics_check": check,
    }


def _mb(values: list[float] | None) -> str:
    return "-" if not values else " + ".join(f"{v:.0f}" for v in values)


def render(s: dict[str, Any]) -> str:
    lines = [
        f"{s['sets']:,} sets × {s['bars']:,} bars = {s['sets'] * s['bars']:,} bar × set evaluations; "
        f"load average {s['load_before'][0]:.1f} before, {s['load_after'][0]:.1f} after",
        "",
        "| run | wall s | CPU s | M bar×sets / s (wall) | M bar×sets / CPU s | driver peak RSS MB "
        "| workers peak RSS MB | workers private MB | object store |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        per_cpu = "-" if not r["bar_sets_per_cpu_s"] else f"{r['bar_sets_per_cpu_s'] / 1e6:.2f}"
        store = r["object_store"] or "-"
        lines.append(
            f"| ours, {r['mode']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['bar_sets_per_s'] / 1e6:.2f} | "
            f"{per_cpu} | {r['driver_peak_rss_mb']:.0f} | {_mb(r['worker_peak_rss_mb'])} | "
            f"{_mb(r['worker_private_mb'])} | {store} |"
        )
    v = s["vectorbt"]
    if v:
        lines.append(
            f"| vectorbt {v['version']} ({v['sets']:,} sets, chunks of {v['chunk']}) | {v['seconds']:.1f} | "
            f"{v['cpu_seconds']:.1f} | {v['bar_sets_per_s'] / 1e6:.2f} | {v['bar_sets_per_cpu_s'] / 1e6:.2f} | "
            f"{v['peak_rss_mb']:.0f} | - | - | - |"
        )
    lines += ["", f"- same results in every run: {s['same_results_everywhere']}"]
    if s["speedup_1_to_2_workers"]:
        lines.append(f"- 1 → 2 workers (Ray): {s['speedup_1_to_2_workers']:.2f}×")
    if s["ours_vs_vectorbt"]:
        lines.append(f"- ours (1 worker) vs vectorbt, bar×sets per second: {s['ours_vs_vectorbt']:.1f}×")
    if s["ours_vs_vectorbt_per_cpu_s"]:
        lines.append(f"- ours vs vectorbt, bar×sets per CPU second: {s['ours_vs_vectorbt_per_cpu_s']:.1f}×")
    if s["ours_2_workers_vs_vectorbt"]:
        lines.append(f"- ours (2 workers) vs vectorbt: {s['ours_2_workers_vs_vectorbt']:.1f}×")
    if s["semantics_check"]:
        c = s["semantics_check"]
        lines.append(
            f"- semantics, {c['sets_compared']:,} sets: same trade count in {c['same_trade_count']:,} "
            f"(max difference {c['max_trade_count_diff']}); final equity ours / vectorbt: median "
            f"{c['median_equity_ratio']:.6f}, max |log ratio| {c['max_abs_log_equity_ratio']:.2e}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
