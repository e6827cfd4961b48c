"""The candle collector against the fake Upbit server (real wire format): paging, gaps, resume, 429."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio

from scripts.backtesting import collect_eth_2024, data_collector
from scripts.backtesting.data_collector import UpbitDataCollector
from src.api.upbit_client import UpbitClient
from src.backtesting.data_provider import cache_path, load_candle_csv
from tests.fakes.upbit_server import FakeUpbit
from tests.support.candles import make_candles

START = datetime(2024, 1, 1, tzinfo=UTC)
CANDLE_PATH = "/v1/candles/minutes/60"
# 450 hourly slots; bars missing around both 200-candle page boundaries and at the very end
SCRIPTED = make_candles(START, 450, "1h", seed=3, skip=(0, 199, 200, 201, 399, 449))


@pytest_asyncio.fixture
async def upbit() -> AsyncIterator[tuple[FakeUpbit, UpbitClient]]:
    async with FakeUpbit() as fake:
        fake.set_candles("KRW-BTC", "1h", SCRIPTED)
        client = UpbitClient(fake.base_url, backoff_seconds=0.01)
        try:
            yield fake, client
        finally:
            await client.close()


def assert_same_candles(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.index) == list(expected.index)
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), rtol=1e-12)


async def test_collects_every_candle_across_page_boundaries_and_gaps(
    tmp_path: Path, upbit: tuple[FakeUpbit, UpbitClient]
) -> None:
    # Given an empty cache and 444 scripted candles with gaps at the page boundaries
    fake, client = upbit
    end = START + pd.Timedelta(hours=450)
    # When the collector runs from the first slot to the end
    report = await UpbitDataCollector(client, tmp_path).collect("KRW-BTC", "1h", START, end)
    # Then the cache holds exactly the scripted candles (gaps kept as gaps), in 3 requests of 200
    cached = load_candle_csv(cache_path(tmp_path, "KRW-BTC", "1h"))
    assert_same_candles(cached, SCRIPTED)
    assert report.added == len(SCRIPTED) == 444
    requests = fake.requests_to(CANDLE_PATH)
    assert len(requests) == report.requests == 3
    assert all(r.params["count"] == ["200"] for r in requests)
    assert [r.params["to"][0] for r in requests] == [
        "2024-01-09T08:00:00Z",  # (START - 1h) + 201 bars: the window holds the 200 slots START..START+199h
        "2024-01-17T16:00:00Z",
        "2024-01-19T18:00:00Z",  # the end
    ]


async def test_resumes_from_the_cache_and_extends_the_head(
    tmp_path: Path, upbit: tuple[FakeUpbit, UpbitClient]
) -> None:
    fake, client = upbit
    collector = UpbitDataCollector(client, tmp_path)
    middle, end = START + pd.Timedelta(hours=250), START + pd.Timedelta(hours=450)
    # Given a first run that stopped at the middle, starting late
    await collector.collect("KRW-BTC", "1h", START + pd.Timedelta(hours=100), middle)
    first_requests = len(fake.requests_to(CANDLE_PATH))
    # When it runs again for the whole span
    report = await collector.collect("KRW-BTC", "1h", START, end)
    # Then it asked only for the missing head (backwards) and tail (forwards), and the file is complete
    cached = load_candle_csv(cache_path(tmp_path, "KRW-BTC", "1h"))
    assert_same_candles(cached, SCRIPTED)
    second = fake.requests_to(CANDLE_PATH)[first_requests:]
    assert report.requests == len(second) == 2  # one head page back, one tail page forward
    assert second[0].params["to"] == ["2024-01-05T04:00:00Z"]  # the first cached candle, exclusive


async def test_waits_out_rate_limits_and_resumes(tmp_path: Path, upbit: tuple[FakeUpbit, UpbitClient]) -> None:
    # Given the exchange answering 429 five times in a row (more than the client's own 3 attempts)
    fake, client = upbit
    fake.inject_rate_limit(times=5, path=CANDLE_PATH)
    collector = UpbitDataCollector(client, tmp_path, rate_limit_wait=0.01)
    # When collecting
    report = await collector.collect("KRW-BTC", "1h", START, START + pd.Timedelta(hours=450))
    # Then the collector waited, asked the same page again, and still got everything
    assert report.rate_limited >= 1
    assert_same_candles(load_candle_csv(cache_path(tmp_path, "KRW-BTC", "1h")), SCRIPTED)
    statuses = [r.status for r in fake.requests_to(CANDLE_PATH)]
    assert statuses.count(429) == 5


async def test_nothing_cached_and_no_start_is_an_error(tmp_path: Path, upbit: tuple[FakeUpbit, UpbitClient]) -> None:
    _, client = upbit
    with pytest.raises(Exception, match="give a start date"):
        await UpbitDataCollector(client, tmp_path).collect("KRW-BTC", "1h")


def test_command_line_collects_into_the_data_dir(tmp_path: Path) -> None:
    # Given a fake exchange with daily candles
    daily = make_candles(START, 30, "1d", seed=1)
    with FakeUpbit() as fake:
        fake.set_candles("KRW-ETH", "1d", daily)
        # When the script runs against it
        code = data_collector.main(
            [
                "--symbol", "KRW-ETH", "--timeframe", "1d", "--start", "2024-01-01", "--end", "2024-01-31",
                "--data-dir", str(tmp_path), "--base-url", fake.base_url,
            ]
        )  # fmt: skip
    # Then the daily file holds the 30 candles
    assert code == 0
    assert_same_candles(load_candle_csv(tmp_path / "daily" / "KRW-ETH_1d.csv"), daily)


def test_command_line_bad_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        data_collector.main(["--timeframe", "2h"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_collect_eth_2024_fetches_the_year(tmp_path: Path) -> None:
    # Given the fake exchange holding KRW-ETH daily candles from mid-2023 to mid-2025
    daily = make_candles(datetime(2023, 7, 1, tzinfo=UTC), 730, "1d", start_price=3_000_000.0, seed=5)
    with FakeUpbit() as fake:
        fake.set_candles("KRW-ETH", "1d", daily)
        code = collect_eth_2024.main(["--timeframe", "1d", "--data-dir", str(tmp_path), "--base-url", fake.base_url])
    # Then exactly the 366 days of 2024 are cached
    cached = load_candle_csv(tmp_path / "daily" / "KRW-ETH_1d.csv")
    assert code == 0
    assert len(cached) == 366
    assert cached.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert cached.index[-1] == pd.Timestamp("2024-12-31", tz="UTC")


async def test_the_candle_still_forming_is_not_cached(tmp_path: Path) -> None:
    # Given hourly candles up to and including the current (unfinished) hour
    this_hour = pd.Timestamp.now(tz="UTC").floor("h")
    candles = make_candles((this_hour - pd.Timedelta(hours=10)).to_pydatetime(), 11, "1h", seed=9)
    async with FakeUpbit() as fake:
        fake.set_candles("KRW-BTC", "1h", candles)
        client = UpbitClient(fake.base_url)
        try:
            # When collecting up to "now" (no end given)
            await UpbitDataCollector(client, tmp_path).collect("KRW-BTC", "1h", candles.index[0])
        finally:
            await client.close()
    # Then every finished hour is cached and the current one is not
    cached = load_candle_csv(cache_path(tmp_path, "KRW-BTC", "1h"))
    assert list(cached.index) == list(candles.index[:-1])
