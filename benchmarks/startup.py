"""Benchmark: start-up of the entry points, and the time to the scheduler's first jobs.

Run from the project root::

    .venv/bin/python -m benchmarks.startup [--repeats 3] [--before DIR]

Each command is a fresh process timed from outside (wall and CPU = user + system of the child); with ``--before``
(a checkout of the code before a change, e.g. from ``git archive``) the same commands run from DIR, alternating
with this checkout's, so both see the same machine load:

- ``backtest.py --help``, ``scheduler_main.py --help``, ``main.py --help``: the imports (argparse answers after
  them);
- time to the first jobs: ``scheduler_main.py --replay`` over three hours (a fresh data/replay.db, migrated; the
  scheduler's three trading cycles and their position checks and snapshots), start to exit.

Prints a markdown table and writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "backtest.py --help": ["backtest.py", "--help"],
    "scheduler_main.py --help": ["scheduler_main.py", "--help"],
    "main.py --help": ["main.py", "--help"],
    "first jobs: 3-hour replay": [
        "scheduler_main.py",
        "--replay",
        "--start",
        "2023-12-30",
        "--end",
        "2023-12-30T03:00",
    ],
}


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, *cmd], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a checkout of the code before, run alternately")
    args = parser.parse_args()
    trees = {"after": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    for cwd in trees.values():  # warm-up: bytecode, numba's cache, the page cache
        for cmd in COMMANDS.values():
            timed(cmd, cwd)
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {name: {tree: [] for tree in trees} for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            for tree, cwd in trees.items():
                runs[name][tree].append(timed(cmd, cwd))
    load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"load average {load_before} before, {load_after} after; median of {args.repeats}, alternating",
        "",
        "| command | " + " | ".join(f"{t} wall (s) | {t} CPU (s)" for t in trees) + " |",
        "|---|" + "---:|---:|" * len(trees),
    ]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, by_tree in runs.items():
        cells = []
        summary[name] = {}
        for tree, values in by_tree.items():
            wall = statistics.median(w for w, _ in values)
            cpu = statistics.median(c for _, c in values)
            summary[name][tree] = {"wall_s": wall, "cpu_s": cpu}
            cells += [f"{wall:.2f}", f"{cpu:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "startup.json").write_text(
        json.dumps({"load_before": load_before, "load_after": load_after, "rows": summary}, indent=2)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
