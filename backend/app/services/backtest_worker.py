"""What a backtest worker process runs: the project's own backtest (``src.backtesting.runner.simulate``, the
path of ``backtest.py``), reporting progress and the result to the API process through a pipe.

Kept apart from the API's modules so a worker process imports the backtest, not FastAPI."""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

from src.backtesting.run_result import result_payload
from src.backtesting.runner import BacktestRequest, simulate
from src.config.settings import Settings
from src.exceptions import TradingSystemError
from src.utils.logger import redactor


def backtest_request(body: dict[str, Any]) -> BacktestRequest:
    """The ``backtest.py`` request for a stored API request (``BacktestIn.stored``): the bot's settings for
    every field the API request leaves out."""
    return BacktestRequest(
        symbol=body["symbol"],
        timeframe=body["timeframe"],
        strategy=body["strategy"],
        strategy_params=dict(body.get("params") or {}),
        start=body["start"],
        end=body["end"],
        capital=body.get("capital"),
        fee_rate=body.get("fee"),
        slippage_pct=body.get("slippage"),
        show_trades=0,
    )


def run_backtest_in_worker(connection: Connection, body: dict[str, Any], settings: Settings) -> None:
    """Messages sent: ``("progress", share, stage)`` any number of times, then one ``("done", payload)`` or
    ``("failed", reason)``."""
    try:
        done = simulate(
            backtest_request(body),
            settings,
            lambda share, stage: connection.send(("progress", share, stage)),
        )
        connection.send(("done", result_payload(done.result)))
    except TradingSystemError as exc:
        connection.send(("failed", redactor.scrub_text(exc.message)))
    except Exception as exc:  # whatever the backtest raised is the run's failure, told to its owner
        connection.send(("failed", redactor.scrub_text(f"{type(exc).__name__}: {exc}")))
    finally:
        connection.close()
