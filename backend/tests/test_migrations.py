"""Alembic is the only way the schema is made: up and down on both databases, and a clear stop when behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect

import backend.app.models  # noqa: F401
from backend.app.db.base import Base
from backend.app.db.migrations import (
    downgrade_to_base,
    ensure_schema_current,
    head_revision,
    upgrade_to_head,
)
from backend.app.db.session import create_engine
from src.exceptions import DatabaseNotMigratedError


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names


def _fresh_url(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_upgrade_head_then_downgrade_base(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    # Given a migrated database (the PostgreSQL one is the session's, already at head)
    url = _fresh_url(request, tmp_path, backend)
    upgrade_to_head(url)
    assert set(Base.metadata.tables) <= asyncio.run(_tables(url))
    # When migrated down to base
    downgrade_to_base(url)
    # Then no table of ours is left, and migrating up again restores them
    assert asyncio.run(_tables(url)) & set(Base.metadata.tables) == set()
    upgrade_to_head(url)
    assert set(Base.metadata.tables) <= asyncio.run(_tables(url))


async def test_a_database_behind_head_is_refused_with_the_fix(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(DatabaseNotMigratedError) as caught:
        await ensure_schema_current(engine)
    await engine.dispose()
    assert "has no schema yet" in caught.value.message
    assert head_revision() in caught.value.message
    assert "make migrate" in caught.value.message


async def test_a_current_database_passes(db_engine) -> None:  # type: ignore[no-untyped-def]
    await ensure_schema_current(db_engine)


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    """Autogenerate against a migrated database finds nothing to do: the models match the migrations."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = f"sqlite+aiosqlite:///{tmp_path / 'cmp.db'}"
    upgrade_to_head(url)

    async def diff() -> list:
        engine = create_engine(url)
        async with engine.connect() as connection:
            result = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        await engine.dispose()
        return result

    assert asyncio.run(diff()) == []
