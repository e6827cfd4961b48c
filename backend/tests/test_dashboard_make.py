"""The newcomer path: after a replay, `make dashboard` serves the console over what it wrote, read-only on
loopback, in replay mode; without a replay it says to run `make run` first."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backend.app.db.migrations import upgrade_to_head
from src.config.env import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAKE = shutil.which("make")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _make(tmp_path: Path, database: Path, port: int) -> list[str]:
    """`make dashboard` with this interpreter's environment as the project's .venv (its stamp is fresh)."""
    stamp = tmp_path / "installed"
    stamp.touch()
    assert MAKE is not None
    return [
        MAKE,
        "--no-print-directory",
        "dashboard",
        f"BIN={Path(sys.executable).parent}",
        f"STAMP={stamp}",
        f"REPLAY_DB={database}",
        f"DASHBOARD_PORT={port}",
    ]


def _env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "TZ")
    return {name: os.environ[name] for name in keep if name in os.environ}


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_dashboard_serves_the_replay_read_only(tmp_path: Path) -> None:
    # Given a replay of three days written to its own database
    database = tmp_path / "replay.db"
    url = f"sqlite+aiosqlite:///{database}"
    upgrade_to_head(url)
    replay = subprocess.run(
        [
            sys.executable,
            "scheduler_main.py",
            "--replay",
            "--database-url",
            url,
            "--start",
            "2023-12-01",
            "--end",
            "2023-12-04",
            "--symbols",
            "KRW-BTC",
        ],
        cwd=PROJECT_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    # When `make dashboard` runs
    port = _free_port()
    log = tmp_path / "make.log"
    process = subprocess.Popen(
        _make(tmp_path, database, port),
        cwd=PROJECT_ROOT,
        env=_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # make and the API it starts: one process group, stopped together below
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(base + "/dashboard/", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "make dashboard did not answer within 30 s"
                time.sleep(0.2)
        # Then the console is there, in replay mode, and the replay's rows are readable without log-in
        assert page.status_code == 200
        assert httpx.get(base + "/dashboard/config").json() == {"mode": "replay", "public_read": True}
        trades = httpx.get(base + "/api/v1/trades", params={"mode": "replay"}).json()["items"]
        snapshots = httpx.get(base + "/api/v1/portfolio/history", params={"mode": "replay"}).json()["items"]
        assert len(trades) == 2
        assert len(snapshots) == 3 * 24  # one an hour
        # but nothing can be changed without a credential
        control = httpx.post(base + "/api/v1/bot/control", json={"action": "pause", "reason": "newcomer"})
        assert control.status_code == 401
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the API (make's child) is gone too: its port is free again
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) != 0:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"the API of make dashboard still listens on {port}")


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_dashboard_without_a_replay_says_to_run_it_first(tmp_path: Path) -> None:
    # Given no replay database, When `make dashboard` runs, Then it stops with one line naming `make run`
    result = subprocess.run(
        _make(tmp_path, tmp_path / "missing.db", _free_port()),
        cwd=PROJECT_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "does not exist yet: run `make run` first" in result.stdout
