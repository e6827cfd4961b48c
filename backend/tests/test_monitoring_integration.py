"""A real Prometheus scrapes a running API and a scheduler in replay mode; every dashboard query returns data.

Processes on loopback (ephemeral ports): the scheduler (``scheduler_main.py --replay`` at a paced speed,
``SCHEDULER_METRICS_PORT`` set, AI through the fake OpenAI server), the API (``uvicorn
backend.app.main:app``) on the same SQLite database, and Debian's ``prometheus`` with
``monitoring/prometheus.yml`` (targets rewritten to loopback, 1 s scrapes) and ``monitoring/alerts.yml``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from backend.app.db.migrations import upgrade_to_head
from backend.app.db.session import create_engine, session_factory
from backend.tests.test_monitoring_config import MONITORING, SPEC_METRICS, dashboards, require_tool
from backend.tests.test_telegram_commands import seed_trading_history
from tests.fakes.openai_server import Behaviour, FakeOpenAI

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Grafana's variables as the test substitutes them: windows of several 1-second scrapes.
# The mode variable picks one mode in Grafana; here both the seeded paper trades and the replay's equity match.
VARIABLES = {
    "$__rate_interval": "20s",
    "$__interval": "1s",
    "$__range": "1m",
    "$mode": "paper|replay",
    "$instance": ".*",
    "$symbol": ".*",
}
# 2 h simulated per second; rule_breakout has an entry on 2023-10-05 14:00 that passes the quick filter
REPLAY = ["--replay", "--start", "2023-10-05", "--end", "2023-10-15", "--speed", "7200"]
STARTUP_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(
    url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = STARTUP_SECONDS, hint: str = ""
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args!r} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {seconds} s. {hint}\n{log.read_text()[-3000:]}")


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process, log

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def _project_ai_cache() -> tuple[bool, int]:
    path = ROOT / "backtest_data" / "ai_cache" / "decisions.jsonl"
    return (True, path.stat().st_size) if path.exists() else (False, 0)


def _prometheus_config(tmp_path: Path, ports: dict[str, int]) -> Path:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]["result"]


def _dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for name, dashboard in dashboards().items():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["uid"] == "prometheus":
                    expr = target["expr"]
                    for variable, value in VARIABLES.items():
                        expr = expr.replace(variable, value)
                    found.append((f"{name} / {panel['title']} [{target['refId']}]", expr))
    return found


async def _seed_paper_history(database_url: str) -> None:
    """Paper-mode trades beside the replay's own rows, so the trade panels have data whatever the replay
    decides in its first seconds (the replay's risk rules only look at replay-mode rows)."""
    engine = create_engine(database_url)
    try:
        await seed_trading_history(session_factory(engine))
    finally:
        await engine.dispose()


def test_every_dashboard_query_returns_data_from_a_real_scrape(tmp_path: Path, processes: Processes) -> None:
    prometheus_bin = require_tool("prometheus")
    ai_cache_before = _project_ai_cache()
    ports = {"api": _free_port(), "scheduler": _free_port(), "prometheus": _free_port()}
    database = tmp_path / "replay.db"
    database_url = f"sqlite+aiosqlite:///{database}"
    upgrade_to_head(database_url)
    asyncio.run(_seed_paper_history(database_url))
    # The bundled candles, linked into a private folder: the replay keeps its AI answer cache under
    # BACKTEST_DATA_DIR/ai_cache, and the fake's answers must never land in the project's real cache.
    data_dir = tmp_path / "backtest_data"
    data_dir.mkdir()
    for folder in ("daily", "hourly", "minute"):
        (data_dir / folder).symlink_to(ROOT / "backtest_data" / folder, target_is_directory=True)
    base_env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "LOG_FORMAT": "json",
        "BACKTEST_DATA_DIR": str(data_dir),
    }

    with FakeOpenAI() as openai:
        openai.script(
            Behaviour.server_error(),  # one failed AI request: a fallback decision and an ai_request_errors sample
            *[Behaviour.ok("buy", 85, "breakout with volume"), Behaviour.ok("sell", 80, "take profit")] * 30,
        )
        # Given the scheduler replaying history (AI answers from the fake) and serving its metrics
        scheduler_env = {
            **base_env,
            "SCHEDULER_METRICS_PORT": str(ports["scheduler"]),
            "OPENAI_API_KEY": openai.api_key,
            "OPENAI_BASE_URL": openai.base_url,
            "OPENAI_MAX_RETRIES": "0",
            "TRADING_STRATEGY": "ai",  # the adviser confirms rule_breakout's entries
        }
        scheduler, scheduler_log = processes.start(
            "scheduler",
            [str(BIN / "python"), "scheduler_main.py", *REPLAY, "--database-url", database_url],
            scheduler_env,
        )
        _wait_for(
            f"http://127.0.0.1:{ports['scheduler']}/metrics",
            scheduler,
            scheduler_log,
            seconds=30,
            hint="scheduler_main.py --replay must serve its metrics on SCHEDULER_METRICS_PORT while it runs",
        )
        # And the API on the same database
        api_env = {
            **base_env,
            "DATABASE_URL": database_url,
            "TRADING_MODE": "replay",
            "SCHEDULER_INSTANCE_NAME": "replay",
            "API_PUBLIC_READ": "true",
        }
        api, api_log = processes.start(
            "api",
            [str(BIN / "uvicorn"), "backend.app.main:app", "--host", "127.0.0.1", "--port", str(ports["api"])],
            api_env,
        )
        api_url = f"http://127.0.0.1:{ports['api']}"
        _wait_for(f"{api_url}/health", api, api_log)
        # And Prometheus scraping both with the project's config and alert rules
        config = _prometheus_config(tmp_path, ports)
        prometheus_args = [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            "--log.level=warn",
        ]
        prom, prom_log = processes.start("prometheus", prometheus_args, base_env)
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        _wait_for(f"{prometheus}/-/ready", prom, prom_log)

        # When the API serves some traffic and several scrapes have happened
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=api_url, timeout=5) as client:
            while time.monotonic() < deadline:
                for path in ("/health", "/api/v1/trades", "/api/v1/bot/status", "/api/v1/portfolio", "/missing"):
                    client.get(path)
                up = _query(prometheus, 'min(up{job=~"api|scheduler"}) and count(up{job=~"api|scheduler"}) == 2')
                samples = _query(prometheus, 'count_over_time(bot_running{job="scheduler"}[1m])')
                if up and samples and float(samples[0]["value"][1]) >= 8:
                    break
                time.sleep(0.5)
        assert scheduler.poll() is None, "the replay ended before the queries; lower its --speed"

        # Then every PromQL expression of every dashboard returns data
        empty = [where for where, expr in _dashboard_queries() if not _query(prometheus, expr)]
        assert empty == [], f"dashboard queries without data: {empty}"
        assert _project_ai_cache() == ai_cache_before, "the replay wrote into the project's AI cache"
        # And every metric of the spec was scraped: with samples, or (a labelled counter nothing has
        # incremented yet, e.g. job failures in a clean replay) at least its HELP/TYPE metadata
        names = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])
        metadata = set(httpx.get(f"{prometheus}/api/v1/metadata", timeout=10).json()["data"])
        scraped = names | metadata | {f"{name}_total" for name in metadata}
        assert [metric for metric in SPEC_METRICS if not scraped & {metric, f"{metric}_bucket"}] == []
        without_samples = sorted(metric for metric in SPEC_METRICS if not names & {metric, f"{metric}_bucket"})
        print(f"spec metrics scraped without samples yet: {without_samples}")
        # And the alert rules load and evaluate without errors
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) >= 8
        assert [rule["name"] for rule in rules if rule["health"] != "ok"] == []
