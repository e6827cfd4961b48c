"""One trading cycle now: ``python main.py [--mode paper|live|replay] [--symbols KRW-BTC,KRW-ETH] [--dry-run]``.

Needs a migrated database (``make migrate``). ``--dry-run`` decides and records, but sends no order.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from backend.app.core.entrypoints import EXIT_USAGE, fail, parse_symbols, run, run_one_cycle
from src.config.bootstrap import load_settings_or_exit
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"main.py: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="main.py", description="Run one trading cycle now.")
    parser.add_argument("--mode", choices=[m.value for m in TradingMode], help="default: TRADING_MODE (paper)")
    parser.add_argument("--symbols", help="comma-separated markets, default: TRADING_SYMBOLS")
    parser.add_argument("--dry-run", action="store_true", help="decide and record, send no order")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings_or_exit()
    mode = TradingMode(args.mode) if args.mode else settings.trading.mode
    try:
        settings.require_live_keys(mode)
        symbols = parse_symbols(args.symbols, settings)
    except ConfigurationError as exc:
        return fail(exc.message, EXIT_USAGE)
    return run(run_one_cycle(settings, mode, symbols, args.dry_run))


if __name__ == "__main__":
    sys.exit(main())
