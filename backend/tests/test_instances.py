"""A/B: strategies side by side. Named instances (``scheduler_main.py --instances FILE``), each with its own strategy,
parameters, symbols, paper account and database; the API (``GET /api/v1/instances``) and the scheduler's metrics
(``bot_instance`` label) compare them."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import generate_latest

import scheduler_main
from backend.app.core.instances import load_instances
from backend.app.services.scheduler_metrics import InstanceMetrics, SchedulerMetrics
from backend.tests.conftest import API_KEY, AppFactory
from backend.tests.test_monitoring_config import require_tool
from src.config.env import PROJECT_ROOT
from src.config.settings import get_settings, load_settings
from src.exceptions import ConfigurationError

START, END = "2023-11-01", "2023-11-04"  # three days of the bundled KRW-BTC hourly candles


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "UPBIT_", "TRADING_", "STRATEGY_"))}
    env.update(
        {
            "TRADING_MODE": "paper",
            "SCHEDULER_METRICS_PORT": "0",
            "SCHEDULER_CONTROL_POLL_SECONDS": "0.5",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(PROJECT_ROOT),
            **extra,
        }
    )
    return env


def _instances_file(folder: Path, body: str) -> Path:
    path = folder / "instances.toml"
    path.write_text(f'data_dir = "{folder / "instances"}"\n{body}', encoding="utf-8")
    return path


TWO_STRATEGIES = """
[[instance]]
name = "breakout"
strategy = "rule_breakout"
symbols = ["KRW-BTC"]
paper_starting_krw = 10000000

[[instance]]
name = "volatility"
strategy = "volatility_breakout"
params = { k = 0.4 }
symbols = ["KRW-BTC"]
paper_starting_krw = 5000000
"""


def _rows(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as connection:
        return list(connection.execute(query).fetchall())


@pytest.fixture(scope="module")
def ab_replay(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Two instances replayed through the real ``scheduler_main.py --instances FILE --replay`` over three days."""
    folder = tmp_path_factory.mktemp("ab")
    path = _instances_file(folder, TWO_STRATEGIES)
    command = [sys.executable, "scheduler_main.py", "--instances", str(path), "--replay"]
    command += ["--start", START, "--end", END]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    return path, done


@pytest.mark.integration
def test_a_replay_of_two_instances_writes_each_into_its_own_database_and_compares_them(
    ab_replay: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    # Given an instances file with rule_breakout and volatility_breakout, each with its own starting KRW
    path, done = ab_replay
    # When scheduler_main.py --instances FILE --replay ran (the fixture)
    assert done.returncode == 0, done.stderr
    folder = path.parent / "instances" / "replay"
    # Then each instance wrote its own database: its own paper account from its own starting KRW, its own rows
    for name, starting in (("breakout", 10_000_000), ("volatility", 5_000_000)):
        db = folder / f"{name}.db"
        assert db.is_file()
        snapshots = _rows(db, "SELECT total_value_krw FROM portfolio_snapshots ORDER BY created_at")
        assert snapshots, name
        assert abs(Decimal(str(snapshots[0][0])) - starting) < starting * Decimal("0.05")
        cycles = _rows(db, "SELECT COUNT(*) FROM trading_cycles")[0][0]
        assert cycles == 3 * 24  # one cycle an hour over the same window
        order_ids = {row[0] for row in _rows(db, "SELECT identifier FROM orders")}
        other = "volatility" if name == "breakout" else "breakout"
        other_ids = {row[0] for row in _rows(folder / f"{other}.db", "SELECT identifier FROM orders")}
        assert not order_ids & other_ids
    # And the comparison table names both instances, their strategies, parameters and the one window
    table = done.stdout
    assert "A/B replay 2023-11-01 00:00 -> 2023-11-04 00:00 UTC" in table
    for text in ("breakout", "rule_breakout", "volatility_breakout", "k=0.4", "5,0", "10,0", "max drawdown"):
        assert text in table, text


@pytest.mark.integration
async def test_the_api_compares_the_instances_from_their_databases(
    ab_replay: tuple[Path, subprocess.CompletedProcess[str]], make_client: AppFactory
) -> None:
    # Given the databases of an A/B replay, and the API pointed at the instances file
    path, done = ab_replay
    assert done.returncode == 0, done.stderr
    client: httpx.AsyncClient = await make_client(headers={"X-API-Key": API_KEY}, INSTANCES_FILE=str(path))
    # When the comparison of the replay is asked for
    response = await client.get("/api/v1/instances", params={"mode": "replay"})
    # Then each instance is reported from its own database: strategy, params, equity, return, drawdown, trades
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file"] == str(path)
    assert body["error"] is None
    by_name = {item["name"]: item for item in body["instances"]}
    assert list(by_name) == ["breakout", "volatility"]
    assert by_name["breakout"]["strategy"] == "rule_breakout"
    assert by_name["volatility"]["strategy"] == "volatility_breakout"
    assert by_name["volatility"]["params"] == {"k": 0.4}
    for name, starting in (("breakout", "10000000"), ("volatility", "5000000")):
        item = by_name[name]
        assert item["available"] is True, item["reason"]
        db = path.parent / "instances" / "replay" / f"{name}.db"
        [(last,)] = _rows(db, "SELECT total_value_krw FROM portfolio_snapshots ORDER BY created_at DESC LIMIT 1")
        assert Decimal(item["equity_krw"]) == Decimal(str(last))
        assert Decimal(item["starting_krw"]) == Decimal(starting)
        expected_return = ((Decimal(str(last)) / Decimal(starting) - 1) * 100).quantize(Decimal("0.01"))
        assert Decimal(item["return_pct"]) == expected_return
        assert Decimal(item["max_drawdown_pct"]) >= 0
        assert item["trades"] == _rows(db, "SELECT COUNT(*) FROM trades")[0][0]
        assert item["trades"] == item["buys"] + item["sells"]
    # And the paper accounts, which never ran, are reported unavailable (not created, not an error)
    paper = (await client.get("/api/v1/instances")).json()
    assert [item["available"] for item in paper["instances"]] == [False, False]
    assert "has not run" in paper["instances"][0]["reason"]
    assert not (path.parent / "instances" / "breakout.db").exists()


async def test_a_broken_instance_database_is_unavailable_never_a_500(tmp_path: Path, make_client: AppFactory) -> None:
    # Given one instance whose database is not a database, and one whose database was never migrated
    path = _instances_file(tmp_path, TWO_STRATEGIES)
    (tmp_path / "instances").mkdir()
    (tmp_path / "instances" / "breakout.db").write_bytes(b"this is not sqlite" * 100)
    sqlite3.connect(tmp_path / "instances" / "volatility.db").close()
    client: httpx.AsyncClient = await make_client(headers={"X-API-Key": API_KEY}, INSTANCES_FILE=str(path))
    # When the comparison is asked for
    response = await client.get("/api/v1/instances")
    # Then both are reported unavailable with the reason, in a 200
    assert response.status_code == 200
    items = response.json()["instances"]
    assert [item["available"] for item in items] == [False, False]
    assert "DatabaseError" in items[0]["reason"] or "not a database" in items[0]["reason"]
    assert "migrat" in items[1]["reason"]


async def test_the_api_says_why_the_instances_file_cannot_be_used(tmp_path: Path, make_client: AppFactory) -> None:
    # Given no INSTANCES_FILE, then a file with a bad parameter
    client: httpx.AsyncClient = await make_client(headers={"X-API-Key": API_KEY})
    assert (await client.get("/api/v1/instances")).json() == {"file": None, "error": None, "instances": []}
    path = _instances_file(tmp_path, '[[instance]]\nname = "a"\nstrategy = "volatility_breakout"\nparams = {k = 99}\n')
    client = await make_client(headers={"X-API-Key": API_KEY}, INSTANCES_FILE=str(path))
    # When the comparison is asked for
    body = (await client.get("/api/v1/instances")).json()
    # Then the answer names the instance and the key, and lists nothing
    assert body["instances"] == []
    assert "instance 'a'" in body["error"]
    assert "parameter k must be in" in body["error"]
    # And without a key the route is refused like every other
    anonymous: httpx.AsyncClient = await make_client(INSTANCES_FILE=str(path))
    assert (await anonymous.get("/api/v1/instances")).status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "no instances"),
        ("[[instance]]\nname = 'Bad Name'\n", "name 'Bad Name'"),
        ("[[instance]]\nname = 'a'\n[[instance]]\nname = 'a'\n", "instance 'a': the name is used twice"),
        ("[[instance]]\nname = 'a'\nstrategy = 'nope'\n", "instance 'a': TRADING_STRATEGY/STRATEGY_PARAMS: unknown"),
        ("[[instance]]\nname = 'a'\nstrategy = 'volatility_breakout'\nparams = {k = 9}\n", "instance 'a': TRADING_"),
        ("[[instance]]\nname = 'a'\nsymbols = ['BTC']\n", "instance 'a': TRADING_SYMBOLS"),
        ("[[instance]]\nname = 'a'\npaper_starting_krw = -5\n", "instance 'a': PAPER_STARTING_KRW"),
        ("[[instance]]\nname = 'a'\nsettings = { MAX_POSITIONS = 0 }\n", "instance 'a': MAX_POSITIONS"),
        ("[[instance]]\nname = 'a'\nsettings = { TYPO_KEY = 1 }\n", "instance 'a': TYPO_KEY: not a setting"),
        ("[[instance]]\nname = 'a'\nsettings = { TRADING_MODE = 'live' }\n", "instance 'a': settings.TRADING_MODE"),
        ("[[instance]]\nname = 'a'\ncolour = 1\n", "instance 'a': unknown key 'colour'"),
        (
            "[[instance]]\nname = 'a'\ndatabase_url = 'sqlite+aiosqlite:///x.db'\n"
            "[[instance]]\nname = 'b'\ndatabase_url = 'sqlite+aiosqlite:///x.db'\n",
            "instance 'b': database_url is also instance 'a''s",
        ),
        ("[[instance]\n", "not valid TOML"),
    ],
)
def test_a_bad_instances_file_is_one_clear_line_at_start_up(
    body: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an instances file with one mistake
    path = tmp_path / "instances.toml"
    path.write_text(body, encoding="utf-8")
    monkeypatch.setenv("TRADING_MODE", "paper")
    get_settings.cache_clear()
    try:
        # When the scheduler starts with it
        code = scheduler_main.main(["--instances", str(path), "--replay"])
    finally:
        get_settings.cache_clear()
    # Then it refuses with exit code 2 and one line naming the problem (the instance and the key)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_missing_file_and_json_format(tmp_path: Path) -> None:
    settings = load_settings(env_file=None)
    with pytest.raises(ConfigurationError, match="not found"):
        load_instances(tmp_path / "missing.toml", settings)
    # a JSON instances file is read like the TOML one
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"instance": [{"name": "a", "strategy": "volatility_breakout", "params": {"k": 1}}]}))
    [instance] = load_instances(path, settings).instances
    assert (instance.strategy, instance.params, instance.settings.scheduler.instance_name) == (
        "volatility_breakout",
        {"k": 1},
        "a",
    )
    assert instance.database_url.endswith("data/instances/a.db")


def test_every_sample_of_every_instance_carries_its_bot_instance_label() -> None:
    # Given two instances' metrics, each after its own portfolio snapshots and a trade
    a, b = SchedulerMetrics(), SchedulerMetrics()
    a.seed_equity_curve([Decimal("100"), Decimal("120")])
    a.on_portfolio(Decimal("90"), Decimal("-0.1"))
    b.on_portfolio(Decimal("200"), Decimal("0.05"))
    b.job_success.labels(job="trading_cycle").inc()
    # When the process's endpoint collects them
    text = generate_latest(InstanceMetrics({"a": a, "b": b}).registry).decode()
    # Then equity, return and drawdown are there once per instance, told apart by bot_instance
    assert 'portfolio_value_krw{bot_instance="a"} 90.0' in text
    assert 'portfolio_value_krw{bot_instance="b"} 200.0' in text
    assert 'portfolio_profit_rate{bot_instance="a"} -0.1' in text
    assert 'portfolio_drawdown_pct{bot_instance="a"} 25.0' in text  # 120 -> 90
    assert 'portfolio_max_drawdown_pct{bot_instance="b"} 0.0' in text
    assert 'scheduler_job_success_total{bot_instance="b",job="trading_cycle"} 1.0' in text
    assert text.count("# TYPE portfolio_value_krw gauge") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (OSError, sqlite3.Error):
            pass
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def _state(db: Path, name: str) -> str | None:
    rows = _rows(db, f"SELECT state FROM bot_state WHERE instance_name = '{name}'")
    return str(rows[0][0]) if rows else None


@pytest.mark.integration
def test_instances_run_side_by_side_each_with_its_own_lock_heartbeat_and_metrics(tmp_path: Path) -> None:
    # Given an instances file of two paper instances
    path = _instances_file(tmp_path, TWO_STRATEGIES)
    port = _free_port()
    command = [sys.executable, "scheduler_main.py", "--instances", str(path)]
    env = _env(SCHEDULER_METRICS_PORT=str(port))
    # When one process runs them
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dbs = {name: tmp_path / "instances" / f"{name}.db" for name in ("breakout", "volatility")}
    try:
        _wait_for(lambda: all(_state(db, name) == "running" for name, db in dbs.items()))
        # Then each instance's database holds its own heartbeat and its own single-trader lock
        for db in dbs.values():
            assert _rows(db, "SELECT name FROM scheduler_locks") == [("trading:paper",)]
        # And the metrics endpoint labels each instance's equity
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'portfolio_max_drawdown_pct{bot_instance="breakout"}' in text
        assert 'scheduler_lock_held{bot_instance="volatility"} 1.0' in text
        # And a second process on the same instances finds their locks held and stops (exit code 3)
        second = subprocess.run(command, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert "another scheduler holds the lock" in second.stderr
        assert all(_state(db, name) == "running" for name, db in dbs.items())
        # When SIGTERM arrives, every instance stops cleanly and frees its lock
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
    # And every instance's log lines say which instance they are about
    started = [json.loads(line) for line in err.decode().splitlines() if '"scheduler.started"' in line]
    assert sorted(line["bot_instance"] for line in started) == ["breakout", "volatility"]
    for name, db in dbs.items():
        assert _state(db, name) == "stopped"
        assert _rows(db, "SELECT COUNT(*) FROM scheduler_locks") == [(0,)]


def _mount(volume: str | dict[str, str]) -> tuple[str, str]:
    """(target, source) of a volume in docker-compose's short ("src:dst:mode") or long syntax."""
    if isinstance(volume, str):
        source, target = volume.split(":")[:2]
        return target, source
    return volume["target"], volume.get("source", "")


@pytest.mark.integration
def test_the_full_stack_runs_the_example_instances_with_the_ab_override(tmp_path: Path) -> None:
    # Given the full stack with the A/B override and an .env from .env.example with the secrets
    require_tool("docker-compose")
    env_file = tmp_path / "compose.env"
    secrets = "POSTGRES_PASSWORD=pw-test-1234\nGRAFANA_ADMIN_PASSWORD=gf-test-1234\nAPI_KEY=k-test-12345678\n"
    env_file.write_text((PROJECT_ROOT / ".env.example").read_text() + "\n" + secrets)
    files = ["-f", "docker-compose.full-stack.yml", "-f", "docker-compose.ab.yml"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ENV_FILE": str(env_file), "HOME": str(tmp_path)}
    # When docker-compose resolves them
    result = subprocess.run(
        ["docker-compose", *files, "--env-file", str(env_file), "config"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then the scheduler runs the instances file and the API compares the same instances from the same volume
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["scheduler"]["command"] == ["python", "scheduler_main.py", "--instances", "/app/instances.toml"]
    for name in ("scheduler", "api"):
        assert services[name]["environment"]["INSTANCES_FILE"] == "/app/instances.toml"
        mounts = dict(_mount(volume) for volume in services[name]["volumes"])
        assert Path(mounts["/app/instances.toml"]) == PROJECT_ROOT / "instances.example.toml"
        assert mounts["/app/data"] == "ab-data"
    # And the example file it mounts is a valid instances file of two strategies
    file = load_instances(PROJECT_ROOT / "instances.example.toml", load_settings(env_file=None))
    assert [(i.name, i.strategy) for i in file.instances] == [
        ("breakout", "rule_breakout"),
        ("volatility", "volatility_breakout"),
    ]


def test_an_instance_is_the_base_settings_with_its_own_keys_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given base settings from the environment (a live mode and non-default limits)
    monkeypatch.setenv("TRADING_MODE", "live")
    monkeypatch.setenv("MAX_POSITIONS", "2")
    monkeypatch.setenv("MAX_TRADES_PER_DAY", "7")
    base = load_settings(env_file=None)
    body = "[[instance]]\nname = 'a'\nsymbols = ['KRW-ETH', 'KRW-XRP']\nsettings = { MAX_TRADES_PER_DAY = 3 }\n"
    # When an instance replaces some keys
    [instance] = load_instances(_instances_file(tmp_path, body), base).instances
    # Then those keys are its own, every other key is the base's, and it trades its own paper account
    assert instance.symbols == ["KRW-ETH", "KRW-XRP"]
    assert instance.settings.risk.max_trades_per_day == 3
    assert instance.settings.risk.max_positions == 2
    assert instance.settings.trading.mode.value == "paper"
    assert instance.settings.scheduler.instance_name == "a"
    assert instance.database_url == f"sqlite+aiosqlite:///{tmp_path / 'instances' / 'a.db'}"
    assert instance.replay_database_url == f"sqlite+aiosqlite:///{tmp_path / 'instances' / 'replay' / 'a.db'}"
    assert base.risk.max_trades_per_day == 7  # the base is untouched


@pytest.mark.parametrize("flag", [["--symbols", "KRW-ETH"], ["--database-url", "sqlite+aiosqlite:///x.db"]])
def test_flags_the_instances_file_owns_are_refused(
    flag: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _instances_file(tmp_path, TWO_STRATEGIES)
    get_settings.cache_clear()
    try:
        code = scheduler_main.main(["--instances", str(path), "--replay", *flag])
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert f"{flag[0]} does not apply with --instances" in capsys.readouterr().err


def test_an_instance_whose_database_cannot_be_reached_stops_the_start_with_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a second instance on a PostgreSQL server that does not answer
    body = TWO_STRATEGIES.replace(
        'name = "volatility"', 'name = "volatility"\ndatabase_url = "postgresql+asyncpg://u:p@127.0.0.1:9/none"'
    )
    path = _instances_file(tmp_path, body)
    get_settings.cache_clear()
    try:
        # When the instances start
        code = scheduler_main.main(["--instances", str(path)])
    finally:
        get_settings.cache_clear()
    # Then the process stops with exit code 1 and one line naming that instance (the password is not shown)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1
    assert len(errors) == 1
    assert errors[0].startswith("error: instance 'volatility': ")
    assert ":p@" not in err
    assert "Traceback" not in err
