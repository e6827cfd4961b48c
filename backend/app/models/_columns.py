"""Small column helpers shared by the models."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import Enum

from src.utils.logger import redactor


def enum_column_type(enum_cls: type[StrEnum], name: str, length: int = 20) -> Enum:
    """A VARCHAR with a CHECK constraint on PostgreSQL and SQLite alike (no native enum types to migrate).
    ``name`` names the constraint: ``ck_<table>_<name>``."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def without_secrets(_row: Any, _key: str, value: Any) -> Any:
    """An ``@validates`` body for columns that keep error text: a secret in an exception never reaches a table
    the API and the dashboards show."""
    return redactor.scrub(value)
