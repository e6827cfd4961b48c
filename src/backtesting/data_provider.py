"""Historical candles for backtests: the CSV cache first, the exchange only for what the cache lacks.

File format (the one of the bundled ``backtest_data/``): ``timestamp,open,high,low,close,volume[,value]``, one row per
candle, the timestamp being the candle's open time in ISO 8601 UTC. Cache layout:
``<data_dir>/{daily,hourly,minute}/<SYMBOL>_<timeframe>.csv`` (e.g. ``hourly/KRW-BTC_1h.csv``).

Bad files fail loudly with file, line and reason; gaps (missing candles) are reported, never filled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from src.api.interfaces import CANDLE_COLUMNS, MAX_CANDLES_PER_REQUEST, IExchangeClient
from src.backtesting.candle_cache import read_cached, write_cache
from src.domain.timeframes import Timeframe
from src.exceptions import DataError, RateLimited
from src.utils.logger import get_logger

log = get_logger(__name__)

REQUIRED_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PAGE_SIZE = MAX_CANDLES_PER_REQUEST


def timeframe_dir(timeframe: str) -> str:
    if not Timeframe.is_known(timeframe):
        raise DataError(f"unknown timeframe {timeframe!r}; expected one of {Timeframe.names()}")
    if timeframe in ("1d", "1w"):
        return "daily"
    if timeframe in ("1h", "4h"):
        return "hourly"
    return "minute"


def cache_path(data_dir: Path, symbol: str, timeframe: str) -> Path:
    return data_dir / timeframe_dir(timeframe) / f"{symbol}_{timeframe}.csv"


def _fail(path: Path | str, line: int | None, reason: str) -> DataError:
    where = f"{path}:{line}" if line is not None else str(path)
    return DataError(f"{where}: {reason}", file=str(path), line=line, reason=reason)


def load_candle_csv(path: Path | str, *, cache: bool = True) -> pd.DataFrame:
    """Read and validate one candle CSV; the frame has a UTC index named ``timestamp`` and float columns.

    With ``cache`` (the default) a valid binary copy of an earlier parse is used instead, and a fresh parse is
    kept as one (``src.backtesting.candle_cache``)."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, None, "file not found")
    if cache:
        cached = read_cached(path, lambda frame: check_candles(frame, path))
        if cached is not None:
            return cached
    stat = path.stat()
    df = _parse_fast(path)
    if df is None:  # a cell the fast parse cannot read, or a rule broken: the exact parse names file and line
        df = _parse_exact(path)
    if cache:
        write_cache(path, stat, df)
    return df


def _parse_exact(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise _fail(path, None, f"not a readable CSV ({exc})") from exc
    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if missing:
        raise _fail(path, 1, f"missing column(s) {', '.join(missing)}; expected {','.join(REQUIRED_COLUMNS)}[,value]")
    return validate_candles(raw, path)


def _missing_cells_empty(path: Path, missing: np.ndarray) -> bool:
    """Whether every ``value`` cell read as NaN was empty (a written ``nan`` is an error, as in the exact parse)."""
    if not missing.any():
        return True
    cells = pd.read_csv(path, usecols=["value"], dtype=str, keep_default_na=False)["value"].to_numpy()
    return bool((cells[missing] == "").all())


def _parse_fast(path: Path) -> pd.DataFrame | None:
    """One ``read_csv`` with the numeric columns read as floats, then the same rules as ``validate_candles``;
    None when anything is off (the exact parse then finds and names the problem)."""
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline().strip().split(",")
        if any(column not in header for column in REQUIRED_COLUMNS):
            return None
        numeric = [c for c in CANDLE_COLUMNS if c in header]
        raw = pd.read_csv(
            path,
            usecols=["timestamp", *numeric],
            dtype={"timestamp": str, **dict.fromkeys(numeric, np.float64)},
            keep_default_na=False,
            na_values={c: [""] for c in numeric},  # only an empty cell is missing (allowed in ``value`` only)
        )
        stamps = pd.to_datetime(raw["timestamp"], utc=True, errors="coerce", format="ISO8601")
    except (ValueError, TypeError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    if stamps.isna().any():
        return None
    prices = raw[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
    if not np.isfinite(prices).all():
        return None
    value = raw["value"].to_numpy(dtype=np.float64) if "value" in raw.columns else np.full(len(raw), np.nan)
    if np.isinf(value).any() or ("value" in raw.columns and not _missing_cells_empty(path, np.isnan(value))):
        return None
    columns = {c: raw[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
    df = pd.DataFrame({**columns, "value": value}, index=pd.DatetimeIndex(stamps, name="timestamp"))
    try:
        check_candles(df, path)
    except DataError:
        return None
    return df[list(CANDLE_COLUMNS)]


def validate_candles(raw: pd.DataFrame, source: Path | str = "<frame>") -> pd.DataFrame:
    """Parse string cells and check every rule; line numbers count the header as line 1."""
    line_of = np.arange(len(raw)) + 2
    stamps = pd.to_datetime(raw["timestamp"], utc=True, errors="coerce", format="ISO8601")
    bad = stamps.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise _fail(source, int(line_of[row]), f"unparsable timestamp {raw['timestamp'].iloc[row]!r}")
    columns: dict[str, np.ndarray] = {}
    for column in ("open", "high", "low", "close", "volume"):
        values = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise _fail(source, int(line_of[row]), f"unparsable {column} {raw[column].iloc[row]!r}")
        columns[column] = values
    if "value" in raw.columns:
        cells = raw["value"].replace("", np.nan)
        columns["value"] = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64)
        bad = cells.notna().to_numpy() & np.isnan(columns["value"])
        if bad.any():
            row = int(np.argmax(bad))
            raise _fail(source, int(line_of[row]), f"unparsable value {raw['value'].iloc[row]!r}")
    else:
        columns["value"] = np.full(len(raw), np.nan)
    df = pd.DataFrame(columns, index=pd.DatetimeIndex(stamps, name="timestamp"))
    check_candles(df, source, line_of)
    return df[list(CANDLE_COLUMNS)]


def check_candles(df: pd.DataFrame, source: Path | str = "<frame>", line_of: np.ndarray | None = None) -> None:
    """Ordering and price sanity: strictly increasing timestamps, high >= low, prices > 0, volume >= 0."""
    lines = line_of if line_of is not None else np.arange(len(df)) + 2
    stamps = df.index.as_unit("ns").asi8
    steps = np.diff(stamps)
    if (steps == 0).any():
        row = int(np.argmax(steps == 0)) + 1
        raise _fail(source, int(lines[row]), f"duplicate timestamp {df.index[row].isoformat()}")
    if (steps < 0).any():
        row = int(np.argmax(steps < 0)) + 1
        raise _fail(source, int(lines[row]), f"timestamp {df.index[row].isoformat()} is before the previous row's")
    checks = (
        (df["high"].to_numpy() < df["low"].to_numpy(), "high < low"),
        ((df[["open", "high", "low", "close"]].to_numpy() <= 0).any(axis=1), "price <= 0"),
        (df["volume"].to_numpy() < 0, "volume < 0"),
    )
    for bad, reason in checks:
        if bad.any():
            row = int(np.argmax(bad))
            raise _fail(source, int(lines[row]), f"{reason} at {df.index[row].isoformat()}")


@dataclass(frozen=True, slots=True)
class Gap:
    after: pd.Timestamp  # the last candle before the gap
    before: pd.Timestamp  # the first candle after it
    missing_bars: int

    def __str__(self) -> str:
        return f"{self.after.isoformat()} -> {self.before.isoformat()} ({self.missing_bars} bars missing)"


def find_gaps(df: pd.DataFrame, timeframe: str) -> list[Gap]:
    """Every place where consecutive candles are more than one bar apart (weeks: 7 days)."""
    step = Timeframe(timeframe).seconds * 1_000_000_000
    stamps = df.index.as_unit("ns").asi8
    diffs = np.diff(stamps)
    rows = np.nonzero(diffs > step)[0]
    return [Gap(df.index[i], df.index[i + 1], int(diffs[i] // step) - 1) for i in rows]


def merge_candles(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union of two candle frames, sorted; where both hold a timestamp the newer fetch (``new``) wins."""
    if existing.empty:
        return new.sort_index()
    if new.empty:
        return existing.sort_index()
    merged = pd.concat([existing, new])
    merged = merged[~merged.index.duplicated(keep="last")].sort_index()
    merged.index.name = "timestamp"
    return merged


def save_candle_csv(df: pd.DataFrame, path: Path) -> None:
    """Write in the shared format (UTC ISO timestamps with +00:00; empty ``value`` cells where unknown)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame(index=pd.Index([ts.isoformat() for ts in df.index.tz_convert(UTC)], name="timestamp"))
    for column in CANDLE_COLUMNS:
        # shortest round-trip text of each float (nothing is lost), integers without ".0", NaN as empty
        text = pd.Series(df[column].to_numpy(dtype=np.float64), index=out.index).map(repr)
        out[column] = text.str.replace(r"\.0$", "", regex=True).replace("nan", "")
    tmp = path.with_suffix(".csv.tmp")
    out.to_csv(tmp)
    tmp.replace(path)


def to_utc(value: datetime | str | pd.Timestamp | None) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


@dataclass(slots=True)
class SyncReport:
    symbol: str
    timeframe: str
    requests: int = 0
    added: int = 0
    rate_limited: int = 0


OnPage = Callable[[SyncReport, pd.Timestamp], None]


async def _get_page(
    exchange: IExchangeClient,
    symbol: str,
    timeframe: str,
    to: pd.Timestamp,
    report: SyncReport,
    rate_limit_wait: float,
    max_rate_limit_retries: int,
) -> pd.DataFrame:
    """One request of 200 candles strictly before ``to``; a ``RateLimited`` answer waits and retries."""
    retries = 0
    while True:
        try:
            page = await exchange.get_candles(symbol, timeframe, count=PAGE_SIZE, to=to.to_pydatetime())
        except RateLimited:
            retries += 1
            report.rate_limited += 1
            if retries > max_rate_limit_retries:
                raise
            wait = rate_limit_wait * retries
            log.warning("candles.rate_limited", symbol=symbol, timeframe=timeframe, wait_seconds=wait)
            await asyncio.sleep(wait)
            continue
        report.requests += 1
        return page.sort_index()


async def sync_candles(
    exchange: IExchangeClient,
    path: Path,
    symbol: str,
    timeframe: str,
    start: datetime | str | None,
    end: datetime | str | None = None,
    *,
    on_page: OnPage | None = None,
    rate_limit_wait: float = 1.0,
    max_rate_limit_retries: int = 10,
    save_every_seconds: float = 5.0,
) -> SyncReport:
    """Extend the cache file at ``path`` to cover ``[start, end)``, saving it every ``save_every_seconds`` and
    when the run ends, normally or not (rewriting a large file after each 200-candle page made long collections
    quadratic: minutes per page at the end of a year of minute candles). A hard kill loses at most the pages of
    the last ``save_every_seconds``; the next run fetches them again.

    The head (before the first cached candle) is paged backwards with ``to = first cached``; the tail is
    paged forwards with ``to = cursor + 201 bars`` (each window holds at most 200 slots, so nothing is
    skipped). The file always holds one contiguous fetched stretch, so an interrupted run resumes where
    it stopped. Gaps inside the data are left as they are (Upbit emits no candle without trades), and
    the candle still forming (open time later than now minus one bar) is never stored.
    """
    step = pd.Timedelta(seconds=Timeframe(timeframe).seconds)
    report = SyncReport(symbol, timeframe)
    # File I/O is synchronous on purpose: one small CSV, written between requests.
    loaded = load_candle_csv(path) if path.is_file() else None  # noqa: ASYNC240
    start_ts = to_utc(start)
    # Only finished candles are stored: one whose open time is later than now - step is still forming.
    last_finished_end = pd.Timestamp(datetime.now(UTC)).floor("s") - step + pd.Timedelta(seconds=1)
    end_ts = min(to_utc(end) or last_finished_end, last_finished_end)
    cached: pd.DataFrame
    if loaded is None or loaded.empty:
        if start_ts is None:
            raise DataError(f"nothing cached for {symbol} {timeframe} at {path}: give a start date to fetch from")
        cached = _empty_candles()
        cursor = start_ts - step
    else:
        cached = loaded
        cursor = cached.index[-1]

    async def page(to: pd.Timestamp) -> pd.DataFrame:
        return await _get_page(exchange, symbol, timeframe, to, report, rate_limit_wait, max_rate_limit_retries)

    saved_at = time.monotonic()
    unsaved = False

    def save() -> None:
        nonlocal saved_at, unsaved
        save_candle_csv(cached, path)
        saved_at, unsaved = time.monotonic(), False

    def store(new: pd.DataFrame, position: pd.Timestamp) -> None:
        nonlocal cached, unsaved
        before = len(cached)
        cached = merge_candles(cached, new)
        check_candles(cached, path)
        report.added += len(cached) - before
        unsaved = True
        if time.monotonic() - saved_at >= save_every_seconds:
            save()
        if on_page is not None:
            on_page(report, position)

    try:
        if start_ts is not None and len(cached) and start_ts < cached.index[0]:
            while start_ts < cached.index[0]:
                got = await page(cached.index[0])
                fresh = got[(got.index >= start_ts) & (got.index < cached.index[0])]
                if fresh.empty:  # reached the start, or the exchange has nothing older
                    break
                store(fresh, fresh.index[0])
                if len(got) < PAGE_SIZE:
                    break
        while cursor + step < end_ts:
            to = min(cursor + (PAGE_SIZE + 1) * step, end_ts)
            got = await page(to)
            fresh = got[(got.index > cursor) & (got.index < end_ts)]
            if start_ts is not None:
                fresh = fresh[fresh.index >= start_ts]
            if not fresh.empty:
                store(fresh, to)
            elif on_page is not None:
                on_page(report, to)
            cursor = to - step
    finally:  # normally or not (a rate limit given up on, Ctrl-C): what was fetched is kept
        if unsaved:
            save()
    log.info("candles.synced", symbol=symbol, timeframe=timeframe, added=report.added, requests=report.requests)
    return report


def _empty_candles() -> pd.DataFrame:
    return pd.DataFrame(
        {column: pd.Series(dtype=np.float64) for column in CANDLE_COLUMNS},
        index=pd.DatetimeIndex([], tz=UTC, name="timestamp"),
    )


class HistoricalDataProvider:
    """Cache-first candle loader; with an exchange client it fetches only the missing head or tail."""

    def __init__(self, data_dir: Path, exchange: IExchangeClient | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.exchange = exchange

    def path_for(self, symbol: str, timeframe: str) -> Path:
        return cache_path(self.data_dir, symbol, timeframe)

    def load_file(
        self, path: Path | str, start: datetime | str | None = None, end: datetime | str | None = None
    ) -> pd.DataFrame:
        return self._slice(load_candle_csv(path), start, end, str(path))

    def load_historical_data(
        self,
        symbol: str,
        timeframe: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> pd.DataFrame:
        """Candles with ``start <= open time < end``. Fetches the uncovered part when a client is set."""
        if self.exchange is not None:
            return asyncio.run(self.load_historical_data_async(symbol, timeframe, start, end))
        path = self.path_for(symbol, timeframe)
        if not path.is_file():
            raise DataError(
                f"no cached candles for {symbol} {timeframe} at {path}; collect them with "
                f"`python -m scripts.backtesting.data_collector --symbol {symbol} --timeframe {timeframe}`",
                file=str(path),
            )
        return self._report_gaps(
            self._slice(load_candle_csv(path), start, end, f"{symbol} {timeframe}"), symbol, timeframe
        )

    async def load_historical_data_async(
        self,
        symbol: str,
        timeframe: str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> pd.DataFrame:
        path = self.path_for(symbol, timeframe)
        if self.exchange is not None:
            await sync_candles(self.exchange, path, symbol, timeframe, start, end)
        if not path.is_file():
            raise DataError(f"no candles for {symbol} {timeframe}: nothing cached at {path} and nothing fetched")
        return self._report_gaps(
            self._slice(load_candle_csv(path), start, end, f"{symbol} {timeframe}"), symbol, timeframe
        )

    @staticmethod
    def _report_gaps(df: pd.DataFrame, symbol: str, timeframe: str) -> pd.DataFrame:
        """Gaps are logged (and left as they are); ``find_gaps`` lists them."""
        gaps = find_gaps(df, timeframe)
        if gaps:
            largest = max(gaps, key=lambda gap: gap.missing_bars)
            log.info("candles.gaps", symbol=symbol, timeframe=timeframe, gaps=len(gaps), largest=str(largest))
        return df

    def _slice(
        self, df: pd.DataFrame, start: datetime | str | None, end: datetime | str | None, what: str
    ) -> pd.DataFrame:
        start_ts, end_ts = to_utc(start), to_utc(end)
        if start_ts is not None and end_ts is not None and start_ts >= end_ts:
            raise DataError(f"start {start_ts.isoformat()} is not before end {end_ts.isoformat()}")
        mask = np.ones(len(df), dtype=bool)
        if start_ts is not None:
            mask &= df.index >= start_ts
        if end_ts is not None:
            mask &= df.index < end_ts
        sliced = df[mask]
        if sliced.empty:
            span = f"{df.index[0].isoformat()} .. {df.index[-1].isoformat()}" if len(df) else "nothing"
            raise DataError(f"no {what} candles in the requested range; the data covers {span}")
        return sliced
