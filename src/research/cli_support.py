"""What every research sub-command of ``backtest.py`` shares: its parser, the backtest it starts from, the
progress bar, and ``finish`` (JSON, HTML, the stored run, and ``--apply`` with confirmation).

The contract (``backtest.py`` dispatches ``backtest.py NAME ...`` to it): a sub-command module has

    def run(argv: list[str], context: ResearchContext) -> int

``argv`` is the command line after NAME; the module parses it with ``parse_research_args(research_parser(...),
argv)`` (the shared data options, defined once in ``src.backtesting.cli_options``), calls
``context.begin(args, kind, request)`` (the run is stored as running, and as failed with its error if the
sub-command raises), computes, and ends with ``finish(context, args, outcome)`` (done, with its result). A
``TradingSystemError`` or ``OSError`` it raises becomes one line on stderr
and exit code 1 (``backtest.py``); argument errors are one line and exit code 2.

The database is reached only through ``context.store_opener`` (``backtest.py`` passes the one of
``backend/app/services/research_runs.py``): ``src`` never imports ``backend``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from src.backtesting.backtester import json_safe
from src.backtesting.cli_options import (
    OneLineParser,
    add_data_options,
    output_file,
    params_json,
    positive,
    strategy_name,
    symbol_of,
)
from src.backtesting.recorded_decisions import DecisionLoader
from src.backtesting.runner import BacktestRequest
from src.config.settings import Settings
from src.domain.research_runs import ResearchKind
from src.exceptions import ConfigurationError, TradingSystemError


@dataclass(frozen=True, slots=True)
class ChosenParams:
    """What ``--apply`` (and ``POST /api/v1/research/runs/{id}/apply``) makes the bot trade: run-time settings
    ``strategy.name`` and ``strategy.params``."""

    strategy: str
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "params": dict(self.params)}


class RunStore(Protocol):
    """Where research runs are kept (a database). ``start`` records a run as running and returns its id;
    ``finish`` stores its result (done), ``fail`` its error; ``apply`` writes its chosen parameters as the bot's
    run-time settings (audited) and returns what was written."""

    @property
    def where(self) -> str: ...

    def start(self, kind: ResearchKind, request: dict[str, Any]) -> int: ...

    def finish(
        self, run_id: int, result: dict[str, Any], summary: dict[str, Any], chosen: ChosenParams | None
    ) -> None: ...

    def fail(self, run_id: int, error: str) -> None: ...

    def apply(self, run_id: int, *, by: str, reason: str) -> dict[str, Any]: ...


def ask_yes_no(question: str) -> bool:
    """``question [y/N]`` on the terminal; anything but y/yes is no. Without a terminal: no (use ``--yes``)."""
    if not sys.stdin.isatty():
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


@dataclass(slots=True)
class ResearchContext:
    """What ``backtest.py`` gives a sub-command: its name for messages, the console, the settings (loaded on first
    use), a way to the run store, and the confirmation prompt."""

    prog: str
    console: Console
    settings_loader: Callable[[], Settings]
    store_opener: Callable[[str, Settings], RunStore] | None = None
    # DATABASE_URL -> (the URL without its password, the loader of the decisions the bot recorded there)
    decisions_opener: Callable[[str], tuple[str, DecisionLoader]] | None = None
    confirm: Callable[[str], bool] = ask_yes_no
    run: tuple[RunStore, int] | None = None  # the stored run in progress (``begin``)
    unstored: str | None = None  # why the run could not be stored
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self.settings_loader()
        return self._settings

    def note(self, message: str) -> None:
        print(f"{self.prog}: {message}", file=sys.stderr)

    def begin(self, args: argparse.Namespace, kind: ResearchKind, request: dict[str, Any]) -> None:
        """Record the run as running (unless ``--no-store``), so the API lists it while it works and a run that
        fails is kept with its error. A database that cannot take it is one note when the run has finished (an error
        with ``--apply``)."""
        if getattr(args, "no_store", False) or self.run is not None or self.unstored is not None:
            return
        applying = bool(getattr(args, "apply", False))
        if self.store_opener is None:
            if applying:
                raise ConfigurationError("--apply: no run store in this context")
            return
        url = getattr(args, "database_url", None) or self.settings.database.url
        try:
            store = self.store_opener(url, self.settings)
            self.run = (store, store.start(kind, json_safe(request)))
        except TradingSystemError as exc:
            if applying:
                raise
            self.run = None
            self.unstored = exc.message  # said once the run has finished (a failing run prints its error only)

    def fail(self, error: str) -> None:
        """The run in progress ended with ``error`` (``backtest.py`` calls this for a sub-command that raised)."""
        if self.run is None:
            return
        store, run_id = self.run
        self.run = None
        try:
            store.fail(run_id, error)
        except TradingSystemError as exc:
            self.note(f"note: run {run_id} could not be marked failed ({exc.message})")


@dataclass(slots=True)
class ResearchOutcome:
    """A finished sub-command: what was asked (``request``), the JSON report (``result``), the headline numbers a
    list of runs shows (``summary``), the parameters ``--apply`` would apply, and the HTML report writer."""

    kind: ResearchKind
    request: dict[str, Any]
    result: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    chosen: ChosenParams | None = None
    html: Callable[[Path], None] | None = None


def research_parser(
    command: str,
    description: str,
    *,
    strategy_required: bool = True,
    strategy_help: str = "a bundled strategy (rule_breakout, volatility_breakout) or one from STRATEGY_PATH",
) -> OneLineParser:
    """``backtest.py COMMAND``'s parser with the shared options: candles and costs, the strategy and its
    parameters, the rules, and the outputs (``--json``, ``--html``, ``--no-store``, ``--database-url``)."""
    parser = OneLineParser(prog=f"backtest.py {command}", description=description)
    add_data_options(parser)
    parser.add_argument(
        "--strategy",
        type=strategy_name,
        required=strategy_required,
        help=strategy_help,
    )
    parser.add_argument("--params", type=params_json, help="strategy parameters as a JSON object, e.g. '{\"k\": 0.6}'")
    parser.add_argument("--capital", type=positive, help="starting KRW (default PAPER_STARTING_KRW)")
    parser.add_argument(
        "--no-risk-rules",
        action="store_true",
        help="no trade spacing, daily cap, position caps, cash reserve or circuit breakers",
    )
    parser.add_argument("--no-quick-filter", action="store_true", help="no quick filter gate before entries")
    parser.add_argument("--json", type=output_file, dest="json_out", help="write the result to this JSON file")
    parser.add_argument("--html", type=output_file, dest="html_out", help="write a self-contained HTML report")
    parser.add_argument(
        "--no-store", action="store_true", help="do not store the run in the database (stored by default)"
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="store the run in this database instead of DATABASE_URL (the project's SQLite by default)",
    )
    return parser


def add_apply_options(parser: argparse.ArgumentParser) -> None:
    """``--apply`` (make the bot trade the chosen parameters, after a confirmation) and ``--yes``."""
    parser.add_argument(
        "--apply",
        action="store_true",
        help="apply the chosen strategy and parameters to the bot as run-time settings (asks for confirmation; "
        "the run is stored first)",
    )
    parser.add_argument("--yes", action="store_true", help="with --apply: confirm without asking")


def parse_research_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the checks of options that go together (one line, exit code 2)."""
    args = parser.parse_args(argv)
    if getattr(args, "apply", False) and getattr(args, "no_store", False):
        parser.error("--apply needs the stored run (the audit names it); drop --no-store")
    return args


def backtest_request(args: argparse.Namespace, **changes: Any) -> BacktestRequest:
    """The backtest the sub-command starts from, as ``backtest.py`` would run it with the same flags (``changes``
    replace fields, e.g. ``symbol`` for one of several markets)."""
    fields: dict[str, Any] = {
        "symbol": symbol_of(args),
        "timeframe": args.timeframe,
        "data_file": args.data,
        "strategy": args.strategy,
        "strategy_params": dict(args.params or {}),
        "start": args.start,
        "end": args.end,
        "fee_rate": args.fee,
        "slippage_pct": args.slippage,
        "capital": args.capital,
        "risk_rules": not args.no_risk_rules,
        "quick_filter": not args.no_quick_filter,
        "show_trades": 0,
    }
    return BacktestRequest(**{**fields, **changes})


def request_record(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """What was asked, as the stored run and the JSON show it."""
    return json_safe(
        {
            "strategy": args.strategy,
            "params": dict(args.params or {}),
            "symbol": symbol_of(args),
            "timeframe": args.timeframe,
            "data": None if args.data is None else str(args.data),
            "start": args.start,
            "end": args.end,
            "fee": args.fee,
            "slippage": args.slippage,
            "capital": args.capital,
            "risk_rules": not args.no_risk_rules,
            "quick_filter": not args.no_quick_filter,
            **extra,
        }
    )


@contextmanager
def progress_bar(console: Console, description: str, total: float) -> Iterator[Callable[[float], None]]:
    """A progress bar with ETA on a terminal (silent otherwise); yields ``advance(done)`` (absolute)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def finish(context: ResearchContext, args: argparse.Namespace, outcome: ResearchOutcome) -> int:
    """Write the JSON and HTML reports, store the run (unless ``--no-store``; ``context.begin`` is called here if
    the sub-command did not), and with ``--apply`` apply the chosen parameters after a confirmation. Exit code 0,
    or 1 when ``--apply`` was asked and not done."""
    json_out: Path | None = getattr(args, "json_out", None)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(json_safe(outcome.result), indent=2, allow_nan=False), encoding="utf-8")
    html_out: Path | None = getattr(args, "html_out", None)
    if html_out is not None and outcome.html is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        outcome.html(html_out)
    applying = bool(getattr(args, "apply", False))
    if applying and outcome.chosen is None:
        raise ConfigurationError("--apply: this run chose no parameters to apply")
    context.begin(args, outcome.kind, outcome.request)
    if context.run is None:
        if context.unstored is not None:
            context.note(f"note: the run was not stored ({context.unstored}); --no-store skips storing")
        return 0
    store, run_id = context.run
    store.finish(run_id, json_safe(outcome.result), json_safe(outcome.summary), outcome.chosen)
    context.run = None
    context.console.print(f"Stored as research run {run_id} in {store.where} (GET /api/v1/research/runs/{run_id})")
    if not applying:
        return 0
    assert outcome.chosen is not None
    question = (
        f"Apply to the bot: strategy {outcome.chosen.strategy} with {json.dumps(outcome.chosen.params)} "
        f"(run-time settings strategy.name and strategy.params in {store.where}; the scheduler takes them "
        "before its next job)?"
    )
    if not (getattr(args, "yes", False) or context.confirm(question)):
        context.note("not applied (answer y at the prompt, or pass --yes)")
        return 1
    written = store.apply(run_id, by=f"cli:{_user()}", reason=f"research run {run_id} ({outcome.kind.value})")
    context.console.print(f"Applied research run {run_id}: {json.dumps(written)}")
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
