"""Fan-out of research evaluations: in one process by default, on Ray Core when asked, resumable from disk.

The research commands cut their work into :class:`Batch` es (one dataset, one strategy, one fold window, a few
hundred parameter sets each: folds × symbols × parameter batches, see :func:`fan_out`) and hand them to an
:class:`Executor`::

    with executor_for(ray=args.ray, address=args.ray_address) as executor:
        results = executor.map_batches(evaluate_job, batches, data={"KRW-BTC": research_data},
                                       cache=ResultCache.at(Path("data/research-cache")), progress=bar.update)

``results[i]`` is ``fn(data[batches[i].data], batches[i])``: a list of metrics dicts, one per parameter set, in
the batch's order. Both executors give the same results (the evaluation is deterministic and the results are
returned in the batches' order, whichever worker finished first).

- :class:`InProcessExecutor`: a plain loop; no Ray import. The bot's own processes never import Ray: only
  :class:`RayExecutor` does, inside its methods.
- :class:`RayExecutor`: Ray Core, not Ray Tune. ``ray.init()`` on this machine by default, or the cluster at
  ``address`` (``--ray-address`` or ``RAY_ADDRESS``). Each dataset goes into the object store once
  (``ray.put``); the workers read its numpy arrays zero-copy from the node's shared memory (one copy per node,
  however many workers). One actor per CPU of the cluster, created once per executor and kept: the actors
  keep their compiled numba kernels (and the datasets they read) warm from one ``map_batches`` call to the
  next, which matters for walk-forward and Optuna, which call it many times.
- :class:`ResultCache`: every finished batch is written to disk at once and atomically (a temporary file
  renamed over its final name), keyed by a hash of (evaluator, code, data, strategy, window, parameter sets,
  engine configuration). A run killed at any moment (kill -9 included) resumes where it stopped: batches in
  the cache are read back, never evaluated again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import math
import os
import pickle
import socket
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from src.exceptions import ConfigurationError
from src.utils.logger import get_logger

log = get_logger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR = Path("data") / "research-cache"
# Object store of a local Ray instance: the candles of a research run are small (100k hourly bars of OHLCV are
# about 5 MB), so a small store keeps Ray's shared memory out of the way of everything else on the machine.
DEFAULT_OBJECT_STORE_MB = 256
# Batches in flight per worker: one running, one queued, so a worker never waits for the driver.
IN_FLIGHT_PER_WORKER = 2
# Ray's switch for single-machine mode (named for the platforms where it is the default): with "0" Ray puts a
# local instance on 127.0.0.1.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_TIMEOUT_S = 5.0

Metrics = dict[str, float]
BatchResult = list[Metrics]
Evaluator = Callable[[Any, "Batch"], BatchResult]


class ResearchError(ConfigurationError):
    """A research run cannot start or go on (an unreachable cluster, a bad cache directory): one clear line."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One unit of work: ``params`` of ``strategy`` evaluated on dataset ``data`` over bars ``window``.

    ``window`` is ``(start, stop)`` in bars of the dataset (a fold's train or test span), ``None`` for all bars.
    ``config`` is the engine configuration (``EngineConfig``), part of the cache key. ``tag`` names the batch
    for people (``fold 3 train``); it is not part of the key.
    """

    data: str
    strategy: str
    params: tuple[Mapping[str, Any], ...]
    window: tuple[int, int] | None = None
    config: Any = None
    tag: str = ""

    def __post_init__(self) -> None:
        if not self.params:
            raise ValueError("a batch needs at least one parameter set")
        if self.window is not None and not 0 <= self.window[0] < self.window[1]:
            raise ValueError(f"a window is (start, stop) with 0 <= start < stop, got {self.window}")


@dataclass(frozen=True, slots=True)
class Progress:
    """What a caller's progress bar needs after each finished batch."""

    done: int  # batches finished (cached ones included)
    total: int
    cached: int  # of ``done``, read back from the cache
    param_sets_done: int
    param_sets_total: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace of the batches evaluated in this run (cached ones cost nothing)."""
        evaluated = self.done - self.cached
        if self.done >= self.total:
            return 0.0
        if evaluated <= 0:
            return None
        return self.elapsed_s / evaluated * (self.total - self.done)


ProgressCallback = Callable[[Progress], None]


def fan_out(
    data: Iterable[str],
    strategy: str,
    param_sets: Sequence[Mapping[str, Any]],
    *,
    windows: Iterable[tuple[int, int] | None] = (None,),
    batch_size: int = 256,
    config: Any = None,
) -> list[Batch]:
    """Datasets (symbols) × windows (folds) × parameter batches of ``batch_size`` sets, in that order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spans = list(windows)
    batches: list[Batch] = []
    for name in data:
        for number, window in enumerate(spans):
            for first in range(0, len(param_sets), batch_size):
                chunk = tuple(param_sets[first : first + batch_size])
                tag = f"{name} window {number} sets {first}..{first + len(chunk) - 1}"
                batches.append(Batch(name, strategy, chunk, window, config, tag))
    return batches


# --- fingerprints and the result cache ---------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """A JSON-able form of a key component that is the same in every process (dataclasses by field)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__qualname__, **{f.name: _canonical(getattr(value, f.name))
                                                          for f in dataclasses.fields(value)}}  # fmt: skip
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return repr(value)  # 0.1 and 0.1000000001 differ; nan and inf are representable
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _canonical(value.item())
    return repr(value)


def data_fingerprint(data: Any) -> str:
    """A hash of a dataset's content: ``data.fingerprint()`` when it has one, else of its pickle."""
    own = getattr(data, "fingerprint", None)
    if callable(own):
        return str(own())
    return hashlib.sha256(pickle.dumps(data, protocol=5)).hexdigest()


_CODE_DIRS = ("src/research", "src/backtesting", "src/strategy", "src/risk", "src/domain", "src/trading")
_code_versions: dict[str, str] = {}


def code_version(fn: Callable[..., Any]) -> str:
    """A hash of the code a result depends on: the evaluator's own source file and the engine's packages.

    Changing the engine, a strategy or the evaluator makes a new key, so a cache never serves results of other
    code."""
    source = getattr(fn, "__code__", None)
    path = source.co_filename if source is not None else ""
    key = path
    if key not in _code_versions:
        digest = hashlib.sha256()
        files = sorted(p for d in _CODE_DIRS for p in (ROOT / d).rglob("*.py"))
        if path and Path(path).is_file():
            files.append(Path(path))
        for file in files:
            digest.update(str(file.relative_to(ROOT) if file.is_relative_to(ROOT) else file).encode())
            digest.update(file.read_bytes())
        _code_versions[key] = digest.hexdigest()
    return _code_versions[key]


def batch_key(fn: Callable[..., Any], data_hash: str, batch: Batch) -> str:
    """The cache key of ``fn(data, batch)``: evaluator and its code, data, strategy, window, sets, config."""
    ident = {
        "evaluator": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
        "code": code_version(fn),
        "data": data_hash,
        "strategy": batch.strategy,
        "window": list(batch.window) if batch.window is not None else None,
        "params": _canonical(batch.params),
        "config": _canonical(batch.config),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ResultCache:
    """Finished batches on disk, one JSON file per batch (``<dir>/<key[:2]>/<key>.json``), written atomically.

    A file either exists whole or not at all: it is written to a temporary file in the same directory, flushed
    to disk and renamed over its final name, so a process killed mid-write leaves at most a ``.tmp`` file,
    which is ignored (and removed by :meth:`clean`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def at(cls, directory: Path | str) -> ResultCache:
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResearchError(f"cannot use {path} as the research cache: {exc.strerror or exc}") from None
        if not os.access(path, os.W_OK):
            raise ResearchError(f"cannot use {path} as the research cache: not writable")
        return cls(path)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> BatchResult | None:
        try:
            stored = json.loads(self._path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # cannot happen with atomic writes; a hand-edited file is ignored
            log.warning("research.cache_unreadable", key=key, error=str(exc))
            return None
        results = stored.get("results") if isinstance(stored, dict) else None
        return results if isinstance(results, list) else None

    def put(self, key: str, batch: Batch, results: BatchResult) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"key": key, "tag": batch.tag, "strategy": batch.strategy, "results": results}
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle, default=_json_number)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*/*.json"))

    def clean(self) -> int:
        """Remove temporary files left by killed runs; returns how many."""
        removed = 0
        for tmp in self.directory.glob("*/.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
        return removed


def _json_number(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy scalars in a metrics dict
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --- executors ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """The bookkeeping of one ``map_batches`` call: keys, cached results, progress."""

    batches: Sequence[Batch]
    keys: list[str | None]
    cache: ResultCache | None
    progress: ProgressCallback | None
    results: list[BatchResult | None] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    cached: int = 0
    sets_done: int = 0
    evaluated: int = 0

    @classmethod
    def start(
        cls,
        fn: Evaluator,
        batches: Sequence[Batch],
        data: Mapping[str, Any],
        cache: ResultCache | None,
        progress: ProgressCallback | None,
    ) -> _Run:
        missing = sorted({b.data for b in batches} - set(data))
        if missing:
            raise ResearchError(f"no data named {', '.join(missing)} (have: {', '.join(sorted(data)) or 'none'})")
        keys: list[str | None] = [None] * len(batches)
        if cache is not None:
            hashes = {name: data_fingerprint(data[name]) for name in {b.data for b in batches}}
            keys = [batch_key(fn, hashes[b.data], b) for b in batches]
        run = cls(batches, keys, cache, progress, [None] * len(batches))
        if cache is not None:
            for i, key in enumerate(keys):
                stored = cache.get(key) if key is not None else None
                if stored is not None and len(stored) == len(batches[i].params):
                    run.results[i] = stored
                    run.cached += 1
                    run._count(i)
        return run

    def pending(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if r is None]

    def finish(self, index: int, result: BatchResult) -> None:
        batch = self.batches[index]
        if len(result) != len(batch.params):
            raise ResearchError(
                f"the evaluator returned {len(result)} results for {len(batch.params)} parameter sets ({batch.tag})"
            )
        key = self.keys[index]
        if self.cache is not None and key is not None:
            self.cache.put(key, batch, result)
        self.results[index] = result
        self.evaluated += 1
        self._count(index)

    def _count(self, index: int) -> None:
        self.done += 1
        self.sets_done += len(self.batches[index].params)
        if self.progress is not None:
            total_sets = sum(len(b.params) for b in self.batches)
            elapsed = time.perf_counter() - self.started
            self.progress(Progress(self.done, len(self.batches), self.cached, self.sets_done, total_sets, elapsed))

    def collected(self) -> list[BatchResult]:
        out = [r for r in self.results if r is not None]
        assert len(out) == len(self.results), "every batch is finished"
        return out


class Executor(ABC):
    """Runs ``fn(data[batch.data], batch)`` for every batch, skipping those already in ``cache``."""

    workers: int

    def map_batches(
        self,
        fn: Evaluator,
        batches: Sequence[Batch],
        *,
        data: Mapping[str, Any],
        cache: ResultCache | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[BatchResult]:
        """``fn`` must be a module-level function (workers import it by name). Results in the batches' order."""
        run = _Run.start(fn, batches, data, cache, progress)
        pending = run.pending()
        if pending:
            log.debug("research.map_batches", batches=len(batches), cached=run.cached, pending=len(pending))
            self._evaluate(fn, run, pending, data)
        return run.collected()

    @abstractmethod
    def _evaluate(self, fn: Evaluator, run: _Run, pending: list[int], data: Mapping[str, Any]) -> None:
        """Evaluate the batches ``pending`` (indexes into ``run.batches``), calling ``run.finish`` for each."""

    def close(self) -> None:  # noqa: B027 - nothing to release in one process
        """Release workers (Ray: actors, and the local instance this executor started)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class InProcessExecutor(Executor):
    """The default: every batch in this process, one after the other."""

    workers = 1

    def _evaluate(self, fn: Evaluator, run: _Run, pending: list[int], data: Mapping[str, Any]) -> None:
        for i in pending:
            batch = run.batches[i]
            run.finish(i, fn(data[batch.data], batch))


class _Worker:
    """A Ray actor (wrapped by ``ray.remote`` in :meth:`RayExecutor._start`): one per CPU, kept for the
    executor's life. It keeps the datasets it was sent (zero-copy views of the node's object store) and, being
    one long-lived process, numba's compiled kernels."""

    def __init__(self, warmup: Callable[[], Any] | None) -> None:
        self._data: OrderedDict[str, Any] = OrderedDict()
        if warmup is not None:
            warmup()

    def where(self) -> tuple[str, int]:
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def run(self, fn: Evaluator, ref: list[Any], batch: Batch) -> BatchResult:
        """``ref`` is ``[ObjectRef]``: wrapped in a list, so Ray does not resolve it on every call; the actor
        resolves it once and keeps the (read-only, shared-memory) dataset for the next batches."""
        import ray

        key = ref[0].hex()
        data = self._data.get(key)
        if data is None:
            data = ray.get(ref[0])
            self._data[key] = data
            while len(self._data) > 8:
                self._data.popitem(last=False)
        else:
            self._data.move_to_end(key)
        return fn(data, batch)


class RayExecutor(Executor):
    """Ray Core: a local instance (``address=None``) or the cluster at ``address``.

    ``num_cpus`` / ``object_store_mb`` size a local instance (default: every CPU of this machine, 256 MB of
    object store). ``workers``: how many actors (default: one per CPU of the cluster). ``warmup``: a
    module-level function each actor calls once when it starts (e.g. a tiny evaluation that loads the compiled
    kernels), so the first batches are not slower than the rest.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        workers: int | None = None,
        object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
        warmup: Callable[[], Any] | None = None,
        temp_dir: str | None = None,
    ) -> None:
        self.address = address
        self._num_cpus = num_cpus
        self._wanted_workers = workers
        self._object_store_mb = object_store_mb
        self._warmup = warmup
        self._temp_dir = temp_dir
        self._started_ray = False
        self._actors: list[Any] = []
        self._refs: dict[str, Any] = {}  # data fingerprint -> ObjectRef (put once per executor)
        self._ref_of_object: dict[int, tuple[Any, Any]] = {}  # id(data) -> (data, ObjectRef)
        self.workers = 0
        self._start()

    def _start(self) -> None:
        if not self.address and "ray" not in sys.modules:
            # A local instance serves this machine only: Ray's single-machine mode (read when Ray is first
            # imported) keeps it on 127.0.0.1 instead of the machine's outward address.
            os.environ.setdefault(SINGLE_MACHINE_ENV, "0")
        try:
            import ray
        except ImportError:
            raise ResearchError(
                "Ray is not installed: pip install -r requirements-research.txt (or run without Ray)"
            ) from None
        if self.address and not ray.is_initialized():
            _check_reachable(self.address)
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                       "configure_logging": False}  # fmt: skip
            if self.address:
                options["address"] = self.address
                host = self.address.rpartition(":")[0].strip("[]")
                if _is_loopback(host):  # a cluster on this machine: this driver is on its loopback too
                    options["_node_ip_address"] = host
            else:
                options |= {
                    "address": "local",
                    "num_cpus": self._num_cpus,
                    "object_store_memory": self._object_store_mb * 1024 * 1024,
                }
                if self._temp_dir:
                    options["_temp_dir"] = self._temp_dir
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ResearchError(f"cannot start or reach {where}: {first}") from None
            self._started_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = self._wanted_workers or max(1, cpus)
        actor_class = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(_Worker)
        self._actors = [actor_class.options(scheduling_strategy="SPREAD").remote(self._warmup) for _ in range(count)]
        self.workers = count
        log.info("research.ray_started", address=self.address or "local", cpus=cpus, workers=count)

    def worker_locations(self) -> list[tuple[str, int]]:
        """(node id, process id) of every actor: where the work runs."""
        import ray

        return list(ray.get([a.where.remote() for a in self._actors]))

    @property
    def datasets_shared(self) -> int:
        """How many datasets this executor has put in the object store (each once)."""
        return len(self._refs)

    def share(self, data: Any) -> Any:
        """The object-store reference of ``data``, put there once for the executor's life."""
        import ray

        known = self._ref_of_object.get(id(data))
        if known is not None and known[0] is data:
            return known[1]
        fingerprint = data_fingerprint(data)
        ref = self._refs.get(fingerprint)
        if ref is None:
            ref = ray.put(data)
            self._refs[fingerprint] = ref
        self._ref_of_object[id(data)] = (data, ref)
        return ref

    def _evaluate(self, fn: Evaluator, run: _Run, pending: list[int], data: Mapping[str, Any]) -> None:
        import ray

        refs = {name: self.share(data[name]) for name in {run.batches[i].data for i in pending}}
        queue = iter(pending)
        in_flight: dict[Any, tuple[int, Any]] = {}  # result ref -> (batch index, actor)

        def submit(actor: Any) -> bool:
            index = next(queue, None)
            if index is None:
                return False
            batch = run.batches[index]
            in_flight[actor.run.remote(fn, [refs[batch.data]], batch)] = (index, actor)
            return True

        for _ in range(IN_FLIGHT_PER_WORKER):
            for actor in self._actors:
                submit(actor)
        try:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                index, actor = in_flight.pop(ready[0])
                run.finish(index, _unwrap(ray, ready[0]))
                submit(actor)
        finally:
            for ref in in_flight:  # an error or Ctrl+C: do not leave work running for nobody
                with contextlib.suppress(Exception):
                    ray.cancel(ref)

    def close(self) -> None:
        try:
            import ray
        except ImportError:
            return
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self._actors = []
        self._refs.clear()
        self._ref_of_object.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False


def _check_reachable(address: str) -> None:
    """A cluster address is ``host:port`` of its head, and something listens there: checked in a few seconds
    (``ray.init`` itself retries an unreachable address for minutes)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ResearchError(f"a Ray cluster address is HOST:PORT of its head node, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ResearchError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unwrap(ray: Any, ref: Any) -> BatchResult:
    """The task's result; an error raised by the evaluator is raised here as itself, not as a Ray wrapper."""
    try:
        result: BatchResult = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        raise cause from None
    return result


# --- choosing an executor -------------------------------------------------------------------------------------


def executor_for(
    *,
    ray: bool = False,
    address: str | None = None,
    workers: int | None = None,
    warmup: Callable[[], Any] | None = None,
) -> Executor:
    """In-process unless Ray is asked for: ``ray=True`` (a local instance), or a cluster ``address``
    (``--ray-address``; ``RAY_ADDRESS`` from the environment when ``ray`` is set and no address is given)."""
    if not address and ray:
        address = os.environ.get("RAY_ADDRESS") or None
    if not ray and not address:
        if workers not in (None, 1):
            raise ResearchError(f"{workers} workers need Ray: add --ray (or --ray-address)")
        return InProcessExecutor()
    return RayExecutor(address, workers=workers, warmup=warmup)


def add_ray_arguments(parser: Any) -> None:
    """``--ray``, ``--ray-address``, ``--workers`` and ``--cache-dir`` for a research sub-command."""
    parser.add_argument("--ray", action="store_true", help="fan the evaluation out on Ray (a local instance)")
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster to use (host:port of its head; default: RAY_ADDRESS, else a local instance)",
    )
    parser.add_argument("--workers", type=_positive_int, help="Ray actors (default: one per CPU of the cluster)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help=f"finished batches, so an interrupted run resumes (default {DEFAULT_CACHE_DIR})",
    )
    parser.add_argument("--no-cache", action="store_true", help="evaluate every batch, read and write no cache")


def executor_from_args(args: Any, warmup: Callable[[], Any] | None = None) -> Executor:
    return executor_for(ray=bool(args.ray), address=args.ray_address, workers=args.workers, warmup=warmup)


def cache_from_args(args: Any) -> ResultCache | None:
    return None if args.no_cache else ResultCache.at(args.cache_dir)


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def format_progress(p: Progress) -> str:
    """``12/40 batches (3 cached), 3,072/10,240 sets, 4.1 s, ETA 9.6 s``."""
    eta = p.eta_s
    eta_text = "ETA -" if eta is None or not math.isfinite(eta) else f"ETA {eta:.1f} s"
    return (
        f"{p.done}/{p.total} batches ({p.cached} cached), {p.param_sets_done:,}/{p.param_sets_total:,} sets, "
        f"{p.elapsed_s:.1f} s, {eta_text}"
    )
