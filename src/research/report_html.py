"""The research report: one self-contained, offline HTML file for ``backtest.py optimize | monte-carlo |
ai-value --html OUT``, drawn by the dashboard's chart module (``backend/app/dashboard/charts.js``, with
``ResearchCharts`` from ``research_charts.js`` on top of it), inlined as ``backtest.py --html`` does.

``render_research(report, title)`` takes the sub-command's JSON (the same the API serves as a research run's
``result``) and draws what it holds: a Monte Carlo fan chart and its percentiles (``monte_carlo``), the AI-value
comparison (``variants``, ``differences``, ``regimes``), and for a search the fold table (``folds``), the stitched
out-of-sample equity (``stitched_equity``: ``[[iso, equity], ...]``) and a parameter heat map (``heatmap``: see
``heatmap_payload``). S15-SEARCH's ``optimize`` calls ``write_research_report`` with those keys."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.backtesting.backtester import json_safe
from src.backtesting.report_html import DASHBOARD, SCRIPTS, report_document

RESEARCH_SCRIPTS = (*SCRIPTS, DASHBOARD / "research_charts.js")


def heatmap_payload(
    x_name: str, x_values: Sequence[Any], y_name: str, y_values: Sequence[Any], values: Any, metric: str
) -> dict[str, Any]:
    """A parameter heat map as the report draws it: ``values[i][j]`` is ``metric`` at ``y_values[i]`` and
    ``x_values[j]`` (None where not evaluated)."""
    rows = [[None if v is None else float(v) for v in row] for row in values]
    if len(rows) != len(y_values) or any(len(row) != len(x_values) for row in rows):
        raise ValueError("the heat map needs one row per y value and one column per x value")
    return json_safe(
        {
            "x": {"name": x_name, "values": list(x_values)},
            "y": {"name": y_name, "values": list(y_values)},
            "metric": metric,
            "values": rows,
        }
    )


def fold_rows(folds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fold table's rows: ``train``/``test`` windows (``{"start", "end"}`` or ``[start, end]``), ``params``,
    ``train_metrics`` and ``test_metrics``, passed through as JSON."""
    return json_safe([dict(fold) for fold in folds])


def render_research(report: dict[str, Any], title: str) -> str:
    return report_document(title, "research", json_safe(report), RESEARCH_SCRIPTS, "ResearchCharts.renderResearch")


def write_research_report(path: Path, report: dict[str, Any], title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_research(report, title), encoding="utf-8")
