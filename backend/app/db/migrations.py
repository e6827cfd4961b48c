"""Running Alembic from code, and refusing to work on a database behind the newest migration."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from src.exceptions import DatabaseNotMigratedError, DatabaseUnavailable

SCRIPT_LOCATION = Path(__file__).resolve().parents[2] / "alembic"  # backend/alembic, in a checkout or installed


def alembic_config(database_url: str) -> Config:
    """The migrations' configuration from code (alembic.ini is only for the ``alembic`` command in a checkout)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
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


def _reason(exc: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy appends the statement and a link)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


async def ensure_schema_current(engine: AsyncEngine) -> None:
    """Raise ``DatabaseNotMigratedError`` with the command that fixes it, before any work starts, or
    ``DatabaseUnavailable`` when the database cannot be reached at all."""
    where = _safe_url(engine)
    try:
        current = await current_revision(engine)
    except (OSError, SQLAlchemyError, TimeoutError) as exc:  # refused, unknown host, bad credentials, no file
        raise DatabaseUnavailable(
            f"The database {where} cannot be reached ({_reason(exc)}). Check DATABASE_URL and that the server "
            "is running.",
        ) from exc
    head = head_revision()
    if current == head:
        return
    state = "has no schema yet" if current is None else f"is at migration {current}"
    raise DatabaseNotMigratedError(
        f"The database {where} {state}; the newest migration is {head}. "
        f"Run `make migrate` (or `.venv/bin/alembic upgrade head` with the same DATABASE_URL) and start again.",
        current=current,
        head=head,
    )


def main(argv: list[str] | None = None) -> int:
    """``upbit-migrate``: create or upgrade the database named by DATABASE_URL to the newest migration."""
    import argparse
    import sys

    from src.config.settings import load_settings
    from src.exceptions import ConfigurationError

    argparse.ArgumentParser(
        prog="upbit-migrate",
        description="Create or upgrade the database named by DATABASE_URL (default: data/trading.db here).",
    ).parse_args(argv)
    try:
        url = load_settings().database.url
        upgrade_to_head(url)
    except (ConfigurationError, SQLAlchemyError, OSError) as exc:
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    print(f"database at {make_url(url).render_as_string(hide_password=True)}: migrated to {head_revision()}")
    return 0
