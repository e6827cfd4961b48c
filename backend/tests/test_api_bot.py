"""Bot status from the scheduler's heartbeat, control and run-time config written as data with an audit."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.repositories.bot import BotRepository
from backend.app.db.types import utcnow
from backend.app.models import RiskStateRow, SystemLogRow
from backend.tests.conftest import API_KEY, AppFactory
from src.config.runtime import validate_runtime_value
from src.domain.bot import DesiredState
from src.domain.modes import TradingMode

Sessions = async_sessionmaker[AsyncSession]


async def _heartbeat(sessions: Sessions, age_seconds: float, **fields: object) -> None:
    now = utcnow()
    values = {
        "state": "running",
        "mode": "paper",
        "symbols": ["KRW-BTC", "KRW-ETH"],
        "schedule": "0 * * * *",
        "started_at": now - timedelta(hours=2),
        "heartbeat_at": now - timedelta(seconds=age_seconds),
        "last_run_at": now - timedelta(minutes=20),
        "next_run_at": now + timedelta(minutes=40),
    } | fields
    await BotRepository(sessions).write_heartbeat("default", **values)


async def _audit_rows(sessions: Sessions) -> list[SystemLogRow]:
    async with sessions() as session:
        return list(await session.scalars(select(SystemLogRow).order_by(SystemLogRow.id)))


async def test_status_without_heartbeat_is_unknown_and_stale(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/bot/status")).json()
    assert (body["state"], body["stale"], body["message"]) == ("unknown", True, "scheduler never seen")
    assert body["desired_state"] == "running"


async def test_status_shows_the_heartbeat_of_a_live_scheduler(client: httpx.AsyncClient, db_sessions: Sessions) -> None:
    # Given a scheduler that beat 30 s ago after an error in its last run
    await _heartbeat(db_sessions, 30, last_error="ExchangeUnavailable: timeout", last_error_at=utcnow())
    # When the status is read
    body = (await client.get("/api/v1/bot/status")).json()
    # Then it is its real state, fresh, with schedule and times
    assert (body["state"], body["stale"], body["message"]) == ("running", False, None)
    assert body["symbols"] == ["KRW-BTC", "KRW-ETH"]
    assert body["schedule"] == "0 * * * *"
    assert body["last_run"] is not None
    assert body["next_run"] is not None
    assert body["last_error"] == "ExchangeUnavailable: timeout"
    assert 29 <= body["heartbeat_age_seconds"] < 60


async def test_a_heartbeat_stale_after_seconds_says_seconds_not_zero_minutes(
    make_client: AppFactory, db_sessions: Sessions
) -> None:
    """Given HEARTBEAT_STALE_SECONDS=10 and a scheduler last seen 41 s ago, the status says so in seconds."""
    client = await make_client(headers={"X-API-Key": API_KEY}, HEARTBEAT_STALE_SECONDS="10")
    await _heartbeat(db_sessions, 41)

    body = (await client.get("/api/v1/bot/status")).json()

    assert body["stale"] is True
    assert body["message"] in ("scheduler not seen for 41 seconds", "scheduler not seen for 42 seconds")


async def test_a_heartbeat_hours_old_says_hours_and_minutes(client: httpx.AsyncClient, db_sessions: Sessions) -> None:
    await _heartbeat(db_sessions, 3 * 3600 + 5 * 60 + 10)
    body = (await client.get("/api/v1/bot/status")).json()
    assert body["message"] == "scheduler not seen for 3 hours 5 minutes"


async def test_old_heartbeat_is_stale_with_minutes_since_seen(client: httpx.AsyncClient, db_sessions: Sessions) -> None:
    await _heartbeat(db_sessions, 601 + 25 * 60)
    body = (await client.get("/api/v1/bot/status")).json()
    assert body["stale"] is True
    assert body["message"] == "scheduler not seen for 35 minutes"
    assert body["state"] == "running"


async def test_safe_mode_comes_from_risk_state_of_the_trading_mode(
    client: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    # Given a heartbeat and a safe mode entered by the daily loss breaker in paper mode (not in live)
    await _heartbeat(db_sessions, 5)
    async with db_sessions.begin() as session:
        session.add(
            RiskStateRow(
                mode=TradingMode.PAPER, safe_mode=True, safe_mode_reason="daily loss 10.4%", safe_mode_since=utcnow()
            )
        )
        session.add(RiskStateRow(mode=TradingMode.LIVE, safe_mode=False))
    body = (await client.get("/api/v1/bot/status")).json()
    assert (body["safe_mode"], body["safe_mode_reason"]) == (True, "daily loss 10.4%")
    assert body["safe_mode_since"] is not None


@pytest.mark.parametrize(
    ("action", "desired"),
    [("stop", DesiredState.STOPPED), ("pause", DesiredState.PAUSED), ("resume", DesiredState.RUNNING),
     ("start", DesiredState.RUNNING)],
)  # fmt: skip
async def test_control_writes_the_desired_state_and_an_audit_line(
    client: httpx.AsyncClient, db_sessions: Sessions, action: str, desired: DesiredState
) -> None:
    # When an operator sends an action with a reason
    response = await client.post("/api/v1/bot/control", json={"action": action, "reason": "maintenance window"})
    # Then the desired state the scheduler reads is written
    assert response.status_code == 200
    assert response.json()["desired_state"] == desired.value
    assert response.json()["requested_by"] == "api-key"
    assert await BotRepository(db_sessions).desired_state() is desired
    # And the status reads it back
    assert (await client.get("/api/v1/bot/status")).json()["desired_state"] == desired.value
    # And the audit line says who and why
    [audit] = await _audit_rows(db_sessions)
    assert audit.source == "control"
    assert audit.message == f"bot control: {action} (desired state {desired}) by api-key: maintenance window"
    assert audit.context["by"] == "api-key"


async def test_safe_mode_reset_is_requested_for_the_scheduler_and_audited(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    # Without credentials it is refused and nothing is written
    refused = await anonymous.post("/api/v1/bot/safe-mode/reset", json={"reason": "checked the market"})
    assert refused.status_code == 401
    assert await BotRepository(db_sessions).safe_mode_reset_request() is None
    # When an operator asks for it with a reason
    response = await client.post("/api/v1/bot/safe-mode/reset", json={"reason": "checked the market"})
    # Then the request the scheduler reads is stored with who, why and when, and audited
    assert response.status_code == 200
    assert response.json()["requested_by"] == "api-key"
    request = await BotRepository(db_sessions).safe_mode_reset_request()
    assert request is not None
    by, reason, requested_at = request
    assert (by, reason) == ("api-key", "checked the market")
    assert abs(utcnow() - requested_at) < timedelta(minutes=1)
    [audit] = await _audit_rows(db_sessions)
    assert audit.message == "safe mode reset requested by api-key: checked the market"


@pytest.mark.parametrize(
    "body",
    [{"action": "explode", "reason": "because"}, {"action": "stop"}, {"action": "stop", "reason": "x"},
     {"action": "stop", "reason": "why not", "extra": 1}, {"action": "stop", "reason": "nul\u0000byte"}],
)  # fmt: skip
async def test_invalid_control_is_422_and_changes_nothing(
    client: httpx.AsyncClient, db_sessions: Sessions, body: dict[str, object]
) -> None:
    response = await client.post("/api/v1/bot/control", json=body)
    assert response.status_code == 422
    assert await _audit_rows(db_sessions) == []
    assert await BotRepository(db_sessions).desired_state() is DesiredState.RUNNING


async def test_config_lists_every_runtime_key_with_its_environment_default(client: httpx.AsyncClient) -> None:
    entries = {entry["key"]: entry for entry in (await client.get("/api/v1/bot/config")).json()["entries"]}
    assert entries["risk.max_positions"]["default"] == 3
    assert entries["risk.max_positions"]["value"] is None
    assert entries["risk.max_positions"]["requested"] == 3
    assert entries["risk.cash_reserve_pct"]["default"] == "10"
    assert (entries["strategy.name"]["default"], entries["strategy.params"]["default"]) == ("rule_breakout", {})
    assert {"risk.stop_loss_pct", "risk.allow_add_to_position", "risk.min_add_krw"}.isdisjoint(entries)
    assert entries["trading.symbols"]["requested"] == ["KRW-BTC"]
    assert entries["ai.enabled"]["rule"] == "true or false"
    # And without a scheduler heartbeat nothing is known to be applied
    assert entries["trading.symbols"]["applied"] is None
    assert entries["trading.symbols"]["status"] == "unknown"


async def test_config_update_is_validated_stored_readable_by_the_scheduler_and_audited(
    client: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    # Given a stored value, changed once before
    await client.put("/api/v1/bot/config", json={"values": {"risk.max_positions": 4}, "reason": "first"})
    # When several keys are changed
    response = await client.put(
        "/api/v1/bot/config",
        json={
            "values": {
                "risk.max_positions": 5,
                "risk.cash_reserve_pct": 12.5,
                "trading.symbols": ["KRW-BTC", "KRW-XRP"],
            },
            "reason": "tighter risk",
        },
    )
    # Then the answer shows the requested values
    assert response.status_code == 200
    entries = {entry["key"]: entry for entry in response.json()["entries"]}
    assert entries["risk.max_positions"]["requested"] == 5
    assert entries["risk.cash_reserve_pct"]["value"] == "12.5"
    assert entries["risk.max_positions"]["updated_by"] == "api-key"
    # And the scheduler reads them with the same rules
    repository = BotRepository(db_sessions)
    assert validate_runtime_value("risk.cash_reserve_pct", await repository.get_config("risk.cash_reserve_pct")) == (
        validate_runtime_value("risk.cash_reserve_pct", "12.5")
    )
    assert await repository.get_config("trading.symbols") == ["KRW-BTC", "KRW-XRP"]
    # And each change is audited with old and new value, who and why
    messages = [row.message for row in await _audit_rows(db_sessions)]
    assert "bot config risk.max_positions: 4 -> 5 by api-key: tighter risk" in messages
    assert "bot config risk.cash_reserve_pct: None -> '12.5' by api-key: tighter risk" in messages


@pytest.mark.parametrize(
    ("values", "bad_key"),
    [
        ({"risk.max_positions": 51}, "risk.max_positions"),
        ({"risk.max_positions": True}, "risk.max_positions"),
        ({"risk.cash_reserve_pct": 100}, "risk.cash_reserve_pct"),
        ({"risk.cash_reserve_pct": "NaN"}, "risk.cash_reserve_pct"),
        ({"strategy.params": [1]}, "strategy.params"),
        ({"strategy.name": "Rule Breakout"}, "strategy.name"),
        ({"ai.min_confidence": 101}, "ai.min_confidence"),
        ({"ai.enabled": "yes"}, "ai.enabled"),
        ({"trading.symbols": ["BTC-ETH"]}, "trading.symbols"),
        ({"trading.symbols": []}, "trading.symbols"),
        ({"trading.symbols": ["KRW-\u0392\u03a4C"]}, "trading.symbols"),  # Greek capitals, like KRW-BTC to the eye
        ({"trading.symbols": ["KRW-" + "A" * 200]}, "trading.symbols"),
        ({"risk.max_trades_per_day": 10_001}, "risk.max_trades_per_day"),
        ({"risk.max_positions": 5, "no.such.key": 1}, "no.such.key"),
    ],
)
async def test_invalid_config_is_422_per_key_and_nothing_is_written(
    client: httpx.AsyncClient, db_sessions: Sessions, values: dict[str, object], bad_key: str
) -> None:
    response = await client.put("/api/v1/bot/config", json={"values": values, "reason": "try it"})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "values", bad_key]]
    assert await BotRepository(db_sessions).all_config() == {}


# --- the strategy and its parameters: checked against the strategy's declared space ---------------------------
@pytest.mark.parametrize(
    ("values", "bad_keys", "message"),
    [
        ({"strategy.name": "nope"}, ["strategy.name"], "unknown strategy 'nope'; available: rule_breakout"),
        ({"strategy.params": {"kk": 1}}, ["strategy.params"], "strategy rule_breakout has no parameter kk"),
        (
            {"strategy.name": "volatility_breakout", "strategy.params": {"stop_loss_pct": 80}},
            ["strategy.name", "strategy.params"],
            "strategy volatility_breakout: parameter stop_loss_pct must be in 0..50, got 80",
        ),
        (
            {"strategy.params": {"max_hold_hours": "two days"}},
            ["strategy.params"],
            "parameter max_hold_hours must be a number",
        ),
        (
            {"risk.stop_loss_pct": 3},
            ["risk.stop_loss_pct"],
            "risk.stop_loss_pct was removed: exits belong to the strategy; set stop_loss_pct in strategy.params",
        ),
        (
            {"risk.allow_add_to_position": True},
            ["risk.allow_add_to_position"],
            "risk.allow_add_to_position was removed: the strategy buys only when flat (one position per coin)",
        ),
        (
            {"risk.min_add_krw": 50000},
            ["risk.min_add_krw"],
            "risk.min_add_krw was removed: the strategy buys only when flat (one position per coin)",
        ),
    ],
)
async def test_a_strategy_the_scheduler_could_not_build_is_422_with_the_reason_and_nothing_is_written(
    client: httpx.AsyncClient, db_sessions: Sessions, values: dict[str, object], bad_keys: list[str], message: str
) -> None:
    # Given no stored request (the environment trades rule_breakout)
    # When the operator asks for an unknown strategy, an unknown parameter, a value out of range, or a removed key
    response = await client.put("/api/v1/bot/config", json={"values": values, "reason": "try it"})
    # Then the answer is 422 naming the key(s) and the reason, and nothing is stored
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [error["loc"] for error in detail] == [["body", "values", key] for key in bad_keys]
    assert all(message in error["msg"] for error in detail), detail
    assert await BotRepository(db_sessions).all_config() == {}


async def test_parameters_are_checked_against_the_stored_strategy(
    client: httpx.AsyncClient, db_sessions: Sessions
) -> None:
    # Given volatility_breakout requested earlier
    first = await client.put(
        "/api/v1/bot/config", json={"values": {"strategy.name": "volatility_breakout"}, "reason": "switch"}
    )
    assert first.status_code == 200, first.text
    # When its own parameter k is requested alone, Then it is accepted (checked with the stored name)
    ok = await client.put(
        "/api/v1/bot/config",
        json={"values": {"strategy.params": {"k": 0.6, "max_hold_hours": 48}}, "reason": "tune"},
    )
    assert ok.status_code == 200, ok.text
    entries = {entry["key"]: entry for entry in ok.json()["entries"]}
    assert entries["strategy.params"]["value"] == {"k": 0.6, "max_hold_hours": 48}
    # And going back to rule_breakout while k is stored is refused: rule_breakout has no k
    back = await client.put("/api/v1/bot/config", json={"values": {"strategy.name": "rule_breakout"}, "reason": "back"})
    assert back.status_code == 422
    assert "strategy rule_breakout has no parameter k" in back.json()["detail"][0]["msg"]
    assert await BotRepository(db_sessions).get_config("strategy.name") == "volatility_breakout"
