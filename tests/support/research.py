"""Evaluators for the distributed research tests: module-level, so Ray workers import them by name.

With ``RESEARCH_TEST_EVALUATION_LOG`` naming a file, every evaluation appends one line (the batch's tag and the
process id), so a test counts what was evaluated across processes and runs; ``RESEARCH_TEST_BATCH_DELAY`` slows
each batch down (seconds) so a test can kill a run in the middle.
"""

from __future__ import annotations

import os
import time
from typing import Any

from src.research.distributed import Batch, BatchResult
from src.research.search import evaluate_job

LOG_ENV = "RESEARCH_TEST_EVALUATION_LOG"
DELAY_ENV = "RESEARCH_TEST_BATCH_DELAY"


def _record(batch: Batch) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{batch.tag}\t{os.getpid()}\n")
            handle.flush()
            os.fsync(handle.fileno())
    delay = float(os.environ.get(DELAY_ENV) or 0)
    if delay:
        time.sleep(delay)


def evaluate(data: Any, batch: Batch) -> BatchResult:
    """The research evaluation (``src.research.search.evaluate_job``: ``evaluate_batch`` on the batch's window),
    counted."""
    _record(batch)
    return evaluate_job(data, batch)


def evaluations(path: str | os.PathLike[str]) -> list[str]:
    """The tags evaluated so far, in order (one per evaluation)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.split("\t")[0] for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def fails(data: Any, batch: Batch) -> BatchResult:
    raise ValueError(f"bad batch {batch.tag}")
