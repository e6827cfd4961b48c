"""``backtest.py --html``: one self-contained offline file, drawn by the dashboard's chart module
(``backend/app/dashboard/charts.js``) from the run's data in the API's shape."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import backtest
from src.backtesting.report_html import SCRIPTS, render_html
from src.backtesting.run_result import result_payload
from src.backtesting.runner import BacktestRequest, simulate
from src.config.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
ARGV = ["--strategy", "rule_breakout", "--start", "2023-01-01", "--end", "2023-07-01", "--trades", "0"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.tags: list[str] = []
        self.data_json: str | None = None
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        self.references += [value for name, value in attrs if name in {"src", "href", "srcset", "action"} and value]
        self._in_data = tag == "script" and found.get("id") == "backtest-data"

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data_json = data

    def handle_endtag(self, tag: str) -> None:
        self._in_data = False


def _report(tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "report.html"
    assert backtest.main([*ARGV, "--html", str(out)]) == 0
    return out, out.read_text(encoding="utf-8")


def test_the_report_is_one_offline_file_with_the_chart_code_and_the_runs_data(tmp_path: Path) -> None:
    # Given a backtest with trades, written with --html
    _out, page = _report(tmp_path)
    # Then it is one file: nothing else was written beside it
    assert [path.name for path in tmp_path.iterdir()] == ["report.html"]
    parsed = _Page()
    parsed.feed(page)
    # And it refers to nothing outside itself: no src, href, stylesheet link or import from any host
    assert parsed.references == []
    assert "link" not in parsed.tags
    assert "iframe" not in parsed.tags
    assert "img" not in parsed.tags
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page, re.IGNORECASE)
    assert "import(" not in page
    assert "fetch(" not in page
    # And it inlines the dashboard's chart module and the vendored library, byte for byte
    for script in SCRIPTS:
        assert script.read_text(encoding="utf-8") in page
    # And the data is the run's, in the shape GET /api/v1/backtests/{id} answers
    direct = simulate(
        BacktestRequest(strategy="rule_breakout", start="2023-01-01", end="2023-07-01"), load_settings(env_file=None)
    ).result
    assert parsed.data_json is not None
    data: dict[str, Any] = json.loads(parsed.data_json)
    assert {key: data[key] for key in ("metrics", "trades", "equity", "candles")} == result_payload(direct)
    assert data["request"]["symbol"] == "KRW-BTC"
    assert data["request"]["strategy"] == "rule_breakout"
    assert len(data["trades"]) == direct.metrics["trades"] > 5


def test_text_in_the_data_cannot_end_the_script_element(tmp_path: Path) -> None:
    result = simulate(
        BacktestRequest(strategy="rule_breakout", start="2023-01-01", end="2023-02-01"), load_settings(env_file=None)
    ).result
    page = render_html(result, "</script><script>alert(1)</script>", {"strategy": "</script><b>x"})
    assert page.count("<script") == page.count("</script>") == 4  # data, library, charts.js, the call
    assert "<b>x" not in page
    assert "&lt;/script&gt;" in page


def _browser() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (make system-tools installs it); CI does not skip browser tests")
        pytest.skip(f"{CHROMIUM} is not installed (make system-tools)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_the_report_draws_its_charts_offline_and_hover_shows_the_bar_and_its_trade(tmp_path: Path) -> None:
    out, page = _report(tmp_path)
    data = json.loads(_data_of(page))
    first_trade = data["trades"][0]
    with _browser() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            view = browser.new_page(viewport={"width": 1300, "height": 1000})
            problems: list[str] = []
            remote: list[str] = []
            view.on("pageerror", lambda error: problems.append(str(error)))
            view.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            view.on(
                "request", lambda request: remote.append(request.url) if not request.url.startswith("file:") else None
            )
            # When the file is opened
            view.goto(out.as_uri())
            view.wait_for_selector(".bt-legend")
            # Then three charts are drawn (price, equity vs buy-and-hold, drawdown) with no error and no request
            assert view.locator(".bt-pane").count() == 3
            assert view.locator(".bt-pane canvas").count() >= 9
            assert problems == []
            assert remote == []
            # And zooming onto the first trade's entry bar and hovering it shows the bar and the trade
            entry = first_trade["entry_candle"]
            legend = view.evaluate(
                """([entry]) => {
                    const t = Math.floor(Date.parse(entry) / 1000);
                    const chart = window.__report.charts[0];
                    chart.timeScale().setVisibleRange({from: t - 20 * 3600, to: t + 20 * 3600});
                    return true;
                }""",
                [entry],
            )
            assert legend is True
            view.wait_for_timeout(200)
            box = view.locator(".bt-pane").first.bounding_box()
            assert box is not None
            x = view.evaluate(
                "([entry]) => window.__report.charts[0].timeScale()"
                ".timeToCoordinate(Math.floor(Date.parse(entry) / 1000))",
                [entry],
            )
            view.mouse.move(box["x"] + x, box["y"] + box["height"] / 2)
            view.wait_for_timeout(200)
            text = view.inner_text(".bt-legend")
            assert entry.replace("+00:00", "Z") in text
            assert "#1 buy at" in text
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            view.screenshot(path=str(ARTIFACTS / "backtest-report.png"), full_page=True)
        finally:
            browser.close()


def _data_of(page: str) -> str:
    parsed = _Page()
    parsed.feed(page)
    assert parsed.data_json is not None
    return parsed.data_json
