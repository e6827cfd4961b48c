"""The collector saves its file every few seconds and when the run ends, normally or not: a run that fails
midway (a rate limit given up on) keeps every page fetched before, and the next run resumes after them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from src.backtesting.data_provider import load_candle_csv, sync_candles
from src.exceptions import RateLimited
from tests.support.candles import make_candles

START = datetime(2024, 1, 1, tzinfo=UTC)
CANDLES = make_candles(START, 1000, "1h", seed=4)


class Exchange:
    """Pages of the scripted candles; after ``fail_after`` pages every request is rate limited."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.requests = 0

    async def get_candles(
        self, symbol: str, timeframe: str, count: int = 200, to: datetime | None = None
    ) -> pd.DataFrame:
        if self.fail_after is not None and self.requests >= self.fail_after:
            raise RateLimited("429")
        self.requests += 1
        before = CANDLES[CANDLES.index < pd.Timestamp(to)] if to is not None else CANDLES
        return before.iloc[-count:]


async def test_a_run_that_fails_midway_keeps_what_it_fetched_and_the_next_resumes(tmp_path: Path) -> None:
    path = tmp_path / "KRW-BTC_1h.csv"
    end = START + pd.Timedelta(hours=1000)
    # Given a run that gets 3 pages and is then rate limited for good (no save was due in between)
    with pytest.raises(RateLimited):
        await sync_candles(
            Exchange(fail_after=3), path, "KRW-BTC", "1h", START, end,  # type: ignore[arg-type]
            rate_limit_wait=0.0, max_rate_limit_retries=1, save_every_seconds=3600,
        )  # fmt: skip
    # Then the file holds the 600 candles of those pages
    kept = load_candle_csv(path)
    assert len(kept) == 600
    assert kept.index[0] == CANDLES.index[0]
    # And the next run fetches only the rest
    exchange = Exchange()
    report = await sync_candles(exchange, path, "KRW-BTC", "1h", START, end)  # type: ignore[arg-type]
    assert report.added == 400
    assert exchange.requests == 2
    assert len(load_candle_csv(path)) == 1000
