"""A validated binary copy of each candle CSV, so a second backtest skips parsing and validation.

``load_candle_csv`` parses and validates a CSV once and keeps what it got as an uncompressed ``.npz`` (numpy's
own format: no new dependency), keyed by the CSV's size and modification time (nanoseconds) and a format
version. The next load of the same file reads the arrays back (tens of milliseconds for 300,000 bars instead of
about a second) after checking:

- the key: the CSV's current size and mtime and ``FORMAT_VERSION`` equal the stored ones (any change to the
  CSV, even a ``touch``, means a rebuild);
- the archive: numpy reads each member through zip's CRC-32 check, so a truncated or damaged file raises;
- the content: the arrays' names, dtypes and lengths, and the same ordering and price rules the CSV went
  through (``check_candles``).

Anything wrong means the cache is ignored (never trusted, never an error): the CSV is parsed and the cache
written again. Writes go to a temporary file in the same directory and are renamed over the old one (atomic on
POSIX), so a reader never sees half a file.

Where: beside the CSV as ``.<name>.npz`` (``hourly/.KRW-BTC_1h.csv.npz``, hidden, never matched by ``*.csv``);
when that directory is not writable (an installed package, a read-only mount), under
``<PROJECT_ROOT>/data/cache/candles/`` with a name made from a hash of the CSV's resolved path. A cache that
cannot be written anywhere only costs the next run its parse.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from src.api.interfaces import CANDLE_COLUMNS
from src.config.env import PROJECT_ROOT
from src.exceptions import DataError
from src.utils.logger import get_logger

log = get_logger(__name__)

FORMAT_VERSION = 1
SUFFIX = ".npz"
_KEY = "key"  # int64[4]: format version, CSV size, CSV mtime (ns), bars
_STAMPS = "timestamp"  # datetime64 (naive, UTC) in the unit the CSV parse gave


def fallback_dir() -> Path:
    return PROJECT_ROOT / "data" / "cache" / "candles"


def _key(stat: os.stat_result, bars: int) -> np.ndarray:
    return np.array([FORMAT_VERSION, stat.st_size, stat.st_mtime_ns, bars], dtype=np.int64)


def cache_paths(csv: Path) -> tuple[Path, Path]:
    """Beside the CSV, and the fallback under the project's data directory."""
    beside = csv.parent / f".{csv.name}{SUFFIX}"
    digest = hashlib.sha256(str(csv.resolve()).encode()).hexdigest()[:16]
    return beside, fallback_dir() / f"{csv.name}.{digest}{SUFFIX}"


def read_cached(csv: Path, check: Callable[[pd.DataFrame], None]) -> pd.DataFrame | None:
    """The candles of ``csv`` from a valid cache, or None (no cache, stale, damaged or failing ``check``)."""
    try:
        stat = csv.stat()
    except OSError:
        return None
    for path in cache_paths(csv):
        frame = _read(path, stat, check)
        if frame is not None:
            return frame
    return None


def _read(path: Path, stat: os.stat_result, check: Callable[[pd.DataFrame], None]) -> pd.DataFrame | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            if names != {_KEY, _STAMPS, *CANDLE_COLUMNS}:
                raise ValueError(f"members {sorted(names)}")
            key = data[_KEY]
            bars = int(key[3]) if key.shape == (4,) else -1
            if key.dtype != np.int64 or not np.array_equal(key, _key(stat, bars)):
                return None  # stale: the CSV changed (or another format version wrote it)
            stamps = data[_STAMPS]
            columns = {name: data[name] for name in CANDLE_COLUMNS}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("candles.cache_ignored", cache=str(path), reason=f"{type(exc).__name__}: {exc}")
        return None
    arrays = (stamps, *columns.values())
    if stamps.dtype.kind != "M" or any(a.dtype != np.float64 for a in columns.values()):
        log.warning("candles.cache_ignored", cache=str(path), reason="unexpected dtypes")
        return None
    if any(a.shape != (bars,) for a in arrays):
        log.warning("candles.cache_ignored", cache=str(path), reason="unexpected lengths")
        return None
    index = pd.DatetimeIndex(stamps, name="timestamp").tz_localize("UTC")
    frame = pd.DataFrame(columns, index=index)
    try:
        check(frame)
    except DataError as exc:
        log.warning("candles.cache_ignored", cache=str(path), reason=exc.message)
        return None
    return frame


def write_cache(csv: Path, stat: os.stat_result, frame: pd.DataFrame) -> Path | None:
    """Keep ``frame`` (parsed from ``csv`` when it had ``stat``) as its cache; the path written, or None.

    Nothing is written when the CSV changed while it was parsed (its stat differs now)."""
    try:
        now = csv.stat()
    except OSError:
        return None
    if (now.st_size, now.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
        return None
    arrays = {
        _KEY: _key(stat, len(frame)),
        _STAMPS: np.ascontiguousarray(frame.index.tz_convert("UTC").tz_localize(None).to_numpy()),
        **{name: np.ascontiguousarray(frame[name].to_numpy(dtype=np.float64)) for name in CANDLE_COLUMNS},
    }
    for path in cache_paths(csv):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError:
            continue  # not writable here: try the fallback
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **arrays)  # type: ignore[arg-type]
            os.chmod(tmp, 0o644)  # as readable as the CSV beside it (mkstemp makes it 0600)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("candles.cache_not_written", cache=str(path), reason=str(exc))
            Path(tmp).unlink(missing_ok=True)
            continue
        return path
    return None
