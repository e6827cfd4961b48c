"""The research fan-out: the same results in one process, on a local Ray instance and on a two-node Ray cluster on
loopback; a run killed with SIGKILL resumes without evaluating a finished batch again.

Ray is in requirements-research.txt (installed by ``make install`` and ``make test``); without it these tests skip
with a reason, and under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from src.backtesting.engine import EngineConfig
from src.research.data import ResearchData
from src.research.distributed import (
    SINGLE_MACHINE_ENV,
    Batch,
    InProcessExecutor,
    Progress,
    RayExecutor,
    ResearchError,
    ResultCache,
    executor_for,
    fan_out,
    format_progress,
)
from tests.support.candles import make_candles
from tests.support.research import DELAY_ENV, LOG_ENV, evaluate, evaluations, fails

# Ray's single-machine mode for every Ray instance this test process starts: Ray keeps them on 127.0.0.1
# (RayExecutor sets it too; set here before anything imports Ray).
os.environ.setdefault(SINGLE_MACHINE_ENV, "0")
ROOT = Path(__file__).resolve().parents[1]
RAY_BIN = Path(sys.executable).with_name("ray")
OBJECT_STORE = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; the test data is a few hundred kB
CONFIG = EngineConfig(quick_filter=False)
RUN_MARKER = "RESEARCH_TEST_RUN"


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        reason = "ray is not installed (pip install -r requirements-research.txt)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; required because CI=true")
        pytest.skip(reason)


def _datasets() -> dict[str, ResearchData]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return {
        "KRW-BTC": ResearchData.of(make_candles(start, 1500, seed=1, step_pct=0.8)),
        "KRW-ETH": ResearchData.of(make_candles(start, 1500, seed=2, step_pct=0.8, start_price=3_000_000.0)),
    }


def _param_sets() -> list[dict[str, Any]]:
    return [
        {"k": k, "trend_filter": trend, "trend_window": window}
        for k in (0.3, 0.6, 0.9)
        for trend, window in ((False, 5), (True, 5), (True, 20))
    ]


def _batches() -> list[Batch]:
    """2 symbols × 3 folds × 3 batches of 3 parameter sets = 18 batches."""
    windows = [(0, 700), (400, 1100), (800, 1500)]
    return fan_out(["KRW-BTC", "KRW-ETH"], "volatility_breakout", _param_sets(), windows=windows, batch_size=3,
                   config=CONFIG)  # fmt: skip


@pytest.fixture(scope="module")
def data() -> dict[str, ResearchData]:
    return _datasets()


@pytest.fixture(scope="module")
def expected(data: dict[str, ResearchData]) -> list[list[dict[str, float]]]:
    """One process, no cache: the reference every other way of running must reproduce."""
    return InProcessExecutor().map_batches(evaluate, _batches(), data=data)


def _same(a: Any, b: Any) -> bool:
    """Equal to the last bit, NaN (an undefined metric) equal to NaN: the JSON texts are the same."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _short_tmp() -> str:
    """Ray's socket paths must stay under 108 bytes: pytest's tmp_path is too deep."""
    return tempfile.mkdtemp(prefix="rt", dir="/tmp")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_batches_fan_out_symbols_folds_and_parameter_batches(expected: list[list[dict[str, float]]]) -> None:
    # Given the fan-out of 2 symbols, 3 folds and 9 parameter sets in batches of 3
    batches = _batches()
    # Then it makes 18 batches, each parameter set once per symbol and fold, with a result per set
    assert len(batches) == 18
    assert {(b.data, b.window) for b in batches} == {
        (s, w) for s in ("KRW-BTC", "KRW-ETH") for w in ((0, 700), (400, 1100), (800, 1500))
    }
    assert [len(r) for r in expected] == [3] * 18
    assert all("total_return_pct" in m and "trades" in m for r in expected for m in r)
    # And the parameters matter (the sweep is not trivially constant)
    assert len({round(m["total_return_pct"], 12) for r in expected for m in r}) > 9


def test_in_process_run_reports_progress_and_fills_the_cache(
    tmp_path: Path, data: dict[str, ResearchData], expected: list[list[dict[str, float]]]
) -> None:
    # Given an empty cache
    cache = ResultCache.at(tmp_path / "cache")
    seen: list[Progress] = []
    # When the sweep runs in one process
    results = InProcessExecutor().map_batches(evaluate, _batches(), data=data, cache=cache, progress=seen.append)
    # Then the results are the reference, every batch is cached, and the progress counted up to the end
    assert _same(results, expected)
    assert len(cache.keys()) == 18
    assert [p.done for p in seen] == list(range(1, 19))
    assert seen[-1].param_sets_done == seen[-1].param_sets_total == 54
    assert seen[-1].eta_s == 0.0
    assert seen[0].eta_s is not None
    assert "18/18 batches (0 cached), 54/54 sets" in format_progress(seen[-1])

    # When it runs again
    log_file = tmp_path / "evaluations.log"
    os.environ[LOG_ENV] = str(log_file)
    try:
        again: list[Progress] = []
        results = InProcessExecutor().map_batches(evaluate, _batches(), data=data, cache=cache, progress=again.append)
    finally:
        del os.environ[LOG_ENV]
    # Then nothing is evaluated: every result comes back from the cache, identical
    assert _same(results, expected)
    assert evaluations(log_file) == []
    assert again[-1].cached == 18


def test_the_cache_key_covers_data_window_parameters_and_config(tmp_path: Path, data: dict[str, ResearchData]) -> None:
    # Given one batch in the cache
    cache = ResultCache.at(tmp_path / "cache")
    base = _batches()[0]
    InProcessExecutor().map_batches(evaluate, [base], data=data, cache=cache)
    # When a batch differs in one thing only
    variants = [
        Batch("KRW-ETH", base.strategy, base.params, base.window, base.config),
        Batch(base.data, base.strategy, base.params, (1, 700), base.config),
        Batch(base.data, base.strategy, ({**base.params[0], "k": 0.31}, *base.params[1:]), base.window, base.config),
        Batch(base.data, base.strategy, base.params, base.window, EngineConfig(quick_filter=False, fee_rate=0.001)),
    ]
    InProcessExecutor().map_batches(evaluate, variants, data=data, cache=cache)
    # Then each is a new entry; the tag (a name for people) is not part of the key
    assert len(cache.keys()) == 5
    renamed = Batch(base.data, base.strategy, base.params, base.window, base.config, tag="another name")
    InProcessExecutor().map_batches(evaluate, [renamed], data=data, cache=cache)
    assert len(cache.keys()) == 5


def test_bad_input_is_one_clear_error(tmp_path: Path, data: dict[str, ResearchData]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ResearchError, match=r"cannot use .* as the research cache"):
        ResultCache.at(a_file / "cache")
    with pytest.raises(ResearchError, match="no data named KRW-XRP"):
        InProcessExecutor().map_batches(evaluate, [Batch("KRW-XRP", "volatility_breakout", ({},))], data=data)
    with pytest.raises(ResearchError, match="2 workers need Ray"):
        executor_for(workers=2)
    with pytest.raises(ValueError, match="window"):
        Batch("KRW-BTC", "volatility_breakout", ({},), (10, 5))


def test_an_unreachable_cluster_is_one_clear_error_in_seconds() -> None:
    _require_ray()
    # Given an address where no Ray head listens
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    # When a run asks for it, Then it ends at once with one line naming the address
    with pytest.raises(ResearchError, match=f"cannot reach the Ray cluster at {address}: Connection refused"):
        executor_for(ray=True, address=address)
    with pytest.raises(ResearchError, match="HOST:PORT"):
        executor_for(address="no-port")
    assert time.monotonic() - started < 10


@pytest.mark.integration
def test_local_ray_gives_the_same_results_as_one_process(
    tmp_path: Path, data: dict[str, ResearchData], expected: list[list[dict[str, float]]]
) -> None:
    _require_ray()
    import ray

    temp = _short_tmp()
    executor = RayExecutor(num_cpus=2, object_store_mb=OBJECT_STORE // 2**20, temp_dir=temp)
    try:
        # Given a local Ray instance with one warm actor per CPU
        assert executor.workers == 2
        locations = executor.worker_locations()
        assert len({pid for _, pid in locations}) == 2
        assert os.getpid() not in {pid for _, pid in locations}
        # When the sweep runs on it, twice (the second call reuses the actors and the data in the object store)
        first = executor.map_batches(evaluate, _batches(), data=data)
        second = executor.map_batches(evaluate, list(reversed(_batches())), data=data)
        # Then the results are exactly the one-process results, in the batches' order
        assert _same(first, expected)
        assert _same(second, list(reversed(expected)))
        # And each dataset went into the object store once
        assert executor.datasets_shared == 2
        # And the workers read the candles zero-copy: read-only arrays backed by the object store
        flags = executor.map_batches(_array_flags, [Batch("KRW-BTC", "-", ({},))] * 2, data=data)
        assert all(r[0]["writeable"] == 0.0 for r in flags)
        assert ray.is_initialized()
        # And an error in the evaluator arrives as itself, naming the batch
        with pytest.raises(ValueError, match="bad batch"):
            executor.map_batches(fails, _batches()[:2], data=data)
    finally:
        executor.close()
        shutil.rmtree(temp, ignore_errors=True)
    assert not ray.is_initialized()


def _array_flags(data: ResearchData, batch: Batch) -> list[dict[str, float]]:
    return [{"writeable": float(data.close.flags.writeable), "owndata": float(data.close.flags.owndata)}]


_SWEEP = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.test_research_distributed import _batches, _datasets
    from tests.support.research import evaluate
    from src.research.distributed import ResultCache, executor_for

    with executor_for(ray=sys.argv[2] == "ray", workers=2 if sys.argv[2] == "ray" else None) as executor:
        executor.map_batches(evaluate, _batches(), data=_datasets(), cache=ResultCache.at(Path(sys.argv[1])))
    print("finished")
    """
)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["in-process", "ray"])
def test_a_sweep_killed_with_sigkill_resumes_without_repeating_a_finished_batch(
    tmp_path: Path, mode: str, data: dict[str, ResearchData], expected: list[list[dict[str, float]]]
) -> None:
    if mode == "ray":
        _require_ray()
    cache_dir, log_file = tmp_path / "cache", tmp_path / "evaluations.log"
    temp = _short_tmp()
    env = {**os.environ, LOG_ENV: str(log_file), DELAY_ENV: "0.3", "PYTHONPATH": str(ROOT), "RAY_TMPDIR": temp,
           RUN_MARKER: temp}  # fmt: skip
    # Given a sweep of 18 batches running in its own process (and process group: with Ray, its workers too)
    sweep = subprocess.Popen(
        [sys.executable, "-c", _SWEEP, str(cache_dir), mode],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # When it is killed with SIGKILL once 5 batches are in the cache
        deadline = time.monotonic() + 120
        while len(ResultCache(cache_dir).keys()) < 5:
            assert sweep.poll() is None, (sweep.stdout.read() if sweep.stdout else b"").decode()[-2000:]
            assert time.monotonic() < deadline, "the sweep cached nothing in 120 s"
            time.sleep(0.05)
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=30)
        # Ray's workers run in process groups of their own: SIGKILL them too (found by the run's temp dir)
        _kill_processes_using(temp)
    finally:
        with_suppressed_kill(sweep.pid)
        _kill_processes_using(temp)
        shutil.rmtree(temp, ignore_errors=True)
    assert sweep.returncode == -signal.SIGKILL
    cached = set(ResultCache(cache_dir).keys())
    before = evaluations(log_file)
    assert 5 <= len(cached) < 18

    # When the sweep runs again (in this process)
    os.environ[LOG_ENV] = str(log_file)
    try:
        cache = ResultCache.at(cache_dir)
        cache.clean()
        results = InProcessExecutor().map_batches(evaluate, _batches(), data=data, cache=cache)
    finally:
        del os.environ[LOG_ENV]
    rerun = evaluations(log_file)[len(before) :]
    # Then it evaluates exactly the batches that were not finished, none of the cached ones
    finished_tags = {b.tag for b, key in _keys(cache_dir, data) if key in cached}
    assert len(rerun) == 18 - len(cached)
    assert not finished_tags & set(rerun)
    assert set(rerun) | finished_tags == {b.tag for b in _batches()}
    # And the results are those of an uninterrupted run
    assert _same(results, expected)


def _keys(cache_dir: Path, data: dict[str, ResearchData]) -> list[tuple[Batch, str]]:
    from src.research.distributed import batch_key, data_fingerprint

    hashes = {name: data_fingerprint(d) for name, d in data.items()}
    return [(b, batch_key(evaluate, hashes[b.data], b)) for b in _batches()]


def _processes_using(marker: str) -> list[int]:
    """Processes started by this test for one run, found by ``RUN_MARKER=marker`` in their environment: Ray's
    workers run in process groups of their own and rename themselves (``ray::IDLE``), but inherit it."""
    needle = f"{RUN_MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _kill_processes_using(marker: str) -> None:
    deadline = time.monotonic() + 20
    while (pids := _processes_using(marker)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def with_suppressed_kill(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class _Cluster:
    address: str
    temp: str
    groups: list[int]


HEAD_IP, SECOND_IP = "127.0.0.2", "127.0.0.3"  # Ray turns 127.0.0.1 into the machine's outward address


@pytest.fixture
def two_node_cluster() -> Iterator[_Cluster]:
    """A Ray head and a second node on loopback (127.0.0.2 and 127.0.0.3), one CPU each, started with
    ``ray start``; the finaliser kills every process of the cluster whatever happened (each ``ray start`` in
    its own process group, and the workers, which make groups of their own, by a marker in their environment).
    """
    _require_ray()
    temp = _short_tmp()
    port = _free_port()
    cluster = _Cluster(f"{HEAD_IP}:{port}", temp, [])
    common = ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE}", "--disable-usage-stats"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", RUN_MARKER: temp}
    for name in ("RAY_ADDRESS", SINGLE_MACHINE_ENV):  # a second node refuses Ray's single-machine mode
        env.pop(name, None)
    commands = [
        [str(RAY_BIN), "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={port}", f"--temp-dir={temp}",
         "--include-dashboard=false", *common],
        [str(RAY_BIN), "start", f"--address={cluster.address}", f"--node-ip-address={SECOND_IP}", *common],
    ]  # fmt: skip
    try:
        for command in commands:
            log_path = Path(temp) / f"start-{len(cluster.groups)}.log"
            with open(log_path, "wb") as log_file:  # not a pipe: Ray's daemons inherit it and never close it
                started = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=log_file,
                                           stderr=subprocess.STDOUT)  # fmt: skip
                cluster.groups.append(started.pid)
                code = started.wait(timeout=120)
            assert code == 0, log_path.read_text(errors="replace")[-3000:]
        yield cluster
    finally:
        for group in cluster.groups:
            with_suppressed_kill(group)
        _kill_processes_using(temp)  # the workers, in process groups of their own
        shutil.rmtree(temp, ignore_errors=True)


_CLUSTER_CLIENT = textwrap.dedent(
    """
    import json, sys
    import ray
    from tests.test_research_distributed import _batches, _datasets
    from tests.support.research import evaluate
    from src.research.distributed import executor_for

    with executor_for(ray=True, address=sys.argv[1]) as executor:
        nodes = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
        locations = executor.worker_locations()
        results = executor.map_batches(evaluate, _batches(), data=_datasets())
    print(json.dumps({"nodes": nodes, "workers": executor.workers, "locations": locations, "results": results}))
    """
)


@pytest.mark.integration
def test_a_two_node_cluster_on_loopback_gives_the_same_results_as_one_process(
    two_node_cluster: _Cluster, expected: list[list[dict[str, float]]]
) -> None:
    # Given a client of the two-node cluster, by address as --ray-address gives it (a process of its own, as
    # `backtest.py optimize --ray-address` is)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", RUN_MARKER: two_node_cluster.temp}
    env.pop(SINGLE_MACHINE_ENV, None)
    # When the sweep runs on it
    done = subprocess.run(
        [sys.executable, "-c", _CLUSTER_CLIENT, two_node_cluster.address],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Then it ran on both nodes, one actor each
    assert out["nodes"] == [HEAD_IP, SECOND_IP]
    assert out["workers"] == 2
    assert len({node for node, _ in out["locations"]}) == 2
    # And the results are exactly the one-process results
    assert _same(out["results"], expected)


def test_the_bot_processes_never_import_ray() -> None:
    # Given the entry points of the bot, the API, the backtest command and the research fan-out module
    code = (
        "import sys; import scheduler_main, backtest, backend.app.main, src.research.distributed;"
        "print('ray' in sys.modules)"
    )
    # When they are imported
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    # Then Ray is not loaded: only RayExecutor imports it, when a research run asks for it
    assert done.stdout.strip().splitlines()[-1] == "False"
