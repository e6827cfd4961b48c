"""Candle data quality: a validation report, and a cleaner for files that fail the strict loader.

The strict loader (``load_candle_csv``) refuses a bad file and names the first problem. The report
lists every problem of a file it can parse; the cleaner drops what cannot be trusted (unparsable rows,
duplicates, rows with high < low or open/close outside the bar's range) and says what it dropped.
Nothing is ever invented: gaps stay gaps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.api.interfaces import CANDLE_COLUMNS
from src.backtesting.data_provider import REQUIRED_COLUMNS, find_gaps, save_candle_csv
from src.exceptions import DataError


@dataclass(slots=True)
class QualityReport:
    file: str
    rows: int
    start: str | None
    end: str | None
    unparsable_rows: list[int] = field(default_factory=list)  # file line numbers
    duplicate_timestamps: int = 0
    out_of_order_rows: int = 0
    high_below_low: int = 0
    open_close_outside_range: int = 0
    non_positive_prices: int = 0
    negative_volume: int = 0
    zero_volume_bars: int = 0
    missing_value_cells: int = 0
    gaps: int = 0
    missing_bars: int = 0
    largest_gap: str | None = None
    large_moves: int = 0  # |close-to-close| above the threshold

    @property
    def clean(self) -> bool:
        return not (
            self.unparsable_rows
            or self.duplicate_timestamps
            or self.out_of_order_rows
            or self.high_below_low
            or self.open_close_outside_range
            or self.non_positive_prices
            or self.negative_volume
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}


def _read_loose(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """Parse what can be parsed; return the frame in file order and the line numbers that could not be."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {', '.join(missing)}", file=str(path), line=1)
    stamps = pd.to_datetime(raw["timestamp"], utc=True, errors="coerce", format="ISO8601")
    values = {c: pd.to_numeric(raw[c], errors="coerce") for c in ("open", "high", "low", "close", "volume")}
    value = pd.to_numeric(raw["value"].replace("", np.nan), errors="coerce") if "value" in raw else np.nan
    df = pd.DataFrame({**values, "value": value})
    df.index = pd.DatetimeIndex(stamps, name="timestamp")
    ok = stamps.notna().to_numpy() & np.isfinite(df[list(values)].to_numpy()).all(axis=1)
    bad_lines = (np.nonzero(~ok)[0] + 2).tolist()
    return df[ok], bad_lines


def quality_report(path: Path | str, timeframe: str, large_move_pct: float = 20.0) -> QualityReport:
    path = Path(path)
    df, bad_lines = _read_loose(path)
    report = QualityReport(str(path), len(df), None, None, unparsable_rows=bad_lines)
    if df.empty:
        return report
    stamps = df.index.as_unit("ns").asi8
    report.out_of_order_rows = int((np.diff(stamps) < 0).sum())
    report.duplicate_timestamps = int(df.index.duplicated().sum())
    o, h, lo, c = (df[k].to_numpy() for k in ("open", "high", "low", "close"))
    report.high_below_low = int((h < lo).sum())
    report.open_close_outside_range = int(((np.maximum(o, c) > h) | (np.minimum(o, c) < lo)).sum())
    report.non_positive_prices = int((df[["open", "high", "low", "close"]].to_numpy() <= 0).any(axis=1).sum())
    report.negative_volume = int((df["volume"] < 0).sum())
    report.zero_volume_bars = int((df["volume"] == 0).sum())
    report.missing_value_cells = int(df["value"].isna().sum())
    ordered = df[~df.index.duplicated(keep="last")].sort_index()
    report.start, report.end = ordered.index[0].isoformat(), ordered.index[-1].isoformat()
    gaps = find_gaps(ordered, timeframe)
    report.gaps = len(gaps)
    report.missing_bars = sum(g.missing_bars for g in gaps)
    if gaps:
        report.largest_gap = str(max(gaps, key=lambda g: g.missing_bars))
    moves = np.abs(np.diff(ordered["close"].to_numpy()) / ordered["close"].to_numpy()[:-1]) * 100
    report.large_moves = int((moves > large_move_pct).sum())
    return report


@dataclass(slots=True)
class CleaningResult:
    rows_in: int
    rows_out: int
    dropped: dict[str, int]


def clean_candles(path: Path | str, out: Path | str) -> CleaningResult:
    """Write a cleaned copy: sorted, de-duplicated (last row wins), untrustworthy rows dropped, gaps kept."""
    path, out = Path(path), Path(out)
    df, bad_lines = _read_loose(path)
    rows_in = len(df) + len(bad_lines)
    dropped = {"unparsable": len(bad_lines)}
    before = len(df)
    df = df[~df.index.duplicated(keep="last")]
    dropped["duplicate"] = before - len(df)
    df = df.sort_index()
    o, h, lo, c = (df[k].to_numpy() for k in ("open", "high", "low", "close"))
    broken = (h < lo) | (np.maximum(o, c) > h) | (np.minimum(o, c) < lo) | (np.minimum.reduce([o, h, lo, c]) <= 0)
    broken |= df["volume"].to_numpy() < 0
    dropped["inconsistent"] = int(broken.sum())
    df = df[~broken]
    save_candle_csv(df[list(CANDLE_COLUMNS)], out)
    return CleaningResult(rows_in, len(df), dropped)
