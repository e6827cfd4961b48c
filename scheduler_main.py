"""The trading scheduler: ``python scheduler_main.py [--symbols ...]`` (needs ``make migrate`` first).

Replay: ``python scheduler_main.py --replay [--data FILE] [--start 2023-10-01 --end 2024-01-01] [--speed max]``
runs the same jobs on a simulated clock over bundled history (its own database, data/replay.db).

A/B: ``python scheduler_main.py --instances instances.toml [--replay ...]`` runs several named instances (each its own
strategy, parameters, symbols, paper account and database) side by side; with ``--replay`` every instance replays
the same candles and window and a comparison table ends the run (docs/SCHEDULER_GUIDE.md, "A/B").
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NoReturn

from backend.app.core.entrypoints import (
    EXIT_USAGE,
    fail,
    parse_database_url,
    parse_symbols,
    parse_time,
    print_replay,
    quiet_logging,
    run,
    run_scheduler,
)
from backend.app.core.instance_runner import print_comparison, replay_instances, run_instances
from backend.app.core.instances import InstancesFile, load_instances
from backend.app.core.replay import ReplayOptions, run_replay
from src.config.bootstrap import load_settings_or_exit
from src.config.settings import Settings
from src.exceptions import ConfigurationError


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"scheduler_main.py: error: {message} (see --help)\n")


_FROM_SETTINGS = Path("INSTANCES_FILE")  # ``--instances`` without a file: the setting


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'max' or simulated seconds per real second, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be 'max' or a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="scheduler_main.py", description="Run the trading scheduler (or a replay).")
    parser.add_argument("--symbols", help="comma-separated markets, default: TRADING_SYMBOLS")
    parser.add_argument("--replay", action="store_true", help="replay history on a simulated clock (paper exchange)")
    parser.add_argument("--data", type=Path, help="replay: a candle CSV for one symbol instead of the bundled data")
    parser.add_argument("--start", help="replay: first simulated moment (UTC), default: 30 days before --end")
    parser.add_argument("--end", help="replay: last simulated moment (UTC, exclusive), default: end of the data")
    parser.add_argument("--speed", type=_speed, default=None, help="replay: 'max' (default) or simulated s per real s")
    parser.add_argument("--database-url", help="replay: database to write (default: a fresh data/replay.db)")
    parser.add_argument(
        "--instances",
        type=Path,
        nargs="?",
        const=_FROM_SETTINGS,
        metavar="FILE",
        help="A/B: run the instances of this TOML/JSON file side by side (no FILE: INSTANCES_FILE)",
    )
    parser.add_argument("--verbose", action="store_true", help="replay: log every job (default: warnings + summary)")
    return parser


def _replay_options(args: argparse.Namespace, settings: Settings) -> ReplayOptions:
    return ReplayOptions(
        symbols=parse_symbols(args.symbols, settings),
        start=parse_time(args.start, "--start") if args.start else None,
        end=parse_time(args.end, "--end") if args.end else None,
        data_file=args.data,
        database_url=parse_database_url(args.database_url),
        speed=args.speed,
        progress=not args.verbose,  # --verbose logs every job instead
    )


async def _replay(settings: Settings, options: ReplayOptions) -> int:
    return print_replay(await run_replay(settings, options))


async def _replay_instances(file: InstancesFile, options: ReplayOptions) -> int:
    return print_comparison(await replay_instances(file, options))


def _instances(args: argparse.Namespace, settings: Settings) -> int:
    for name in ("symbols", "database_url"):
        if getattr(args, name) is not None:
            flag = name.replace("_", "-")
            return fail(f"--{flag} does not apply with --instances (each instance has its own in the file)", EXIT_USAGE)
    path = args.instances
    if path is _FROM_SETTINGS:
        if settings.scheduler.instances_file is None:
            return fail("--instances without a FILE needs INSTANCES_FILE", EXIT_USAGE)
        path = settings.scheduler.instances_file
    file = load_instances(path, settings)
    if args.replay:
        options = _replay_options(args, settings)
        return run(_replay_instances(file, options))
    return run(run_instances(file, settings))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    replay_only = [name for name in ("data", "start", "end", "database_url") if getattr(args, name) is not None]
    if replay_only and not args.replay:
        return fail(f"--{replay_only[0].replace('_', '-')} needs --replay", EXIT_USAGE)
    settings = load_settings_or_exit()
    if args.replay and not args.verbose:
        quiet_logging(settings)
    try:
        if args.instances is not None:
            return _instances(args, settings)
        if args.replay:
            return run(_replay(settings, _replay_options(args, settings)))
        settings.require_live_keys()
        return run(run_scheduler(settings, parse_symbols(args.symbols, settings)))
    except ConfigurationError as exc:
        return fail(exc.message, EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
