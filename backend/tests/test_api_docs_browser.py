"""``/docs`` and ``/redoc`` in a real browser with every other host unreachable: both pages draw the API."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def api_url(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    database = tmp_path / "api.db"
    shutil.copyfile(sqlite_template, database)
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "API_PUBLIC_READ": "true",
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
    }
    log = (tmp_path / "api.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "backend.app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (make system-tools installs it); CI does not skip browser tests")
        pytest.skip(f"{CHROMIUM} is not installed (make system-tools)")


@pytest.mark.parametrize(
    ("path", "drawn"),
    [("/docs", ".swagger-ui .opblock-tag-section"), ("/redoc", "[data-section-id^='tag/backtests']")],
)
def test_the_documentation_page_draws_with_every_other_host_unreachable(api_url: str, path: str, drawn: str) -> None:
    _require_chromium()
    from playwright.sync_api import Route, sync_playwright

    elsewhere: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(api_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            refused: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console",
                lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None,
            )
            page.route("**/*", only_this_server)
            # When the page is opened with nothing but this server reachable
            page.goto(api_url + path)
            # Then it draws the API's operations (the backtests among them) and asked no other host for anything
            page.wait_for_selector(drawn, timeout=30_000)
            assert "backtests" in page.inner_text("body").lower()
            assert elsewhere == []
            assert errors == []
            # And the only thing the page's policy refused is a remote load (ReDoc's vendor logo), nothing it needs
            assert all("https://" in text for text in refused), refused
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"api{path.replace('/', '-')}.png"))
        finally:
            browser.close()
