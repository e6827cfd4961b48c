"""The dashboard's research page in a real browser: a run stored by ``backtest.py monte-carlo`` is listed, drawn by
``research_charts.js``, and applied to the bot only by a logged-in operator after a confirmation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import backtest
from backend.app.db.migrations import upgrade_to_head
from backend.tests.conftest import API_KEY
from backend.tests.test_dashboard_browser import (
    _log_in_with_key,
    _open,
    _require_chromium,
    _serve,
    _tab,
    expect,
    sync_api,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def research_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database holding one Monte Carlo run (stored by the real command line), served by a real uvicorn."""
    _require_chromium()
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('research') / 'research.db'}"
    upgrade_to_head(url)
    code = backtest.main(
        [
            "monte-carlo",
            "--strategy",
            "volatility_breakout",
            "--params",
            '{"k": 0.6}',
            "--start",
            "2023-01-01",
            "--end",
            "2023-03-01",
            "--no-quick-filter",
            "--runs",
            "300",
            "--seed",
            "1",
            "--database-url",
            url,
        ]
    )
    assert code == 0
    yield from _serve(url, tmp_path_factory, public_read=True, mode="paper")


@pytest.fixture(scope="module")
def research_browser(research_server: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def research_page(research_browser: Any, research_server: str) -> Iterator[Any]:
    yield from _tab(research_browser, research_server)


def _config(server: str) -> dict[str, Any]:
    answer = httpx.get(server + "/api/v1/bot/config", headers={"X-API-Key": API_KEY}, timeout=10)
    answer.raise_for_status()
    return {entry["key"]: entry for entry in answer.json()["entries"]}


def test_a_research_run_is_listed_drawn_and_applied_after_log_in_and_confirmation(
    research_page: Any, research_server: str, tmp_path: Path
) -> None:
    page = research_page
    # Given the research page
    _open(page, "research")
    rows = page.locator("#research-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("monte_carlo")
    expect(rows.first).to_contain_text("volatility_breakout")
    # When the run is opened, Then its report is drawn by the shared chart modules (the fan chart and its tables)
    page.click("#research-table a")
    expect(page.locator("#research-chart canvas").first).to_be_visible(timeout=20_000)
    expect(page.locator("#research-chart")).to_contain_text("Longest losing streak")
    expect(page.locator("#research-apply")).to_contain_text('volatility_breakout {"k":0.6')
    # And applying without a log-in is refused by the API: nothing changes
    page.click("#research-apply")
    expect(page.locator("#research-message")).to_contain_text("401")
    assert _config(research_server)["strategy.name"]["value"] is None
    # When a logged-in operator applies it (the confirmation is accepted)
    _log_in_with_key(page)
    page.click("#research-apply")
    # Then the run-time settings hold the run's choice, and the list says when and by whom it was applied
    expect(page.locator("#research-message")).to_contain_text("applied research run")
    config = _config(research_server)
    assert config["strategy.name"]["value"] == "volatility_breakout"
    assert config["strategy.params"]["value"]["k"] == 0.6
    _open(page, "research")
    expect(page.locator("#research-table tbody tr").first).to_contain_text(" by ")
