"""Dockerfile and the Compose files: valid for docker-compose, safe by default, and every command they run works.

No Docker engine runs here, so the files are validated with Debian's ``docker-compose config`` and the
commands of the app services are run directly in the test environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.tests.test_monitoring_config import require_tool

ROOT = Path(__file__).resolve().parents[2]
FULL_STACK = ROOT / "docker-compose.full-stack.yml"
SCHEDULER_ONLY = ROOT / "docker-compose.yml"
APP_IMAGE = "ai-trader:latest"
SECRETS = {"POSTGRES_PASSWORD": "pw-test-1234", "GRAFANA_ADMIN_PASSWORD": "gf-test-1234", "API_KEY": "k-test-12345678"}


def _env_file(tmp_path: Path, overrides: dict[str, str]) -> Path:
    """``.env.example`` with the given values appended (later lines win)."""
    path = tmp_path / "compose.env"
    lines = [(ROOT / ".env.example").read_text()] + [f"{key}={value}" for key, value in overrides.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _compose_config(compose: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    require_tool("docker-compose")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ENV_FILE": str(env_file), "HOME": str(env_file.parent)}
    return subprocess.run(
        ["docker-compose", "-f", str(compose), "--env-file", str(env_file), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


_RESOLVED: dict[Path, dict[str, dict[str, Any]]] = {}


def _services(compose: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The services as docker-compose resolves them (once per file and test session: the tool is slow)."""
    if compose not in _RESOLVED:
        result = _compose_config(compose, _env_file(tmp_path, SECRETS))
        assert result.returncode == 0, result.stderr
        _RESOLVED[compose] = yaml.safe_load(result.stdout)["services"]
    return _RESOLVED[compose]


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume, from docker-compose's short ("src:dst:mode") or long syntax."""
    pairs = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        pairs.append((source, target))
    return pairs


def test_full_stack_is_valid_with_every_service_healthchecked_and_ordered(tmp_path: Path) -> None:
    # Given the full-stack file and an .env derived from .env.example with the three secrets set
    services = _services(FULL_STACK, tmp_path)
    # Then it has the whole stack, and start-up order is enforced by health conditions
    assert set(services) == {"postgres", "redis", "migrate", "api", "scheduler", "prometheus", "grafana"}
    for name in ("postgres", "redis", "api", "scheduler", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    migrated = {"migrate": {"condition": "service_completed_successfully"}}
    assert services["scheduler"]["depends_on"] == migrated
    assert services["api"]["depends_on"] == {**migrated, "redis": {"condition": "service_healthy"}}
    # And the API counts its rate limit in that Redis, which publishes no port
    assert services["api"]["environment"]["API_RATE_LIMIT_REDIS_URL"] == "redis://redis:6379/0"
    assert "ports" not in services["redis"]
    assert services["grafana"]["depends_on"]["prometheus"] == {"condition": "service_healthy"}
    assert any(target == "/var/lib/postgresql/data" for _, target in _volumes(services["postgres"]))
    # And the app services read .env and reach PostgreSQL with the password from it
    assert "postgres:5432/trader" in services["api"]["environment"]["DATABASE_URL"]
    assert SECRETS["POSTGRES_PASSWORD"] in services["scheduler"]["environment"]["DATABASE_URL"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]


@pytest.mark.parametrize("compose", [FULL_STACK, SCHEDULER_ONLY], ids=["full-stack", "scheduler"])
def test_published_ports_are_bound_to_loopback(compose: Path, tmp_path: Path) -> None:
    # Given either compose file, When resolved, Then every published port listens on 127.0.0.1 only
    services = _services(compose, tmp_path)
    published = [(name, port) for name, service in services.items() for port in service.get("ports", [])]
    assert published
    for name, port in published:
        text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
        assert text.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"


@pytest.mark.parametrize("compose", [FULL_STACK, SCHEDULER_ONLY], ids=["full-stack", "scheduler"])
def test_scheduler_metrics_listen_on_every_interface_inside_the_container(compose: Path, tmp_path: Path) -> None:
    # Given either compose file, When resolved, Then the scheduler's metrics endpoint is reachable from outside
    # its container (Prometheus, the published port), while the default outside Docker stays loopback
    environment = _services(compose, tmp_path)["scheduler"]["environment"]
    assert environment["SCHEDULER_METRICS_HOST"] == "0.0.0.0"
    assert environment["SCHEDULER_METRICS_PORT"] == "9101"
    assert "SCHEDULER_METRICS_HOST=127.0.0.1" in (ROOT / ".env.example").read_text()


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_full_stack_refuses_to_start_without_each_secret(missing: str, tmp_path: Path) -> None:
    # Given an .env where one required secret is empty (as in .env.example)
    values = {**SECRETS, missing: ""}
    # When the file is resolved, Then docker-compose stops and names the missing value
    result = _compose_config(FULL_STACK, _env_file(tmp_path, values))
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_scheduler_compose_runs_migrations_first_on_a_persistent_volume(tmp_path: Path) -> None:
    services = _services(SCHEDULER_ONLY, tmp_path)
    assert services["scheduler"]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["scheduler"]["environment"]["DATABASE_URL"].endswith("/app/data/trading.db")
    assert _volumes(services["scheduler"]) == [("trader-data", "/app/data")]


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    # Given the Dockerfile
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith(("#", " "))]
    # Then it builds in two stages from a slim base, drops root and checks its health
    froms = [rest for keyword, *rest in instructions if keyword == "FROM"]
    assert len(froms) == 2
    assert all("slim" in rest[0] for rest in froms)
    users = [rest[0] for keyword, *rest in instructions if keyword == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text
    # And every path it copies from the build context exists
    for keyword, *rest in instructions:
        if keyword == "COPY" and "--from=" not in rest[0]:
            sources = [part for part in rest[0].split() if not part.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists() or source.startswith("/"), f"COPY source {source} is missing"


def _app_commands(tmp_path: Path) -> dict[str, list[str]]:
    """Each distinct command of a service built from our image, labelled by where it first appears."""
    commands: dict[tuple[str, ...], str] = {}
    for compose in (FULL_STACK, SCHEDULER_ONLY):
        for name, service in _services(compose, tmp_path).items():
            if service.get("image") == APP_IMAGE:
                commands.setdefault(tuple(service["command"]), f"{compose.name}:{name}")
    return {label: list(command) for command, label in commands.items()}


def test_app_service_commands_exist_and_start(tmp_path: Path) -> None:
    """Given the command of every service built from our image, When run here, Then it starts."""
    commands = _app_commands(tmp_path)
    assert {" ".join(command[:1]) for command in commands.values()} == {"alembic", "uvicorn", "python"}
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "HOME": str(tmp_path), "CI": os.environ.get("CI", "")}
    for label, command in commands.items():
        program, *args = command
        if program == "alembic":  # the one-shot migration: run it for real on a fresh SQLite file
            db = tmp_path / f"{re.sub(r'[^a-z]', '_', label)}.db"
            run_env = {**env, "DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
            result = subprocess.run([str(bin_dir / "alembic"), *args], cwd=ROOT, env=run_env, capture_output=True)
        elif program == "uvicorn":  # the API: the app object imports and uvicorn accepts the arguments
            module, _, attribute = args[0].partition(":")
            assert (ROOT / (module.replace(".", "/") + ".py")).exists(), f"{label}: {module} is missing"
            code = f"import {module} as m; assert getattr(m, {attribute!r}) is not None"
            result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
            assert result.returncode == 0, f"{label}: {result.stderr.decode()[-2000:]}"
            result = subprocess.run([str(bin_dir / "uvicorn"), "--help"], cwd=ROOT, env=env, capture_output=True)
        else:  # python <entry point>: it exists and answers --help
            assert (ROOT / args[0]).exists(), f"{label}: {args[0]} is missing"
            result = subprocess.run(
                [sys.executable, *args, "--help"], cwd=ROOT, env=env, capture_output=True, timeout=120
            )
        assert result.returncode == 0, f"{label}: {result.stderr.decode()[-2000:]}"


def test_monitoring_files_mounted_by_compose_exist(tmp_path: Path) -> None:
    services = _services(FULL_STACK, tmp_path)
    for name in ("prometheus", "grafana"):
        for source, _ in _volumes(services[name]):
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts missing {source}"
