"""The project as a package: `pip install .` into a fresh virtual environment gives console scripts that work from
an empty folder (bundled candles found, database created there), and `make help` lists the targets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from src.config.env import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPTS = ("upbit-scheduler", "upbit-cycle", "upbit-backtest", "upbit-api", "upbit-migrate")


def _env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "TZ")
    return {**{name: os.environ[name] for name in keep if name in os.environ}, "HOME": str(home)}


def _not_source(folder: str, names: list[str]) -> set[str]:
    """Skipped in the copy: the checkout's environment, caches, and its own databases and reports."""
    skipped = {".venv", ".venv-sdk", ".git", "build", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    if Path(folder) == PROJECT_ROOT:
        skipped |= {"data", "reports"}
    return {name for name in names if name in skipped or name.endswith(".egg-info")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv whose only link to this environment is a .pth line to its site-packages (the pinned
    dependencies, pip and setuptools), with the project installed into it by `pip install .` (not editable)."""
    root = tmp_path_factory.mktemp("pkg")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "outer-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = root / "source"  # a copy, so the build writes nothing into the checkout
    shutil.copytree(PROJECT_ROOT, source, ignore=_not_source)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)],
        check=True,
        capture_output=True,
        env=_env(root),
    )
    return env_dir


def test_pip_install_gives_the_console_scripts(installed: Path, tmp_path: Path) -> None:
    # Given the project installed with pip into a fresh environment
    # Then every console script exists and answers --help
    for script in SCRIPTS:
        done = subprocess.run(
            [installed / "bin" / script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (script, done.stderr[-500:])
        assert "usage:" in done.stdout


def test_installed_backtest_and_migrate_work_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    # Given an empty working folder outside the checkout
    work = tmp_path / "work"
    work.mkdir()
    # When the installed scripts create the database and backtest the bundled candles
    migrate = subprocess.run(
        [installed / "bin" / "upbit-migrate"], cwd=work, capture_output=True, text=True, env=_env(tmp_path), timeout=120
    )
    backtest = subprocess.run(
        [installed / "bin" / "upbit-backtest", "--json", "out.json", "--start", "2023-10-01", "--end", "2024-01-01"],
        cwd=work,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=300,
    )
    # Then the database is in the working folder and the backtest ran on the candles that came with the package
    assert migrate.returncode == 0, migrate.stderr[-500:]
    assert (work / "data" / "trading.db").is_file()
    assert backtest.returncode == 0, backtest.stderr[-800:]
    metrics = json.loads((work / "out.json").read_text())["metrics"]
    assert metrics["start"] < "2023-10-02"
    assert metrics["end"] >= "2023-12-31"
    assert metrics["bars"] > 1000


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_the_targets() -> None:
    # When a user asks make for help
    done = subprocess.run(["make", "--no-print-directory", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    # Then every documented target is listed with its line
    assert done.returncode == 0
    for target in ("run", "test", "install", "api", "dashboard", "scheduler", "backtest", "migrate", "lint"):
        assert f"make {target} " in done.stdout, target
