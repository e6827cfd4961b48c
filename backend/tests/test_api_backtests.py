"""Backtests through the API: a run in a worker process gives what the same backtest gives directly; bad
requests are 422, a full pool 429 with Retry-After; cancel; runs a stopped API left behind are failed at start."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.repositories.backtests import BacktestRepository
from backend.app.services.backtests import owner_name
from backend.tests.conftest import API_KEY, AppFactory, app_of
from src.backtesting.report_html import SCRIPTS
from src.backtesting.run_result import result_payload
from src.backtesting.runner import BacktestRequest, simulate
from src.config.settings import load_settings
from src.domain.backtest_runs import BacktestStatus

pytestmark = pytest.mark.asyncio

BODY: dict[str, Any] = {
    "strategy": "rule_breakout",
    "params": {"volume_multiplier": 1.4},
    "symbol": "KRW-BTC",
    "timeframe": "1h",
    "start": "2023-01-01",
    "end": "2023-07-01",
    "capital": 5_000_000,
    "fee": 0.0007,
    "slippage": 0.1,
}
LONG_BODY = {**BODY, "start": "2017-10-01", "end": "2024-01-01", "params": {}}
WRITER = {"X-API-Key": API_KEY}
CHROMIUM = Path("/usr/bin/chromium")


async def _wait_for(client: httpx.AsyncClient, run_id: str, statuses: set[str], seconds: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        answer = await client.get(f"/api/v1/backtests/{run_id}")
        assert answer.status_code == 200, answer.text
        run = answer.json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {seconds} s"
        await asyncio.sleep(0.1)


async def test_a_run_through_the_api_gives_what_the_same_backtest_gives_directly(make_client: AppFactory) -> None:
    # Given the API
    client = await make_client(headers=WRITER)
    # When a backtest is started and polled until it finishes
    started = await client.post("/api/v1/backtests", json=BODY)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    assert started.headers["location"] == f"/api/v1/backtests/{run_id}"
    seen = {(await client.get(f"/api/v1/backtests/{run_id}")).json()["status"]}
    run = await _wait_for(client, run_id, {"done", "failed"})
    seen.add(run["status"])
    # Then it is done, and its metrics, trades, equity and candles are those of backtest.py's own code path
    assert run["status"] == "done", run["error"]
    assert run["progress"] == 1.0
    assert run["error"] is None
    direct = result_payload(
        simulate(
            BacktestRequest(
                symbol="KRW-BTC",
                timeframe="1h",
                strategy="rule_breakout",
                strategy_params={"volume_multiplier": 1.4},
                start="2023-01-01T00:00:00+00:00",
                end="2023-07-01T00:00:00+00:00",
                capital=5_000_000,
                fee_rate=0.0007,
                slippage_pct=0.1,
            ),
            load_settings(env_file=None),
        ).result
    )
    assert direct["metrics"]["trades"] > 5
    assert run["metrics"] == direct["metrics"]
    assert run["trades"] == direct["trades"]
    assert run["equity"] == direct["equity"]
    assert run["candles"] == direct["candles"]
    assert run["metrics"]["initial_capital"] == 5_000_000
    assert {trade["exit_reason"] for trade in run["trades"]} <= {
        "stop_loss",
        "take_profit",
        "signal",
        "end",
        "trailing_stop",
        "time_out",
    }
    assert run["request"]["start"] == "2023-01-01T00:00:00+00:00"
    assert run["requested_by"] == "api-key"
    assert seen <= {"queued", "running", "done"}
    # And the list shows it without the result's arrays
    listed = (await client.get("/api/v1/backtests")).json()
    assert [item["id"] for item in listed["items"]] == [run_id]
    assert "candles" not in listed["items"][0]
    assert listed["items"][0]["metrics"]["trades"] == direct["metrics"]["trades"]


BAD = [
    ({"strategy": "no_such_strategy"}, "strategy", "unknown strategy"),
    ({"params": {"volume_multiplier": -3}}, "params", "volume_multiplier"),
    ({"params": {"no_such_param": 1}}, "params", "no_such_param"),
    ({"strategy": "ai"}, "strategy", "backtest.py --strategy ai"),
    ({"start": "2023-07-01", "end": "2023-01-01"}, "", "before end"),
    ({"start": "yesterday"}, "start", "ISO date"),
    ({"symbol": "KRW-NOPE"}, "symbol", "no candles for KRW-NOPE"),
    ({"timeframe": "2h"}, "timeframe", ""),
    ({"capital": 0}, "capital", "greater than 0"),
    ({"capital": -5}, "capital", "greater than 0"),
    ({"fee": 0.5}, "fee", "less than 0.01"),
    ({"slippage": -1}, "slippage", "greater than or equal"),
    ({"extra_field": 1}, "extra_field", ""),
]


@pytest.mark.parametrize(("change", "field", "text"), BAD, ids=[str(change) for change, _, _ in BAD])
async def test_a_bad_request_is_422_naming_the_field_and_starts_nothing(
    make_client: AppFactory, change: dict[str, Any], field: str, text: str
) -> None:
    client = await make_client(headers=WRITER)
    # When a request with a bad field is sent
    answer = await client.post("/api/v1/backtests", json={**BODY, **change})
    # Then it is refused with a 422 that names the field and why, and no run exists
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert any(field in [str(part) for part in error["loc"]] or not field for error in detail), detail
    assert any(text in error["msg"] for error in detail), detail
    assert (await client.get("/api/v1/backtests")).json()["items"] == []


async def test_more_runs_than_the_pool_takes_get_429_with_retry_after(make_client: AppFactory) -> None:
    # Given one worker and a queue of one
    client = await make_client(headers=WRITER, BACKTEST_API_WORKERS="1", BACKTEST_API_QUEUE="1")
    # When three runs are started
    first = await client.post("/api/v1/backtests", json=LONG_BODY)
    second = await client.post("/api/v1/backtests", json=LONG_BODY)
    third = await client.post("/api/v1/backtests", json=LONG_BODY)
    # Then two are accepted and the third is told when to retry
    assert (first.status_code, second.status_code) == (202, 202)
    assert third.status_code == 429
    assert int(third.headers["retry-after"]) > 0
    assert "busy" in third.json()["detail"]
    # And the second waits for the first (one worker)
    assert (await client.get(f"/api/v1/backtests/{second.json()['id']}")).json()["status"] == "queued"
    # When the queued run is cancelled, its place is free at once
    cancelled = await client.post(f"/api/v1/backtests/{second.json()['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    await asyncio.sleep(0)
    fourth = await client.post("/api/v1/backtests", json=BODY)
    assert fourth.status_code == 202
    # And when the others are cancelled too, the pool is idle
    for answer in (first, fourth):
        cancelled = await client.post(f"/api/v1/backtests/{answer.json()['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
    await _wait_until_idle(client)
    assert (await client.get(f"/api/v1/backtests/{fourth.json()['id']}")).json()["started_at"] is None


async def _wait_until_idle(client: httpx.AsyncClient, seconds: float = 30) -> None:
    pool = app_of(client).state.backtests
    deadline = time.monotonic() + seconds
    while pool.active:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_cancel_stops_a_running_worker_and_a_queued_run_never_starts(make_client: AppFactory) -> None:
    client = await make_client(headers=WRITER, BACKTEST_API_WORKERS="1", BACKTEST_API_QUEUE="1")
    running_id = (await client.post("/api/v1/backtests", json=LONG_BODY)).json()["id"]
    queued_id = (await client.post("/api/v1/backtests", json=BODY)).json()["id"]
    await _wait_for(client, running_id, {"running"})
    process = app_of(client).state.backtests._running[int(running_id)].process
    # When the queued run and then the running one are cancelled
    assert (await client.post(f"/api/v1/backtests/{queued_id}/cancel")).json()["status"] == "cancelled"
    assert (await client.post(f"/api/v1/backtests/{running_id}/cancel")).json()["status"] == "cancelled"
    await _wait_until_idle(client)
    # Then the worker process is gone, the queued run never started, and neither has a result
    assert not process.is_alive()
    for run_id, started in ((running_id, True), (queued_id, False)):
        run = (await client.get(f"/api/v1/backtests/{run_id}")).json()
        assert run["status"] == "cancelled"
        assert run["metrics"] is None
        assert run["candles"] is None
        assert (run["started_at"] is not None) is started
    # And cancelling a finished run changes nothing; an unknown run is 404
    again = await client.post(f"/api/v1/backtests/{running_id}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    assert (await client.post("/api/v1/backtests/999999/cancel")).status_code == 404
    assert (await client.get("/api/v1/backtests/abc")).status_code == 404


async def test_runs_a_stopped_api_left_behind_are_failed_at_start_up(
    make_client: AppFactory, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given runs left queued and running by an API process that stopped (this process id: a restarted container
    # gets the same), a finished run, and runs of API processes that still work (here, or on another host)
    repository = BacktestRepository(db_sessions)
    me = owner_name()
    running = await repository.create({"strategy": "rule_breakout"}, "api-key", me)
    assert await repository.move(running, BacktestStatus.RUNNING)
    queued = await repository.create({"strategy": "rule_breakout"}, "api-key", me)
    finished = await repository.create({"strategy": "rule_breakout"}, "api-key", me)
    assert await repository.move(finished, BacktestStatus.CANCELLED)
    alive_here = await repository.create({}, "api-key", f"{socket.gethostname()}:{os.getppid()}")
    elsewhere = await repository.create({}, "api-key", "other-host:4242")
    dead_here = await repository.create({}, "api-key", f"{socket.gethostname()}:{_ended_pid()}")
    # When the API starts
    client = await make_client(headers=WRITER)
    # Then the unfinished runs of the gone processes are failed with the reason; the others are left alone
    runs = {run["id"]: run for run in (await client.get("/api/v1/backtests")).json()["items"]}
    assert runs[str(running)]["status"] == "failed"
    assert "API stopped while this run was running" in runs[str(running)]["error"]
    assert runs[str(queued)]["status"] == "failed"
    assert "was queued" in runs[str(queued)]["error"]
    assert runs[str(dead_here)]["status"] == "failed"
    assert runs[str(finished)]["status"] == "cancelled"
    assert runs[str(alive_here)]["status"] == "queued"
    assert runs[str(elsewhere)]["status"] == "queued"


def _ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_a_stopping_api_fails_its_own_unfinished_runs(make_client: AppFactory) -> None:
    client = await make_client(headers=WRITER, BACKTEST_API_WORKERS="1", BACKTEST_API_QUEUE="1")
    running_id = (await client.post("/api/v1/backtests", json=LONG_BODY)).json()["id"]
    queued_id = (await client.post("/api/v1/backtests", json=BODY)).json()["id"]
    await _wait_for(client, running_id, {"running"})
    # When the API shuts down
    await app_of(client).state.backtests.aclose()
    # Then both runs say why they did not finish
    for run_id, was in ((running_id, "running"), (queued_id, "queued")):
        run = (await client.get(f"/api/v1/backtests/{run_id}")).json()
        assert run["status"] == "failed"
        assert f"API stopped while this run was {was}" in run["error"]


async def test_starting_and_cancelling_need_credentials_reading_follows_public_read(make_client: AppFactory) -> None:
    public = await make_client(API_PUBLIC_READ="true")
    assert (await public.post("/api/v1/backtests", json=BODY)).status_code == 401
    assert (await public.post("/api/v1/backtests/1/cancel")).status_code == 401
    assert (await public.get("/api/v1/backtests")).status_code == 200
    private = await make_client(API_PUBLIC_READ="false")
    assert (await private.get("/api/v1/backtests")).status_code == 401
    assert (await private.get("/api/v1/backtests/1")).status_code == 401


async def test_the_list_pages_newest_first_with_a_cursor(
    make_client: AppFactory, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    repository = BacktestRepository(db_sessions)
    ids = [await repository.create({"strategy": f"s{n}"}, "api-key", owner_name()) for n in range(5)]
    for run_id in ids:
        await repository.move(run_id, BacktestStatus.CANCELLED)
    client = await make_client(headers=WRITER)
    first = (await client.get("/api/v1/backtests", params={"limit": 3})).json()
    second = (await client.get("/api/v1/backtests", params={"limit": 3, "cursor": first["next_cursor"]})).json()
    assert [item["id"] for item in first["items"] + second["items"]] == [str(n) for n in reversed(ids)]
    assert second["next_cursor"] is None
    assert (await client.get("/api/v1/backtests", params={"cursor": "garbage"})).status_code == 422


async def test_the_api_answers_at_once_while_a_backtest_runs(make_client: AppFactory) -> None:
    # Given a long backtest running (the whole bundled KRW-BTC hourly history)
    client = await make_client(headers=WRITER)
    run_id = (await client.post("/api/v1/backtests", json=LONG_BODY)).json()["id"]
    await _wait_for(client, run_id, {"running"})
    # When other requests come in meanwhile
    slowest = 0.0
    while (await client.get(f"/api/v1/backtests/{run_id}")).json()["status"] == "running":
        started = time.perf_counter()
        assert (await client.get("/health")).status_code == 200
        slowest = max(slowest, time.perf_counter() - started)
        await asyncio.sleep(0.02)
    # Then each is answered without waiting for the simulation (it runs in another process)
    assert slowest < 0.5
    assert (await client.get(f"/api/v1/backtests/{run_id}")).json()["status"] == "done"


CHART_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><div id="chart"></div>
<script>{library}</script><script>{charts}</script>
<script>window.__report = BacktestCharts.renderBacktest(document.getElementById("chart"), {result});</script>
</body></html>"""


async def test_the_chart_module_draws_a_run_as_the_api_answers_it(make_client: AppFactory) -> None:
    # Given a finished run, as GET /api/v1/backtests/{id} answers it
    client = await make_client(headers=WRITER)
    run_id = (await client.post("/api/v1/backtests", json=BODY)).json()["id"]
    await _wait_for(client, run_id, {"done"})
    answer = (await client.get(f"/api/v1/backtests/{run_id}")).text
    library, charts = (path.read_text(encoding="utf-8") for path in SCRIPTS)
    page = CHART_PAGE.format(library=library, charts=charts, result=answer.replace("<", "\\u003c"))
    # When the dashboard's chart module draws it in a browser
    drawn = await asyncio.to_thread(_draw, page)
    # Then three charts, the title, and every trade in the table
    run = json.loads(answer)
    assert drawn["panes"] == 3
    assert drawn["errors"] == []
    assert drawn["trade_rows"] == len(run["trades"]) > 0
    assert f"Trades ({len(run['trades'])})" in drawn["text"]
    assert "rule_breakout KRW-BTC 1h" in drawn["text"]


def _draw(page_html: str) -> dict[str, Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (make system-tools installs it); CI does not skip browser tests")
        pytest.skip(f"{CHROMIUM} is not installed (make system-tools)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.set_content(page_html)
            page.wait_for_selector(".bt-legend")
            return {
                "panes": page.locator(".bt-pane").count(),
                "trade_rows": page.locator(".bt-trades tr").count() - 1,
                "text": page.inner_text("body"),
                "errors": errors,
            }
        finally:
            browser.close()
