"""Candle files: strict loading with file/line/reason, gaps reported, cache-first provider, quality tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.api.upbit_client import UpbitClient
from src.backtesting.data_provider import (
    HistoricalDataProvider,
    cache_path,
    find_gaps,
    load_candle_csv,
    merge_candles,
    save_candle_csv,
)
from src.backtesting.data_quality import clean_candles, quality_report
from src.exceptions import DataError
from tests.fakes.upbit_server import FakeUpbit
from tests.support.candles import make_candles

ROOT = Path(__file__).resolve().parents[1]
HEADER = "timestamp,open,high,low,close,volume,value\n"
GOOD_ROWS = [
    "2023-01-01T00:00:00+00:00,100,110,90,105,1.5,150\n",
    "2023-01-01T01:00:00+00:00,105,112,100,110,2.0,\n",
    "2023-01-01T02:00:00+00:00,110,115,108,112,0.5,56\n",
]


def write(tmp_path: Path, text: str, name: str = "candles.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_the_shared_format_with_utc_index(tmp_path: Path) -> None:
    df = load_candle_csv(write(tmp_path, HEADER + "".join(GOOD_ROWS)))
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "value"]
    assert str(df.index.tz) == "UTC"
    assert df.index.name == "timestamp"
    assert np.isnan(df["value"].iloc[1])
    assert df["close"].iloc[2] == 112.0


def test_value_column_is_optional(tmp_path: Path) -> None:
    text = "timestamp,open,high,low,close,volume\n2023-01-01T00:00:00Z,1,2,1,2,3\n"
    df = load_candle_csv(write(tmp_path, text))
    assert np.isnan(df["value"].iloc[0])


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("timestamp,open,high,low,close\n" + "2023-01-01T00:00:00Z,1,2,1,2\n", 1, "missing column(s) volume"),
        (HEADER + GOOD_ROWS[0] + "2023-01-01T01:00:00+00:00,105,abc,100,110,2.0,\n", 3, "unparsable high 'abc'"),
        (HEADER + GOOD_ROWS[0] + "yesterday,105,112,100,110,2.0,\n", 3, "unparsable timestamp 'yesterday'"),
        (HEADER + GOOD_ROWS[0] + GOOD_ROWS[0], 3, "duplicate timestamp"),
        (HEADER + GOOD_ROWS[1] + GOOD_ROWS[0], 3, "is before the previous row's"),
        (HEADER + GOOD_ROWS[0] + "2023-01-01T01:00:00+00:00,105,99,100,100,2.0,\n", 3, "high < low"),
        (HEADER + GOOD_ROWS[0] + "2023-01-01T01:00:00+00:00,105,112,100,110,2.0,xyz\n", 3, "unparsable value"),
    ],
)
def test_bad_files_name_file_line_and_reason(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError) as error:
        load_candle_csv(path)
    assert f"{path}:{line}:" in str(error.value)
    assert reason in str(error.value)
    assert error.value.context["line"] == line


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_candle_csv(tmp_path / "nope.csv")


def test_gaps_are_reported_not_filled() -> None:
    df = load_candle_csv(ROOT / "backtest_data" / "hourly" / "KRW-BTC_1h.csv")
    gaps = find_gaps(df, "1h")
    assert len(gaps) == 63  # as listed in ../shared/data/README.md (23 long + 40 short)
    hole = max(gaps, key=lambda g: g.missing_bars)
    assert hole.after == pd.Timestamp("2021-04-26 23:00", tz="UTC")
    assert hole.before == pd.Timestamp("2022-04-30 11:00", tz="UTC")
    assert len(df) == 44366  # nothing was added


def test_save_and_merge_roundtrip(tmp_path: Path) -> None:
    a = load_candle_csv(write(tmp_path, HEADER + "".join(GOOD_ROWS[:2]), "a.csv"))
    b = load_candle_csv(write(tmp_path, HEADER + "".join(GOOD_ROWS[1:]).replace(",110,2.0,", ",111,2.0,"), "b.csv"))
    merged = merge_candles(a, b)
    assert len(merged) == 3
    assert merged["close"].iloc[1] == 111.0  # the newer input wins on a shared timestamp
    save_candle_csv(merged, tmp_path / "out.csv")
    again = load_candle_csv(tmp_path / "out.csv")
    pd.testing.assert_frame_equal(again, merged, check_freq=False)
    assert (tmp_path / "out.csv").read_text().splitlines()[1].startswith("2023-01-01T00:00:00+00:00,100,")


def test_provider_reads_the_cache_and_slices(tmp_path: Path) -> None:
    provider = HistoricalDataProvider(ROOT / "backtest_data")
    df = provider.load_historical_data("KRW-ETH", "1d", "2023-01-01", "2023-02-01")
    assert len(df) == 31
    assert df.index[0] == pd.Timestamp("2023-01-01", tz="UTC")
    with pytest.raises(DataError, match="no cached candles for KRW-XRP 1h"):
        HistoricalDataProvider(tmp_path).load_historical_data("KRW-XRP", "1h")
    with pytest.raises(DataError, match="the data covers"):
        provider.load_historical_data("KRW-ETH", "1d", "2030-01-01")


async def test_provider_fetches_only_the_missing_tail_and_stores_it(tmp_path: Path) -> None:
    # Given 300 scripted hourly candles on the fake exchange and the first 100 already cached
    candles = make_candles(pd.Timestamp("2024-03-01", tz="UTC").to_pydatetime(), 300, "1h", seed=7)
    save_candle_csv(candles.iloc[:100], cache_path(tmp_path, "KRW-BTC", "1h"))
    async with FakeUpbit() as fake:
        fake.set_candles("KRW-BTC", "1h", candles)
        client = UpbitClient(fake.base_url)
        try:
            provider = HistoricalDataProvider(tmp_path, exchange=client)
            end = candles.index[-1] + pd.Timedelta(hours=1)
            df = await provider.load_historical_data_async("KRW-BTC", "1h", candles.index[0], end)
        finally:
            await client.close()
        requests = fake.requests_to("/v1/candles/minutes/60")
    # Then all 300 come back, the cache holds them, and only the 200 missing ones were asked for
    assert len(df) == 300
    np.testing.assert_allclose(df["close"].to_numpy(), candles["close"].to_numpy(), rtol=1e-12)
    assert len(load_candle_csv(cache_path(tmp_path, "KRW-BTC", "1h"))) == 300
    assert len(requests) == 1


def test_quality_report_and_cleaning(tmp_path: Path) -> None:
    # Given a file with one bad row, a duplicate, a row with high < low, and a gap
    text = (
        HEADER
        + GOOD_ROWS[0]
        + "oops,1,1,1,1,1,\n"
        + GOOD_ROWS[1]
        + GOOD_ROWS[1]
        + "2023-01-01T03:00:00+00:00,110,100,108,109,0.5,\n"
        + "2023-01-01T06:00:00+00:00,110,115,108,112,0,\n"
    )
    path = write(tmp_path, text)
    report = quality_report(path, "1h")
    assert report.unparsable_rows == [3]
    assert report.duplicate_timestamps == 1
    assert report.high_below_low == 1
    assert report.zero_volume_bars == 1
    assert report.gaps == 2
    assert not report.clean
    result = clean_candles(path, tmp_path / "clean.csv")
    assert result.dropped == {"unparsable": 1, "duplicate": 1, "inconsistent": 1}
    cleaned = load_candle_csv(tmp_path / "clean.csv")
    assert len(cleaned) == 3
    assert quality_report(tmp_path / "clean.csv", "1h").clean
