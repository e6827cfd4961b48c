"""Running Alembic from code, and refusing to work on a database behind the newest migration."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from src.exceptions import DatabaseNotMigratedError

PROJECT_ROOT = Path(__file__).resolve().parents[3]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    config.attributes["skip_logging_config"] = True
    return config


def upgrade_to_head(database_url: str) -> None:
    """Blocking; from async code call it through ``asyncio.to_thread``."""
    command.upgrade(alembic_config(database_url), "head")


def downgrade_to_base(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_current_head()
    if head is None:
        raise RuntimeError("no Alembic migrations found")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


def _safe_url(engine: AsyncEngine) -> str:
    return make_url(str(engine.url)).render_as_string(hide_password=True)


async def ensure_schema_current(engine: AsyncEngine) -> None:
    """Raise ``DatabaseNotMigratedError`` with the command that fixes it, before any work starts."""
    current = await current_revision(engine)
    head = head_revision()
    if current == head:
        return
    where = _safe_url(engine)
    state = "has no schema yet" if current is None else f"is at migration {current}"
    raise DatabaseNotMigratedError(
        f"The database {where} {state}; the newest migration is {head}. "
        f"Run `make migrate` (or `.venv/bin/alembic upgrade head` with the same DATABASE_URL) and start again.",
        current=current,
        head=head,
    )
