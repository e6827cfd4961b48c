"""Research runs through the API: stored runs listed (keyset paging) and read; apply writes the chosen strategy
and parameters as run-time settings only with ``confirm: true``, audited, and as the scheduler will take them.
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.core.runtime_settings import strategy_problems
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.repositories.research_runs import ResearchRunRepository
from backend.app.models import BotConfigRow, SystemLogRow
from backend.tests.conftest import API_KEY, AppFactory, SettingsFactory
from src.config.runtime_state import STORED_KEYS, AppliedSettings, apply_requests
from src.domain.research_runs import ResearchKind, ResearchStatus

pytestmark = pytest.mark.asyncio

Sessions = async_sessionmaker[AsyncSession]
WRITER = {"X-API-Key": API_KEY}
CHOSEN = {"strategy": "volatility_breakout", "params": {"k": 0.65, "trend_filter": True}}


async def _store(sessions: Sessions, kind: ResearchKind = ResearchKind.MONTE_CARLO, **fields: Any) -> int:
    values: dict[str, Any] = {
        "result": {"percentiles": {"total_return": {"5": -3.0, "50": 4.0, "95": 11.0}}, "p_value": 0.02},
        "summary": {"p_value": 0.02},
        "chosen": CHOSEN,
        **fields,
    }
    return await ResearchRunRepository(sessions).create(
        kind, {"strategy": "volatility_breakout"}, created_by="test", **values
    )


async def _config(sessions: Sessions) -> dict[str, Any]:
    async with sessions() as session:
        return {row.key: row.value for row in await session.scalars(select(BotConfigRow))}


async def _audit(sessions: Sessions) -> list[SystemLogRow]:
    async with sessions() as session:
        return list(await session.scalars(select(SystemLogRow).order_by(SystemLogRow.id)))


async def test_runs_are_listed_newest_first_with_keyset_paging_and_read_with_their_result(
    make_client: AppFactory, db_sessions: Sessions
) -> None:
    # Given five stored runs of two kinds
    ids = [await _store(db_sessions, ResearchKind.AI_VALUE if i % 2 else ResearchKind.MONTE_CARLO) for i in range(5)]
    client = await make_client(headers=WRITER)
    # When the list is read two at a time
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        page = await client.get("/api/v1/research/runs", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        assert all("result" not in item for item in body["items"])  # a list carries no full results
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    # Then every run comes once, newest first
    assert seen == [str(i) for i in reversed(ids)]
    # And a kind filters
    ai_only = (await client.get("/api/v1/research/runs", params={"kind": "ai_value"})).json()["items"]
    assert {item["kind"] for item in ai_only} == {"ai_value"}
    assert len(ai_only) == 2
    # And one run reads with its full result and what it chose
    run = (await client.get(f"/api/v1/research/runs/{ids[0]}")).json()
    assert run["result"]["p_value"] == 0.02
    assert run["chosen"] == CHOSEN
    assert run["status"] == "done"
    assert run["applied_at"] is None
    # And unknown ids, bad cursors and kinds are 404 / 422
    assert (await client.get("/api/v1/research/runs/999999")).status_code == 404
    assert (await client.get("/api/v1/research/runs/abc")).status_code == 404
    assert (await client.get("/api/v1/research/runs", params={"cursor": "nope"})).status_code == 422
    assert (await client.get("/api/v1/research/runs", params={"kind": "bogus"})).status_code == 422


async def test_reading_runs_needs_credentials(make_client: AppFactory) -> None:
    anonymous = await make_client()
    assert (await anonymous.get("/api/v1/research/runs")).status_code == 401
    assert (await anonymous.post("/api/v1/research/runs/1/apply", json={"confirm": True})).status_code == 401


@pytest.mark.parametrize("body", [{}, {"confirm": False}, {"confirm": "yes"}, {"reason": "go"}])
async def test_apply_without_confirmation_is_422_and_writes_nothing(
    make_client: AppFactory, db_sessions: Sessions, body: dict[str, Any]
) -> None:
    run_id = await _store(db_sessions)
    client = await make_client(headers=WRITER)
    answer = await client.post(f"/api/v1/research/runs/{run_id}/apply", json=body)
    assert answer.status_code == 422, answer.text
    assert "confirm" in answer.text
    assert await _config(db_sessions) == {}
    assert not [row for row in await _audit(db_sessions) if "bot config" in row.message]


async def test_apply_with_confirmation_writes_the_run_time_settings_audited_as_the_scheduler_takes_them(
    make_client: AppFactory, db_sessions: Sessions, make_settings: SettingsFactory
) -> None:
    # Given a stored run that chose the volatility breakout with k 0.65 and its trend filter
    run_id = await _store(db_sessions)
    client = await make_client(headers=WRITER)
    # When it is applied with confirmation
    answer = await client.post(
        f"/api/v1/research/runs/{run_id}/apply", json={"confirm": True, "reason": "walk-forward winner"}
    )
    # Then the run-time settings strategy.name and strategy.params hold the run's choice
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["values"] == {"strategy.name": "volatility_breakout", "strategy.params": CHOSEN["params"]}
    stored = await _config(db_sessions)
    assert stored["strategy.name"] == "volatility_breakout"
    assert stored["strategy.params"] == CHOSEN["params"]
    # And each key has its audit line (who, previous and new value, the reason naming the run)
    audit = [row for row in await _audit(db_sessions) if row.message.startswith("bot config strategy.")]
    assert len(audit) == 2
    assert all(row.source == "control" and row.context["research_run"] == run_id for row in audit)
    assert all(row.context["reason"] == "walk-forward winner" and row.context["by"] for row in audit)
    # And the run says when and by whom it was applied; GET /bot/config shows the request
    run = (await client.get(f"/api/v1/research/runs/{run_id}")).json()
    assert run["applied_at"] is not None
    assert run["applied_by"] == body["applied_by"]
    config = {e["key"]: e for e in (await client.get("/api/v1/bot/config")).json()["entries"]}
    assert config["strategy.name"]["requested"] == "volatility_breakout"
    # And the scheduler's own rule takes them at its next refresh (nothing rejected)
    settings = make_settings()
    current = AppliedSettings.from_environment(settings, datetime.now(UTC))
    stored_requests = await BotRepository(db_sessions).get_configs(STORED_KEYS)
    applied = apply_requests(current, stored_requests, datetime.now(UTC), strategy_problems)
    assert applied.rejected == {}
    assert applied.settings.strategy.name == "volatility_breakout"
    assert applied.settings.strategy.params["k"] == 0.65


async def test_a_choice_the_scheduler_would_refuse_is_422_and_nothing_is_written(
    make_client: AppFactory, db_sessions: Sessions
) -> None:
    outside = await _store(db_sessions, chosen={"strategy": "volatility_breakout", "params": {"k": 99}})
    unknown = await _store(db_sessions, chosen={"strategy": "no_such_strategy", "params": {}})
    nothing = await _store(db_sessions, ResearchKind.AI_VALUE, chosen=None)
    failed = await _store(db_sessions, status=ResearchStatus.FAILED, error="boom")
    client = await make_client(headers=WRITER)
    for run_id in (outside, unknown, nothing, failed):
        answer = await client.post(f"/api/v1/research/runs/{run_id}/apply", json={"confirm": True})
        assert answer.status_code == 422, (run_id, answer.text)
    assert (await client.post("/api/v1/research/runs/424242/apply", json={"confirm": True})).status_code == 404
    assert await _config(db_sessions) == {}


async def test_the_api_serves_a_run_the_command_line_stored(
    make_client: AppFactory, database_url: str, make_settings: SettingsFactory
) -> None:
    # Given a run stored through the command line's store (what backtest.py monte-carlo uses)
    import asyncio

    from backend.app.services.research_runs import DatabaseRunStore
    from src.research.cli_support import ChosenParams

    store = DatabaseRunStore(database_url, make_settings())
    run_id = await asyncio.to_thread(store.start, ResearchKind.MONTE_CARLO, {"strategy": "rule_breakout"})
    await asyncio.to_thread(
        store.finish,
        run_id,
        {"p_value": 0.5},
        {"p_value": 0.5},
        ChosenParams("rule_breakout", {"volume_multiplier": 1.4}),
    )
    failed = await asyncio.to_thread(store.start, ResearchKind.AI_VALUE, {"symbols": ["KRW-BTC"]})
    await asyncio.to_thread(store.fail, failed, "no candles")
    client = await make_client(headers=WRITER)
    # Then the API reads it
    run = (await client.get(f"/api/v1/research/runs/{run_id}")).json()
    assert run["kind"] == "monte_carlo"
    assert run["created_by"].startswith("cli:")
    assert run["chosen"] == {"strategy": "rule_breakout", "params": {"volume_multiplier": 1.4}}
    assert run["status"] == "done"
    gone = (await client.get(f"/api/v1/research/runs/{failed}")).json()
    assert gone["status"] == "failed"
    assert gone["error"] == "no candles"
    # And the command line's apply writes the same audited settings as the API's
    values = await asyncio.to_thread(store.apply, run_id, by="cli:tester", reason="research run")
    assert values["strategy.params"] == {"volume_multiplier": 1.4}
    assert (await client.get(f"/api/v1/research/runs/{run_id}")).json()["applied_by"] == "cli:tester"
