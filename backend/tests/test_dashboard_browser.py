"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real uvicorn on loopback
serving a database that a real (short) replay wrote, on SQLite and PostgreSQL.

Chromium is ``/usr/bin/chromium`` (Debian package ``chromium``, installed by ``make system-tools``). Without it
these tests skip on a laptop and fail under ``CI=true``. Screenshots of every page go to
``test-artifacts/dashboard/`` (git-ignored)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from backend.app.db.migrations import upgrade_to_head
from backend.tests.conftest import ADMIN_PASSWORD, ADMIN_PASSWORD_HASH, API_KEY, JWT_SECRET
from src.config.env import PROJECT_ROOT
from tests.support.database import _create_database, _drop_database, _postgres_required, _server_url

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "dashboard"
# Eight replayed days of KRW-BTC with the default rule strategy: three trades (a take-profit exit among them).
REPLAY_START, REPLAY_END = "2023-12-01", "2023-12-09"

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def _require_chromium() -> None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = f"{CHROMIUM} missing (Debian package chromium: make system-tools)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_env(**overrides: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "TZ", "VIRTUAL_ENV", "PYTHONPATH")
    return {**{name: os.environ[name] for name in keep if name in os.environ}, **overrides}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def replay_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database that a real replay of REPLAY_START..REPLAY_END has written."""
    _require_chromium()
    dropped: str | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('dashboard') / 'replay.db'}"
    else:
        server = _server_url()
        name = f"test_dash_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            asyncio.run(_create_database(server, name))
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            reason = f"PostgreSQL not reachable: {exc}"
            if _postgres_required():
                pytest.fail(f"{reason} (required because CI=true or REQUIRE_POSTGRES=1)")
            pytest.skip(reason)
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        dropped = name
    upgrade_to_head(url)
    replay = subprocess.run(
        [
            sys.executable,
            "scheduler_main.py",
            "--replay",
            "--database-url",
            url,
            "--start",
            REPLAY_START,
            "--end",
            REPLAY_END,
            "--symbols",
            "KRW-BTC",
        ],
        cwd=PROJECT_ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-2000:]
    try:
        yield url
    finally:
        if dropped is not None:
            asyncio.run(_drop_database(_server_url(), dropped))


@pytest.fixture(scope="module")
def instances_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two instances (A/B) replayed over three days, each into its own SQLite database."""
    _require_chromium()
    directory = tmp_path_factory.mktemp("instances")
    path = directory / "instances.toml"
    path.write_text(
        f'data_dir = "{directory}"\n\n'
        '[[instance]]\nname = "breakout"\nstrategy = "rule_breakout"\nsymbols = ["KRW-BTC"]\n\n'
        '[[instance]]\nname = "volatility"\nstrategy = "volatility_breakout"\nparams = { k = 0.5 }\n'
        'symbols = ["KRW-BTC"]\n'
    )
    replay = subprocess.run(
        [
            sys.executable,
            "scheduler_main.py",
            "--instances",
            str(path),
            "--replay",
            "--start",
            REPLAY_START,
            "--end",
            "2023-12-04",
        ],
        cwd=PROJECT_ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-2000:]
    return path


def _serve(
    replay_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    public_read: bool,
    instances: Path | None = None,
    mode: str = "replay",
) -> Iterator[str]:
    """A real uvicorn on a loopback port over the replay's database, in replay mode."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("api") / "api.log").open("w")
    env = _clean_env(
        DATABASE_URL=replay_url,
        TRADING_MODE=mode,
        API_PUBLIC_READ=str(public_read).lower(),
        API_KEY=API_KEY,
        API_JWT_SECRET=JWT_SECRET,
        API_ADMIN_USERNAME="admin",
        API_ADMIN_PASSWORD_HASH=ADMIN_PASSWORD_HASH,
        API_RATE_LIMIT_PER_MINUTE="100000",
        **({"INSTANCES_FILE": str(instances)} if instances else {}),
    )
    command = [sys.executable, "-m", "uvicorn", "backend.app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "the API exited at start-up"
            assert time.monotonic() < deadline, "the API did not answer /health within 30 s"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def server(replay_url: str, tmp_path_factory: pytest.TempPathFactory, instances_file: Path) -> Iterator[str]:
    """Reads public (API_PUBLIC_READ=true), as `make dashboard` serves a replay; with an A/B instances file."""
    yield from _serve(replay_url, tmp_path_factory, public_read=True, instances=instances_file)


@pytest.fixture(scope="module")
def private_server(replay_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Nothing without a credential (API_PUBLIC_READ=false, the API's default)."""
    yield from _serve(replay_url, tmp_path_factory, public_read=False)


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _tab(browser: Any, base_url: str) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage: logged out) that accepts confirmations and records page errors and
    Content-Security-Policy refusals (a style or script the policy blocks is a defect, not a warning)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=base_url)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None,
    )
    tab.on("dialog", lambda dialog: dialog.accept())
    yield tab
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    yield from _tab(browser, server)


@pytest.fixture
def private_page(browser: Any, private_server: str) -> Iterator[Any]:
    yield from _tab(browser, private_server)


def _api(server: str, path: str, **params: str) -> Any:
    response = httpx.get(server + "/api/v1" + path, params=params, headers={"X-API-Key": API_KEY}, timeout=10)
    response.raise_for_status()
    return response.json()


def _open(page: Any, name: str) -> None:
    page.goto(f"/dashboard/#/{name}")
    page.wait_for_selector(f"#page[data-loaded='{name.split('?')[0]}']", state="attached", timeout=20_000)


def _shot(page: Any, replay_url: str, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    backend = make_url(replay_url).get_backend_name()
    page.screenshot(path=str(ARTIFACTS / f"{backend}-{name}.png"), full_page=True)


def _log_in_with_key(page: Any) -> None:
    page.click("#login-open")
    page.fill("#login-key", API_KEY)
    page.click("#login-submit")
    page.wait_for_selector("#logout", state="visible")


def _ws_route_exists(server: str) -> bool:
    """WebSocket routes are not in OpenAPI: probe the handshake (403 or 404 when there is no such route)."""
    try:
        response = httpx.get(
            server + "/api/v1/ws/events",
            headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
            | {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
            timeout=5,
        )
    except httpx.HTTPError:
        return True  # the server switched protocols and httpx could not follow
    return response.status_code not in (403, 404)


def test_overview_shows_the_replayed_equity_curve_and_trades(page: Any, server: str, replay_url: str) -> None:
    # Given the API over a replay's database, not logged in (public read)
    snapshots = _api(server, "/portfolio/history", mode="replay", limit="500")["items"]
    trades = _api(server, "/trades", mode="replay", limit="500")["items"]
    assert len(snapshots) == 8 * 24
    assert len(trades) == 3
    # When the dashboard opens
    _open(page, "overview")
    # Then it shows replay mode (TRADING_MODE), every snapshot on the equity curve and its drawdown below
    assert page.input_value("#mode") == "replay"
    equity_path = page.get_attribute("#equity-chart path[data-series='equity']", "d")
    assert equity_path.count("L") + 1 == len(snapshots)
    assert page.locator("#equity-chart path[data-series='drawdown']").count() == 1
    newest = snapshots[0]
    assert f"{round(float(newest['total_value_krw'])):,} KRW" in page.inner_text("[data-card='equity']")
    assert "read-only" in page.inner_text("#who")
    _shot(page, replay_url, "overview")
    # and the trades page lists the replay's trades, newest first, with the exit reason of the sell
    _open(page, "trades")
    rows = page.locator("#trades tbody tr")
    assert rows.count() == len(trades)
    [sold] = [t for t in trades if t["side"] == "sell"]
    assert sold["exit_reason"] in ("stop_loss", "take_profit", "trailing_stop")  # the real-time exits' candle path
    assert sold["exit_reason"] in page.inner_text("#trades")
    _shot(page, replay_url, "trades")


def test_market_view_marks_each_entry_and_exit_on_the_candles(page: Any, server: str, replay_url: str) -> None:
    [sold] = [t for t in _api(server, "/trades", mode="replay", limit="500")["items"] if t["side"] == "sell"]
    # When the market view of KRW-BTC opens
    _open(page, "market?symbol=KRW-BTC&timeframe=1h")
    # Then the candles are the bundled history around the trades, with one marker per trade and its reason
    assert "bundled history" in page.inner_text("#market-info")
    assert page.locator("#market-chart rect").count() > 8 * 24
    markers = page.locator("#market-chart .marker")
    assert markers.count() == 3
    assert sorted(markers.nth(i).get_attribute("data-side") for i in range(3)) == ["buy", "buy", "sell"]
    sell = page.locator("#market-chart .marker[data-side='sell']")
    assert f"exit: {sold['exit_reason']}" in sell.get_attribute("data-text")
    assert page.locator("#market-chart path[data-series='sma20']").count() == 1
    _shot(page, replay_url, "market")


def test_instances_side_by_side(page: Any, server: str, replay_url: str) -> None:
    # Given two instances replayed side by side, When the instances page opens in replay mode
    expected = _api(server, "/instances", mode="replay")["instances"]
    _open(page, "instances")
    # Then there is one column per instance, with its strategy, equity and trades as the API reports them
    headers = page.locator("#instances thead th")
    assert [headers.nth(i).inner_text() for i in range(headers.count())] == ["", "breakout", "volatility"]
    text = page.inner_text("#instances")
    for instance in expected:
        assert instance["available"], instance["reason"]
        assert instance["strategy"] in text
        assert f"{round(float(instance['equity_krw'])):,}" in text
    _shot(page, replay_url, "instances")


def test_every_page_renders(page: Any, server: str, replay_url: str) -> None:
    # When each remaining page opens, Then it renders without an error on the page, and a screenshot is kept
    for name in ("orders", "decisions", "backtests"):
        _open(page, name)
        assert not page.locator("#page p.error").count(), page.inner_text("#page")
        _shot(page, replay_url, name)
    assert page.locator("#orders").count() == 0  # left the orders page
    _open(page, "orders")
    assert page.locator("#orders tbody tr").count() == len(_api(server, "/orders", limit="500")["items"])


def test_controls_need_a_log_in(page: Any, server: str, replay_url: str) -> None:
    # Given a reader who did not log in, When they press pause
    _open(page, "control")
    assert "Read-only" in page.inner_text("#control-readonly")
    before = _api(server, "/bot/status")["desired_state"]
    page.fill("#control-reason", "trying without a key")
    page.click("#action-pause")
    # Then the API's refusal is shown and nothing changed
    page.wait_for_selector("#control-result.error")
    assert "authentication required" in page.inner_text("#control-result")
    assert _api(server, "/bot/status")["desired_state"] == before


def test_log_in_and_pause_the_bot(page: Any, server: str, replay_url: str) -> None:
    # Given an operator logged in with the API key
    _open(page, "overview")
    _log_in_with_key(page)
    assert "API key" in page.inner_text("#who")
    # When they pause the bot on the control page, with a reason, and confirm
    page.click("nav a[data-page='control']")
    page.wait_for_selector("#page[data-loaded='control'] #action-pause")
    page.fill("#control-reason", "browser test: pause")
    page.click("#action-pause")
    # Then the API stored the desired state (with who and why) and the page shows it
    page.wait_for_selector("#control-result.pos")
    assert "desired state set to paused" in page.inner_text("#control-result")
    expect(page.locator("#control-state [data-card='desired_state'] .v")).to_have_text("paused")
    assert _api(server, "/bot/status")["desired_state"] == "paused"
    # and the live-events badge says whether the stream is there (it degrades visibly when it is not)
    badge = page.locator("#live")
    if _ws_route_exists(server):
        # the API wrote the change to the events outbox; it arrives over the WebSocket without a reload
        expect(badge).to_have_text("live events: on")
        arrived = page.locator("#events li[data-type='bot_state']").first
        expect(arrived).to_contain_text("→ paused by api-key")
    else:
        expect(badge).to_contain_text("live events unavailable")
        expect(badge).to_have_class("badge off")
    _shot(page, replay_url, "control")
    # When they resume, Then the state goes back
    page.fill("#control-reason", "browser test: resume")
    page.click("#action-resume")
    expect(page.locator("#control-state [data-card='desired_state'] .v")).to_have_text("running")
    assert _api(server, "/bot/status")["desired_state"] == "running"


def test_log_in_as_a_user_and_a_wrong_key_is_refused(page: Any, server: str) -> None:
    # When a wrong API key is given, Then the log-in dialog says so and the page stays read-only
    _open(page, "overview")
    page.click("#login-open")
    page.fill("#login-key", "not-the-key")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:has-text('invalid API key')")
    # When a user logs in with name and password instead, Then they get a token (JWT) and are shown by name
    page.fill("#login-key", "")
    page.fill("#login-user", "admin")
    page.fill("#login-password", ADMIN_PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#logout", state="visible")
    assert "user admin" in page.inner_text("#who")
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('auth'))")
    assert stored["kind"] == "jwt"
    assert stored["value"].count(".") == 2


def test_a_bad_settings_value_is_rejected(page: Any, server: str, replay_url: str) -> None:
    # Given a logged-in operator on the settings form
    _open(page, "overview")
    _log_in_with_key(page)
    _open(page, "control")
    before = {entry["key"]: entry["requested"] for entry in _api(server, "/bot/config")["entries"]}
    # When they ask for 999 positions (the rule is 1..50) and confirm
    page.fill("#settings-form input[name='risk.max_positions']", "999")
    page.fill("#settings-reason", "browser test: too many")
    page.click("#settings-save")
    # Then the API's reason is shown next to the form and nothing was stored
    page.wait_for_selector("#settings-result.error")
    message = page.inner_text("#settings-result")
    assert message.startswith("rejected:")
    assert "max_positions" in message
    after = {entry["key"]: entry["requested"] for entry in _api(server, "/bot/config")["entries"]}
    assert after == before
    _shot(page, replay_url, "control-rejected")
    # When they give a valid value instead, Then it is stored as requested
    page.fill("#settings-form input[name='risk.max_positions']", "4")
    page.click("#settings-save")
    page.wait_for_selector("#settings-result.pos")
    after = {entry["key"]: entry["requested"] for entry in _api(server, "/bot/config")["entries"]}
    assert after["risk.max_positions"] == 4


def test_start_a_backtest_and_see_its_chart(page: Any, server: str, replay_url: str) -> None:
    # Given a logged-in operator on the backtests page
    _open(page, "overview")
    _log_in_with_key(page)
    _open(page, "backtests")
    # When they start a two-month backtest of the default strategy from the form
    page.fill("#backtest-form input[name='start']", "2023-10-01T00:00:00Z")
    page.fill("#backtest-form input[name='end']", "2023-12-01T00:00:00Z")
    page.click("#backtest-start")
    # Then the run is followed until done and drawn by the shared chart module (candles, equity, drawdown)
    expect(page.locator("#backtest-message")).to_contain_text(": done", timeout=60_000)
    chart = page.locator("#backtest-chart")
    expect(chart.locator("canvas").first).to_be_visible()
    # And the charts' stylesheet applies under the page's Content-Security-Policy (labels float over the panes)
    assert chart.locator(".bt-label").first.evaluate("e => getComputedStyle(e).position") == "absolute"
    run_id = page.evaluate("new URLSearchParams(location.hash.split('?')[1]).get('id')")
    run = _api(server, f"/backtests/{run_id}")
    assert run["status"] == "done"
    assert run["request"]["strategy"] == "rule_breakout"
    bundled = _api(
        server,
        "/market/candles",
        symbol="KRW-BTC",
        mode="replay",
        from_date="2023-10-01T00:00:00Z",
        to_date="2023-12-01T00:00:00Z",
        limit="2000",
    )
    assert len(run["candles"]) == len(bundled["candles"])  # the same bundled bars, gaps included
    _shot(page, replay_url, "backtest")


def test_decisions_table_filters_pages_and_exports_csv(page: Any, server: str, tmp_path: Path) -> None:
    # Given the replay's decisions (one per hourly cycle: more than one page of 50)
    every = _api(server, "/ai/decisions", limit="500")["items"]
    buys = [row for row in every if row["final_decision"] == "buy"]
    assert len(every) > 100
    assert len(buys) >= 1
    _open(page, "decisions")
    rows = page.locator("#decisions tbody tr")
    assert rows.count() == 50
    # When the next page is asked for, Then the next 50 follow (keyset paging: no row twice)
    page.click("#decisions-more")
    expect(rows).to_have_count(100)
    times = [rows.nth(i).locator("td").first.inner_text() for i in range(100)]
    assert len(set(times)) == 100
    # When filtered on final decision "buy", Then only those rows remain, each with its reason
    page.select_option("#decisions-filters select[name='final_decision']", "buy")
    page.click("#decisions-filters button[type='submit']")
    expect(rows).to_have_count(len(buys))
    assert all("entry signal" in rows.nth(i).inner_text() for i in range(len(buys)))
    # When exported, Then the CSV holds every matching row with the API's columns
    with page.expect_download() as download:
        page.click("#decisions-csv")
    saved = tmp_path / "decisions.csv"
    download.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].split(",")[:3] == ["id", "symbol", "decision"]
    assert len(lines) == 1 + len(buys)


def test_without_public_reads_the_page_asks_for_a_log_in(private_page: Any, private_server: str) -> None:
    # Given an API that serves nothing without a credential, When the dashboard opens
    page = private_page
    _open(page, "overview")
    # Then it says why it shows nothing, and draws no curve
    expect(page.locator("#banner")).to_contain_text("Log in to see this")
    assert page.locator("#equity-chart path[data-series='equity']").count() == 0
    # When the operator logs in with the API key, Then the replay's equity curve is there and the notice gone
    _log_in_with_key(page)
    page.wait_for_selector("#equity-chart path[data-series='equity']", state="attached")
    expect(page.locator("#banner")).to_be_hidden()
    if _ws_route_exists(private_server):  # the stream accepted the first-message credential
        expect(page.locator("#live")).to_have_text("live events: on")


def test_the_scheduler_obeys_a_pause_from_the_dashboard(
    browser: Any, replay_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, fake_upbit_sync: Any
) -> None:
    # Given a real paper scheduler (polling control every 0.5 s, market data from a fake Upbit) and a paper-mode
    # API on the same database (the module's, on SQLite and PostgreSQL), and an operator logged in on the page
    fake_upbit_sync.seed_demo()
    url = replay_url
    scheduler_env = _clean_env(
        DATABASE_URL=url,
        TRADING_MODE="paper",
        UPBIT_BASE_URL=fake_upbit_sync.base_url,
        SCHEDULER_CONTROL_POLL_SECONDS="0.5",
        SCHEDULER_METRICS_PORT="0",
    )
    scheduler = subprocess.Popen(
        [sys.executable, "scheduler_main.py"],
        cwd=PROJECT_ROOT,
        env=scheduler_env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "scheduler.log").open("w"),
    )
    api = _serve(url, tmp_path_factory, public_read=False, mode="paper")
    try:
        server = next(api)
        deadline = time.monotonic() + 60
        while _api(server, "/bot/status")["state"] != "running":
            assert scheduler.poll() is None, (tmp_path / "scheduler.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the scheduler did not report running within 60 s"
            time.sleep(0.2)
        tab = _tab(browser, server)
        page = next(tab)
        _open(page, "overview")
        _log_in_with_key(page)
        _open(page, "control")
        applied = page.locator("#control-state [data-card='state'] .v")
        expect(applied).to_have_text("running")
        # When they pause the bot
        page.fill("#control-reason", "browser test: the scheduler obeys")
        page.click("#action-pause")
        # Then the scheduler applies it and reports it in its heartbeat, and the page shows the applied state
        # without a reload (from the event stream, or its 5 s status poll while the stream is unavailable)
        expect(applied).to_have_text("paused", timeout=20_000)
        assert _api(server, "/bot/status")["state"] == "paused"
        with contextlib.suppress(StopIteration):
            next(tab)
    finally:
        scheduler.send_signal(signal.SIGTERM)
        try:
            scheduler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            scheduler.kill()
        with contextlib.suppress(StopIteration):
            next(api)
