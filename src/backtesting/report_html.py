"""One self-contained, offline HTML report: price with entries/exits, equity curve, drawdown (inline SVG)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from src.backtesting.backtester import BacktestResult

WIDTH, HEIGHT, PAD = 1100, 260, 40
MAX_POINTS = 2500


def _decimate(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most MAX_POINTS points, preserving each bucket's min and max so spikes stay visible."""
    if len(x) <= MAX_POINTS:
        return x, y
    buckets = np.array_split(np.arange(len(x)), MAX_POINTS // 2)
    keep = np.unique(np.concatenate([[b[np.argmin(y[b])], b[np.argmax(y[b])]] for b in buckets if len(b)]))
    return x[keep], y[keep]


class _Scale:
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x0, self.x1 = float(x.min()), float(x.max()) if len(x) else 1.0
        finite = y[np.isfinite(y)]
        self.y0, self.y1 = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1

    def px(self, x: float) -> float:
        return PAD + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - 2 * PAD)

    def py(self, y: float) -> float:
        return HEIGHT - PAD - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - 2 * PAD)


def _polyline(scale: _Scale, x: np.ndarray, y: np.ndarray, color: str) -> str:
    xs, ys = _decimate(x, y)
    points = " ".join(f"{scale.px(a):.1f},{scale.py(b):.1f}" for a, b in zip(xs, ys, strict=True) if np.isfinite(b))
    return f'<polyline fill="none" stroke="{color}" stroke-width="1" points="{points}"/>'


def _axes(scale: _Scale, title: str, labels: tuple[str, str], fmt: str) -> str:
    return (
        f'<text x="{PAD}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>'
        f'<text x="2" y="{PAD}" font-size="10">{format(scale.y1, fmt)}</text>'
        f'<text x="2" y="{HEIGHT - PAD}" font-size="10">{format(scale.y0, fmt)}</text>'
        f'<text x="{PAD}" y="{HEIGHT - 10}" font-size="10">{html.escape(labels[0])}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 10}" font-size="10" text-anchor="end">{html.escape(labels[1])}</text>'
        f'<rect x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}" fill="none" stroke="#ccc"/>'
    )


def _svg(body: str) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}">{body}</svg>'


def render_html(result: BacktestResult, title: str) -> str:
    index = result.candles.index
    x = np.arange(len(index), dtype=np.float64)
    labels = (index[0].isoformat(), index[-1].isoformat())
    close = result.candles["close"].to_numpy(dtype=np.float64)
    equity = result.equity.to_numpy(dtype=np.float64)
    peak = np.maximum.accumulate(np.maximum(equity, result.config.initial_capital))
    dd = 100.0 * (equity / peak - 1.0)

    price_scale = _Scale(x, close)
    trades = result.trades
    marks = []
    for bar, price in zip(trades["entry_bar"], trades["entry_price"], strict=True):
        marks.append(f'<circle cx="{price_scale.px(bar):.1f}" cy="{price_scale.py(price):.1f}" r="3" fill="#1a9850"/>')
    for bar, price in zip(trades["exit_bar"], trades["exit_price"], strict=True):
        marks.append(f'<circle cx="{price_scale.px(bar):.1f}" cy="{price_scale.py(price):.1f}" r="3" fill="#d73027"/>')
    price_svg = _svg(
        _axes(price_scale, "Close price with entries (green) and exits (red)", labels, ",.0f")
        + _polyline(price_scale, x, close, "#4575b4")
        + "".join(marks)
    )
    equity_scale = _Scale(x, equity)
    equity_svg = _svg(
        _axes(equity_scale, "Equity (KRW)", labels, ",.0f") + _polyline(equity_scale, x, equity, "#313695")
    )
    dd_scale = _Scale(x, dd)
    dd_svg = _svg(_axes(dd_scale, "Drawdown (%)", labels, ".1f") + _polyline(dd_scale, x, dd, "#a50026"))

    rows = "".join(
        f"<tr><td>{html.escape(key)}</td><td>{html.escape(_cell(value))}</td></tr>"
        for key, value in result.metrics.items()
    )
    trade_rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(_cell(t[k]))}</td>"
            for k in ("entry_time", "entry_price", "exit_time", "exit_price", "pnl_pct", "exit_reason")
        )
        + "</tr>"
        for t in result.trade_records()[-50:]
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ddd;padding:2px 6px}}</style></head><body>
<h1>{html.escape(title)}</h1>
{price_svg}<br>{equity_svg}<br>{dd_svg}
<h2>Metrics</h2><table>{rows}</table>
<h2>Last trades</h2><table><tr><th>entry_time</th><th>entry_price</th><th>exit_time</th><th>exit_price</th>
<th>pnl_pct</th><th>exit_reason</th></tr>{trade_rows}</table>
</body></html>
"""


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    return "-" if value is None else str(value)


def write_html_report(result: BacktestResult, path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result, title), encoding="utf-8")
