"""Property-based run of the OpenAPI schema (schemathesis): generated requests to every operation, with real
rows in the database, never get a 5xx or an answer that breaks the documented schema."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.repositories.bot import BotRepository
from backend.app.db.types import utcnow
from backend.app.main import create_app
from backend.tests.conftest import API_KEY, Seeder, SettingsFactory, at
from src.domain.orders import Side
from tests.fakes.upbit_server import FakeUpbit

EXAMPLES_PER_OPERATION = 25
# Every built-in check runs except "schema-valid data is accepted": some rules cannot be written in OpenAPI
# (a cursor must be one this API issued; cursor and skip exclude each other; from_date < to_date; run-time
# config keys and values follow src/config/runtime.py), and the API answers those with a 422 that names the field.


async def _seed(seed: Seeder, sessions: async_sessionmaker[AsyncSession]) -> None:
    rows = []
    for minute in range(30):
        rows.append(seed.trade(at(minute), symbol="KRW-BTC" if minute % 3 else "KRW-ETH"))
        rows.append(seed.trade(at(minute), side=Side.SELL, realized_pnl=str(minute - 10) if minute % 4 else None))
        rows.append(seed.order(at(minute)))
        rows.append(seed.decision(at(minute), overridden=bool(minute % 2)))
        rows.append(seed.snapshot(at(minute), f"{10_000_000 + minute * 1000}.00"))
    await seed.add(*rows)
    await BotRepository(sessions).write_heartbeat(
        "default", state="running", mode="paper", symbols=["KRW-BTC"], heartbeat_at=utcnow() - timedelta(seconds=5)
    )


def _run_all_operations(schema: schemathesis.schemas.BaseSchema) -> list[str]:
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(
            case=st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
            )
        )
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY}, excluded_checks=[positive_data_acceptance])

        check()
        checked.append(operation.label)
    return checked


async def test_openapi_schema_holds_under_generated_requests(
    make_settings: SettingsFactory, seed: Seeder, db_sessions: async_sessionmaker[AsyncSession], fake_upbit: FakeUpbit
) -> None:
    # Given an app over a database with real rows of every kind, and an exchange whose candles the market view
    # reads in paper and live mode
    await _seed(seed, db_sessions)
    fake_upbit.seed_demo()
    app = create_app(make_settings(UPBIT_BASE_URL=fake_upbit.base_url))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # When schemathesis sends generated requests to every operation (in its own event loop thread)
    checked = await asyncio.to_thread(_run_all_operations, schema)
    # Then every check passed for every operation (a failure raises above), and every operation was exercised
    assert "GET /api/v1/trades" in checked
    assert "POST /api/v1/bot/control" in checked
    assert "PUT /api/v1/bot/config" in checked
    assert "POST /api/v1/backtests" in checked
    assert len(checked) == sum(len(operations) for operations in app.openapi()["paths"].values())
