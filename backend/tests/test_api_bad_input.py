"""Bad input gets a clear answer, never a 500: out-of-range times and cursors are 422 naming the field, and
writes that pile up on SQLite queue (or get 503 with Retry-After) instead of timing out into a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections import Counter

import httpx
import pytest
from sqlalchemy.engine import make_url

from backend.app.api import deps
from backend.tests.conftest import Seeder, app_of, at

LISTS = ["/api/v1/trades", "/api/v1/orders", "/api/v1/ai/decisions", "/api/v1/portfolio/history"]
RANGED = [*LISTS, "/api/v1/trades/statistics/summary"]


def _cursor(created_at: str, row_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, row_id]).encode()).decode().rstrip("=")


BAD_CURSORS = [
    _cursor("0001-01-01T00:00:00+05:00", 1),  # before year 1 in UTC: no UTC form at all
    _cursor("9999-12-31T23:59:59-05:00", 1),  # after year 9999 in UTC
    _cursor("0001-01-01T00:00:00+00:00", 1),
    _cursor("9999-12-31T23:59:59+00:00", 1),
    _cursor("2026-01-05T12:00:00+00:00", 2**64),  # above 64 bits
    _cursor("2026-01-05T12:00:00+00:00", 2**63),
    _cursor("2026-01-05T12:00:00+00:00", 2**31),  # above the INTEGER primary keys
    _cursor("2026-01-05T12:00:00+00:00", -(2**70)),
]

BAD_TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-05:00",
    "1969-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
]


@pytest.fixture
async def seeded(seed: Seeder) -> None:
    await seed.add(seed.trade(at(1)), seed.order(at(1)), seed.decision(at(1)), seed.snapshot(at(1), "1000000"))


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("path", LISTS)
async def test_a_cursor_out_of_range_is_422_naming_the_cursor(client: httpx.AsyncClient, path: str) -> None:
    for cursor in BAD_CURSORS:
        response = await client.get(path, params={"cursor": cursor})
        assert response.status_code == 422, (cursor, response.text)
        (error,) = response.json()["detail"]
        assert error["loc"] == ["query", "cursor"]
        assert "next_cursor" in error["msg"]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("path", RANGED)
@pytest.mark.parametrize("field", ["from_date", "to_date"])
async def test_a_time_outside_the_served_window_is_422_naming_the_field(
    client: httpx.AsyncClient, path: str, field: str
) -> None:
    for moment in BAD_TIMES:
        response = await client.get(path, params={field: moment})
        assert response.status_code == 422, (moment, response.text)
        (error,) = response.json()["detail"]
        assert error["loc"] == ["query", field]
        assert "1970-01-01T00:00:00Z" in error["msg"]
        assert "2200-01-01T00:00:00Z" in error["msg"]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("path", RANGED)
async def test_times_at_the_window_edges_are_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(
        path, params={"from_date": "1970-01-01T00:00:00Z", "to_date": "2199-12-31T23:59:59.999999Z"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.usefixtures("seeded")
async def test_a_cursor_from_a_page_still_walks_on(client: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.add(seed.trade(at(2)))
    first = (await client.get("/api/v1/trades", params={"limit": 1})).json()
    second = await client.get("/api/v1/trades", params={"limit": 1, "cursor": first["next_cursor"]})
    assert second.status_code == 200
    assert [item["trade_id"] for item in second.json()["items"]] == ["t-00001"]


WRITERS = 48


async def _write(client: httpx.AsyncClient, i: int) -> httpx.Response:
    if i % 3 == 0:
        body = {"values": {"risk.max_positions": 1 + i % 5}, "reason": f"writer {i}"}
        return await client.put("/api/v1/bot/config", json=body)
    if i % 3 == 1:
        return await client.post("/api/v1/bot/control", json={"action": ["pause", "resume"][i % 2], "reason": "load"})
    return await client.post("/api/v1/bot/safe-mode/reset", json={"reason": f"writer {i}"})


async def test_many_concurrent_writes_never_answer_500(client: httpx.AsyncClient) -> None:
    """48 writers at once (PUT /bot/config, POST /bot/control, POST /bot/safe-mode/reset) and readers between
    them: on SQLite the writes used to exhaust the pool (a PUT held a read connection while it waited for a
    write connection) and answered 500 after the pool's 30 s timeout."""
    reads = [client.get("/api/v1/bot/config") for _ in range(16)]
    responses = await asyncio.wait_for(asyncio.gather(*(_write(client, i) for i in range(WRITERS)), *reads), 25)
    statuses = Counter(response.status_code for response in responses)
    assert statuses[500] == 0, statuses
    assert set(statuses) <= {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
    assert statuses[200] == len(responses)  # the gate queues them: all get through well within the wait bound
    audit = (await client.get("/api/v1/bot/config")).json()
    assert any(entry["key"] == "risk.max_positions" and entry["value"] is not None for entry in audit["entries"])


SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY  # PostgreSQL takes concurrent writers; only SQLite queues API writes
async def test_a_write_that_cannot_get_its_turn_is_503_with_retry_after(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = app_of(client).state.write_gate
    assert gate is not None
    monkeypatch.setattr(deps, "WRITE_WAIT_SECONDS", 0.05)
    async with gate:  # another write holds the turn for longer than the wait bound
        response = await client.post("/api/v1/bot/control", json={"action": "pause", "reason": "busy test"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"detail": "database busy; retry shortly"}
    after = await client.post("/api/v1/bot/control", json={"action": "pause", "reason": "busy test"})
    assert after.status_code == 200


@SQLITE_ONLY
async def test_sqlite_locked_past_its_busy_timeout_is_503_not_500(client: httpx.AsyncClient, database_url: str) -> None:
    """Another process (the scheduler, a backup) holds SQLite's write lock longer than the busy timeout (10 s):
    the write answers 503 with Retry-After, and the next one, after the lock is gone, succeeds."""
    holder = sqlite3.connect(make_url(database_url).database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        response = await client.post("/api/v1/bot/control", json={"action": "pause", "reason": "locked test"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    after = await client.post("/api/v1/bot/control", json={"action": "pause", "reason": "locked test"})
    assert after.status_code == 200
