"""One self-contained, offline HTML report of a backtest, drawn by the same chart renderer as the dashboard.

The file inlines TradingView Lightweight Charts (vendored, Apache-2.0), the project's chart module
(``backend/app/dashboard/charts.js``) and the run's data in the shape of ``GET /api/v1/backtests/{id}``
(``src.backtesting.run_result``): candles on the real time axis with entries and exits and their reasons,
equity against buy-and-hold, drawdown, zoom and hover. It loads nothing from anywhere else."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.backtesting.run_result import result_payload

if TYPE_CHECKING:
    from src.backtesting.backtester import BacktestResult

# The chart files are the dashboard's (served by the API at /dashboard); the report reads them as files.
DASHBOARD = Path(__file__).resolve().parents[2] / "backend" / "app" / "dashboard"
SCRIPTS = (
    DASHBOARD / "vendor" / "lightweight-charts" / "lightweight-charts.standalone.production.js",
    DASHBOARD / "charts.js",
)
STYLES = (DASHBOARD / "charts.css",)


def inline_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>`` or comment opener can end it early."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def inline_script(path: Path) -> str:
    source = path.read_text(encoding="utf-8")
    if "</script" in source.lower():
        raise ValueError(f"{path} contains '</script' and cannot be inlined")
    return f"<script>/* {path.name} */\n{source}\n</script>"


def inline_styles() -> str:
    """The charts' stylesheet(s) as ``<style>`` elements (the dashboard links the same files)."""
    return "\n".join(f"<style>/* {path.name} */\n{path.read_text(encoding='utf-8')}</style>" for path in STYLES)


def report_document(
    title: str, part: str, data: Any, scripts: Sequence[Path], render: str, options: str | None = None
) -> str:
    """One self-contained offline HTML document: ``data`` as JSON in ``#{part}-data``, the ``scripts`` and the
    charts' stylesheet inlined, and ``render`` (a function of the element, the data and the optional ``options``, a
    JavaScript object literal, e.g. ``BacktestCharts.renderBacktest``) called on ``#{part}``."""
    extra = f", {options}" if options else ""
    inlined = "\n".join(inline_script(path) for path in scripts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:16px 24px;color:#333}}</style>
{inline_styles()}</head><body>
<h1 style="font-size:20px">{html.escape(title)}</h1>
<div id="{part}"></div>
<noscript>This report draws its charts with JavaScript; enable it to see them.</noscript>
<script type="application/json" id="{part}-data">{inline_json(data)}</script>
{inlined}
<script>
window.__report = {render}(document.getElementById("{part}"),
  JSON.parse(document.getElementById("{part}-data").textContent){extra});
</script>
</body></html>
"""


def render_html(result: BacktestResult, title: str, request: dict[str, Any] | None = None) -> str:
    """The report as one HTML document. ``request``: what was asked (shown with the result, as the API does)."""
    payload = {"status": "done", "request": request or {}, **result_payload(result)}
    return report_document(title, "backtest", payload, SCRIPTS, "BacktestCharts.renderBacktest", '{title: ""}')


def write_html_report(result: BacktestResult, path: Path, title: str, request: dict[str, Any] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result, title, request), encoding="utf-8")
