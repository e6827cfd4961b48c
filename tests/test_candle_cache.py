"""The binary cache of candle CSVs (src/backtesting/candle_cache.py), and the JSON report written from it.

Given a candle CSV, the first load parses it and keeps a validated .npz beside it; later loads read that copy,
which must give exactly the frame the CSV parse gives, be rebuilt when the CSV changes, be ignored (and
replaced) when damaged, and fall back to the project's data directory when the CSV's directory is read-only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.backtesting import candle_cache
from src.backtesting.data_provider import load_candle_csv, save_candle_csv
from src.exceptions import DataError

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "backtest_data" / "daily" / "KRW-BTC_1d.csv"


def candles(bars: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50_000_000 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    index = pd.date_range("2024-01-01", periods=bars, freq="h", tz="UTC", name="timestamp")
    value = close * 2.0
    value[::7] = np.nan  # unknown value cells are written empty
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": rng.uniform(1, 5, bars),
            "value": value,
        },
        index=index,
    )


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "KRW-BTC_1h.csv"
    save_candle_csv(candles(), path)
    return path


def beside(path: Path) -> Path:
    return candle_cache.cache_paths(path)[0]


def exact_parse(path: Path) -> pd.DataFrame:
    return load_candle_csv(path, cache=False)


def test_first_load_writes_the_cache_and_the_second_reads_it_back_identical(csv: Path) -> None:
    # Given a CSV never loaded
    assert not beside(csv).exists()
    # When it is loaded twice
    first = load_candle_csv(csv)
    assert beside(csv).is_file()
    second = load_candle_csv(csv)
    # Then both equal the plain CSV parse exactly (values, NaN cells, index unit and time zone, names)
    expected = exact_parse(csv)
    pd.testing.assert_frame_equal(first, expected, check_exact=True)
    pd.testing.assert_frame_equal(second, expected, check_exact=True)
    assert second.index.name == "timestamp"
    assert str(second.index.tz) == "UTC"


def test_the_cache_is_what_the_second_load_reads(csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_candle_csv(csv)

    def no_parse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the CSV was parsed although a valid cache exists")

    monkeypatch.setattr(pd, "read_csv", no_parse)
    assert len(load_candle_csv(csv)) == 300


def test_bundled_files_load_identically_through_the_cache(tmp_path: Path) -> None:
    copy = tmp_path / BUNDLED.name
    copy.write_bytes(BUNDLED.read_bytes())
    load_candle_csv(copy)
    pd.testing.assert_frame_equal(load_candle_csv(copy), exact_parse(BUNDLED), check_exact=True)


def test_a_changed_csv_rebuilds_the_cache(csv: Path) -> None:
    load_candle_csv(csv)
    # When the CSV is rewritten with other candles (a different size and mtime)
    save_candle_csv(candles(200, seed=9), csv)
    # Then the next load gives the new candles and the cache holds them
    loaded = load_candle_csv(csv)
    assert len(loaded) == 200
    pd.testing.assert_frame_equal(loaded, exact_parse(csv), check_exact=True)
    pd.testing.assert_frame_equal(load_candle_csv(csv), loaded, check_exact=True)


def test_a_touched_csv_of_the_same_size_is_parsed_again(csv: Path) -> None:
    load_candle_csv(csv)
    # When one price changes in place, keeping the file's size, and only the mtime says so
    text = csv.read_text()
    row = text.splitlines()[5]
    changed = row.replace(row.split(",")[4][:3], str(int(row.split(",")[4][:3]) + 1), 1)
    csv.write_text(text.replace(row, changed))
    stat = csv.stat()
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert csv.stat().st_size == len(text.encode())
    # Then the load reflects the edit
    pd.testing.assert_frame_equal(load_candle_csv(csv), exact_parse(csv), check_exact=True)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.write_bytes(b"not a zip at all"),  # garbage
        lambda p: p.write_bytes(_flip_byte(p.read_bytes())),  # a flipped byte inside an array: CRC mismatch
    ],
    ids=["truncated", "garbage", "flipped-byte"],
)
def test_a_damaged_cache_is_ignored_and_replaced(csv: Path, damage) -> None:
    load_candle_csv(csv)
    damage(beside(csv))
    # When the CSV is loaded with a damaged cache beside it
    loaded = load_candle_csv(csv)
    # Then the CSV's own candles come back and a good cache replaces the damaged one
    pd.testing.assert_frame_equal(loaded, exact_parse(csv), check_exact=True)
    assert candle_cache.read_cached(csv, lambda _frame: None) is not None


def _flip_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def test_a_cache_breaking_the_candle_rules_is_not_trusted(csv: Path) -> None:
    # Given a cache whose arrays were altered (valid zip, right key) so high < low on one bar
    load_candle_csv(csv)
    with np.load(beside(csv)) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["high"][10] = arrays["low"][10] / 2
    with beside(csv).open("wb") as out:
        np.savez(out, **arrays)
    # Then the load ignores it
    pd.testing.assert_frame_equal(load_candle_csv(csv), exact_parse(csv), check_exact=True)


def test_a_bad_csv_is_refused_with_its_line_and_writes_no_cache(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00+00:00,1,2,0.5,1.5,3\n"
                    "2024-01-01T01:00:00+00:00,1,abc,0.5,1.5,3\n")  # fmt: skip
    with pytest.raises(DataError, match=r"bad.csv:3: unparsable high 'abc'"):
        load_candle_csv(path)
    assert not beside(path).exists()


def test_a_written_nan_in_value_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.csv"
    path.write_text("timestamp,open,high,low,close,volume,value\n2024-01-01T00:00:00+00:00,1,2,0.5,1.5,3,\n"
                    "2024-01-01T01:00:00+00:00,1,2,0.5,1.5,3,nan\n")  # fmt: skip
    with pytest.raises(DataError, match=r"nan.csv:3: unparsable value 'nan'"):
        load_candle_csv(path)


def test_a_read_only_data_directory_uses_the_project_cache(
    tmp_path: Path, csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the CSV's directory is not writable (an installed package's data) and a project cache directory
    fallback = tmp_path / "project" / "data" / "cache" / "candles"
    monkeypatch.setattr(candle_cache, "fallback_dir", lambda: fallback)
    real_mkstemp = candle_cache.tempfile.mkstemp

    def read_only_beside(*args: object, dir: Path, **kwargs: object):
        if Path(dir) == csv.parent:
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(candle_cache.tempfile, "mkstemp", read_only_beside)
    # When it is loaded twice
    first = load_candle_csv(csv)
    # Then the cache lives in the project's directory, and the second load reads it
    assert not beside(csv).exists()
    written = list(fallback.glob("*.npz"))
    assert len(written) == 1
    assert written[0].name.startswith(csv.name)
    pd.testing.assert_frame_equal(candle_cache.read_cached(csv, lambda _f: None), first, check_exact=True)


def test_a_symlinked_csv_is_cached_beside_the_link(tmp_path: Path, csv: Path) -> None:
    link_dir = tmp_path / "linked"
    link_dir.mkdir()
    link = link_dir / csv.name
    link.symlink_to(csv)
    pd.testing.assert_frame_equal(load_candle_csv(link), exact_parse(csv), check_exact=True)
    assert beside(link).is_file()
    pd.testing.assert_frame_equal(load_candle_csv(link), exact_parse(csv), check_exact=True)


@pytest.mark.parametrize("strategy", ["volatility_breakout", "rule_breakout"])
def test_the_json_report_is_the_result_as_json(tmp_path: Path, strategy: str) -> None:
    # Given a backtest with many trades (levels set for the rule strategy, none for the breakout)
    from src.backtesting.backtester import Backtester
    from src.backtesting.engine import EngineConfig
    from src.backtesting.runner import report_json
    from src.strategy.registry import build_strategy

    result = Backtester(EngineConfig(quick_filter=False)).run(candles(3000), build_strategy(strategy, {}, None))
    assert len(result.trades) > 10
    # When the report is written the fast way
    text = report_json(result.summary_dict(), result.trade_json_lines())
    # Then it reads back as exactly the result's dict, in the same order, one trade a line
    assert json.loads(text) == result.to_dict()
    assert list(json.loads(text)) == list(result.to_dict())
    assert text.count("\n    {") == len(result.trades)
    assert report_json({"a": 1}, []) == '{\n  "a": 1,\n  "trades": []\n}'
